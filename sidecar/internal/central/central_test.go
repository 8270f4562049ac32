package central

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPlanURL(t *testing.T) {
	tests := []struct{ in, plan, timeline string }{
		{"http://c:8080", "http://c:8080/v2/prefetch-plan", "http://c:8080/v1/build-timelines"},
		{"http://c:8080/", "http://c:8080/v2/prefetch-plan", "http://c:8080/v1/build-timelines"},
		{" http://c/base// ", "http://c/base/v2/prefetch-plan", "http://c/base/v1/build-timelines"},
		{"http://c/v1/prefetch-plan", "http://c/v1/prefetch-plan", "http://c/v1/build-timelines"},
		{"http://c/p/v2/prefetch-plan/", "http://c/p/v2/prefetch-plan", "http://c/p/v1/build-timelines"},
		{"http://c/v3/prefetch-plan", "http://c/v3/prefetch-plan/v2/prefetch-plan", "http://c/v3/prefetch-plan/v1/build-timelines"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := PlanURL(tt.in); got != tt.plan {
				t.Errorf("PlanURL = %q, want %q", got, tt.plan)
			}
			if got := TimelineURL(tt.in); got != tt.timeline {
				t.Errorf("TimelineURL = %q, want %q", got, tt.timeline)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
	}{
		{"empty", ""},
		{"blank", "  "},
		{"no scheme", "central:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := New(Config{Endpoint: tt.endpoint}, nil); err == nil {
				c.Close()
				t.Errorf("New(%q) succeeded, want an error", tt.endpoint)
			}
		})
	}
}

type seen struct {
	path, auth, ctype, encoding string
	body                        []byte
}

func newServer(t *testing.T, handler func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, chan seen) {
	t.Helper()
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- seen{path: r.URL.Path, auth: r.Header.Get("Authorization"), ctype: r.Header.Get("Content-Type"), encoding: r.Header.Get("Content-Encoding"), body: b}:
		default:
		}
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const key64 = "acdc9e416dd3000f77b9711b73251f76805354b21f5623c0ab85ff5c5a82a320"

func TestPlan(t *testing.T) {
	execute := `{"plan_id":"plan-1","planner":"central","disposition":"execute","candidates":[{"cache_key":"` + key64 + `","crate_name":"syn","source":"shard","demand_index":0}]}`
	tests := []struct {
		name     string
		token    string
		status   int
		body     string
		delay    time.Duration
		maxBytes int64
		wantErr  error
		wantAuth string
		wantDisp wire.Disposition
	}{
		{name: "execute with token", token: " s3cret ", status: 200, body: execute, wantAuth: "Bearer s3cret", wantDisp: wire.Execute},
		{name: "use_fallback without token", status: 200, body: `{"disposition":"use_fallback","candidates":[]}`, wantDisp: wire.UseFallback},
		{name: "server error", status: 500, body: `{"error":"boom"}`, wantErr: ErrStatus},
		{name: "unauthorized", token: "x", status: 401, body: `{"error":"invalid bearer token"}`, wantAuth: "Bearer x", wantErr: ErrStatus},
		{name: "null candidates rejected", status: 200, body: `{"disposition":"execute","candidates":null}`, wantErr: wire.ErrPlanRejected},
		{name: "wrong disposition case rejected", status: 200, body: `{"disposition":"Execute"}`, wantErr: wire.ErrPlanRejected},
		{name: "not JSON", status: 200, body: `<html>`, wantErr: wire.ErrPlanRejected},
		{name: "too large", status: 200, body: execute, maxBytes: 16, wantErr: ErrTooLarge},
		{name: "slow", status: 200, body: execute, delay: 500 * time.Millisecond, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.delay > 0 {
					select {
					case <-time.After(tt.delay):
					case <-r.Context().Done():
						return
					}
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			c := newClient(t, Config{Endpoint: srv.URL, Token: tt.token, PlanTimeout: 100 * time.Millisecond, MaxResponseBytes: tt.maxBytes})
			ns := "ci"
			intent := &wire.BuildIntent{CrateNames: []string{"syn"}, Namespace: &ns, Target: "x86_64-unknown-linux-gnu",
				Runner: &wire.RunnerContext{Repository: "acme/app"}}
			plan, err := c.Plan(context.Background(), intent)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Plan error = %v, want %v", err, tt.wantErr)
			}
			req := <-got
			if req.path != "/v2/prefetch-plan" || req.ctype != "application/json" || req.auth != tt.wantAuth {
				t.Errorf("request path %q, content type %q, auth %q; want /v2/prefetch-plan, application/json, %q", req.path, req.ctype, req.auth, tt.wantAuth)
			}
			var sent map[string]any
			if err := json.Unmarshal(req.body, &sent); err != nil {
				t.Fatal(err)
			}
			if sent["target"] != "x86_64-unknown-linux-gnu" || sent["runner"] == nil || sent["namespace"] != "ci" {
				t.Errorf("sent intent %s lacks the additive fields", req.body)
			}
			if err != nil {
				return
			}
			if plan.Disposition != tt.wantDisp || plan.Candidates == nil {
				t.Errorf("plan = %+v, want disposition %s and non-nil candidates", plan, tt.wantDisp)
			}
		})
	}
}

func TestPlanStatusErrorCarriesMessage(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		io.WriteString(w, `{"error":"not ready"}`)
	})
	c := newClient(t, Config{Endpoint: srv.URL})
	_, err := c.Plan(context.Background(), &wire.BuildIntent{})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 503 || se.Message != "not ready" {
		t.Errorf("error = %v, want StatusError 503 \"not ready\"", err)
	}
}

func TestPostTimeline(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		answer  string
		want    string
		wantErr error
	}{
		{name: "inserted", status: 200, answer: `{"stored":"inserted"}`, want: "inserted"},
		{name: "not storing", status: 503, answer: `{"error":"this service is not currently storing build timelines"}`, wantErr: ErrStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			})
			c := newClient(t, Config{Endpoint: srv.URL + "/base/v1/prefetch-plan", Token: "tok"})
			tl := &wire.BuildTimeline{Schema: 2, ClientRecordID: "r-1", SessionID: "s", Units: []wire.TimelineUnit{{CacheKey: key64, CrateName: "syn"}}}
			out, err := c.PostTimeline(context.Background(), tl)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("PostTimeline error = %v, want %v", err, tt.wantErr)
			}
			if out.Stored != tt.want {
				t.Errorf("stored = %q, want %q", out.Stored, tt.want)
			}
			req := <-got
			if req.path != "/base/v1/build-timelines" || req.encoding != "zstd" || req.ctype != "application/json" || req.auth != "Bearer tok" {
				t.Errorf("request %q encoding %q type %q auth %q", req.path, req.encoding, req.ctype, req.auth)
			}
			dec, err := zstd.NewReader(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			raw, err := dec.DecodeAll(req.body, nil)
			if err != nil {
				t.Fatalf("body is not zstd: %v", err)
			}
			var back wire.BuildTimeline
			if err := json.Unmarshal(raw, &back); err != nil || back.ClientRecordID != "r-1" || len(back.Units) != 1 {
				t.Errorf("decoded timeline = %+v, %v", back, err)
			}
		})
	}
}

func TestPlanHonoursCallerContext(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	c := newClient(t, Config{Endpoint: srv.URL, PlanTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Plan(ctx, &wire.BuildIntent{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Plan returned after %v, want about the caller's 50ms", el)
	}
	if !strings.Contains(err.Error(), "request plan") {
		t.Errorf("error %q lacks its context", err)
	}
}

func TestRelayTimeline(t *testing.T) {
	body := []byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3} // opaque: relayed as is
	tests := []struct {
		name   string
		status int
		answer string
	}{
		{name: "stored", status: 200, answer: `{"stored":"replaced"}`},
		{name: "central refuses", status: 400, answer: `{"error":"body is not zstd"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			})
			c := newClient(t, Config{Endpoint: srv.URL, Token: "tok"})
			status, answer, err := c.RelayTimeline(context.Background(), body)
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || string(answer) != tt.answer {
				t.Errorf("relay = %d %s, want %d %s", status, answer, tt.status, tt.answer)
			}
			req := <-got
			if req.path != "/v1/build-timelines" || req.encoding != "zstd" || req.auth != "Bearer tok" || string(req.body) != string(body) {
				t.Errorf("central saw %q encoding %q auth %q body %x", req.path, req.encoding, req.auth, req.body)
			}
		})
	}
	t.Run("central unreachable", func(t *testing.T) {
		srv, _ := newServer(t, func(http.ResponseWriter, *http.Request) {})
		url := srv.URL
		srv.Close()
		c := newClient(t, Config{Endpoint: url})
		if _, _, err := c.RelayTimeline(context.Background(), body); err == nil {
			t.Error("relay to a closed server succeeded")
		}
	})
}

func TestPostManifest(t *testing.T) {
	ns := "ci/linux"
	m := &wire.BuildManifest{Version: 3, Created: "2026-01-01T00:00:00Z", ManifestKey: "x86_64-unknown-linux-gnu",
		Entries:   []wire.ManifestEntry{{CacheKey: key64, CrateName: "syn", CompileTimeMs: 900, ArtifactSize: 4096}},
		Namespace: &ns, Target: "x86_64-unknown-linux-gnu", Profile: "release", Runner: &wire.RunnerContext{Repository: "acme/app"}}
	tests := []struct {
		name     string
		endpoint string // appended to the server's URL
		status   int
		answer   string
		delay    time.Duration
		wantPath string
		want     wire.IngestResult
		wantErr  error
		wantMsg  string
	}{
		{name: "stored", status: 200, answer: `{"stored":1,"new":1}`, wantPath: "/v1/manifests", want: wire.IngestResult{Stored: 1, New: 1}},
		{name: "plan URL endpoint keeps its base", endpoint: "/base/v2/prefetch-plan/", status: 200, answer: `{"stored":1,"new":0}`,
			wantPath: "/base/v1/manifests", want: wire.IngestResult{Stored: 1}},
		{name: "rejected", status: 400, answer: `{"error":"manifest rejected: 1 invalid entries"}`, wantPath: "/v1/manifests",
			wantErr: ErrStatus, wantMsg: "manifest rejected: 1 invalid entries"},
		{name: "not ready", status: 503, answer: `{"error":"this replica is not storing manifests"}`, wantPath: "/v1/manifests", wantErr: ErrStatus},
		{name: "answer not JSON", status: 200, answer: `<html>`, wantPath: "/v1/manifests", wantErr: errAny},
		{name: "slow", status: 200, answer: `{}`, delay: time.Second, wantPath: "/v1/manifests", wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.delay > 0 {
					select {
					case <-time.After(tt.delay):
					case <-r.Context().Done():
						return
					}
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			})
			c := newClient(t, Config{Endpoint: srv.URL + tt.endpoint, Token: "tok", TimelineTimeout: 100 * time.Millisecond})
			out, err := c.PostManifest(context.Background(), m)
			if !matches(err, tt.wantErr) {
				t.Fatalf("PostManifest error = %v, want %v", err, tt.wantErr)
			}
			var se *StatusError
			if tt.wantMsg != "" && (!errors.As(err, &se) || se.Message != tt.wantMsg) {
				t.Errorf("error = %v, want message %q", err, tt.wantMsg)
			}
			if out != tt.want {
				t.Errorf("result = %+v, want %+v", out, tt.want)
			}
			req := <-got
			if req.path != tt.wantPath || req.ctype != "application/json" || req.encoding != "" || req.auth != "Bearer tok" {
				t.Errorf("request %q type %q encoding %q auth %q", req.path, req.ctype, req.encoding, req.auth)
			}
			var back wire.BuildManifest
			if err := json.Unmarshal(req.body, &back); err != nil {
				t.Fatalf("body is not a manifest: %v", err)
			}
			if back.ManifestKey != m.ManifestKey || len(back.Entries) != 1 || back.Entries[0] != m.Entries[0] ||
				back.Namespace == nil || *back.Namespace != ns || back.Profile != "release" || back.Runner == nil || back.Runner.Repository != "acme/app" {
				t.Errorf("central got %s", req.body)
			}
		})
	}
}

// errAny stands for any error in a table.
var errAny = errors.New("any error")

func matches(err, want error) bool {
	if want == errAny {
		return err != nil
	}
	return errors.Is(err, want)
}
