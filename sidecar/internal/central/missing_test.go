package central

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestReportMissing(t *testing.T) {
	keys := []wire.MissingKey{{CacheKey: key64, CrateName: "syn"}}
	tests := []struct {
		name     string
		endpoint string
		status   int
		answer   string
		wantPath string
		want     wire.MissingKeysResult
		wantErr  error
	}{
		{name: "dropped", status: 200, answer: `{"dropped":1,"present":0,"unknown":0,"unconfirmed":0}`, wantPath: "/v1/missing-keys", want: wire.MissingKeysResult{Dropped: 1}},
		{name: "plan URL endpoint keeps its base", endpoint: "/base/v1/prefetch-plan", status: 200, answer: `{"present":1}`,
			wantPath: "/base/v1/missing-keys", want: wire.MissingKeysResult{Present: 1}},
		{name: "older central", status: 404, answer: `{"error":"not found"}`, wantPath: "/v1/missing-keys", wantErr: ErrStatus},
		{name: "answer not JSON", status: 200, answer: `<html>`, wantPath: "/v1/missing-keys", wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			})
			c := newClient(t, Config{Endpoint: srv.URL + tt.endpoint, Token: "tok", TimelineTimeout: time.Second})
			out, err := c.ReportMissing(context.Background(), keys)
			if !matches(err, tt.wantErr) {
				t.Fatalf("ReportMissing error = %v, want %v", err, tt.wantErr)
			}
			if out != tt.want {
				t.Errorf("result = %+v, want %+v", out, tt.want)
			}
			s := <-got
			var body wire.MissingKeys
			if err := json.Unmarshal(s.body, &body); err != nil || len(body.Keys) != 1 || body.Keys[0] != keys[0] {
				t.Errorf("body %s: %v", s.body, err)
			}
			if s.path != tt.wantPath || s.auth != "Bearer tok" || s.ctype != "application/json" {
				t.Errorf("request %+v", s)
			}
		})
	}
}
