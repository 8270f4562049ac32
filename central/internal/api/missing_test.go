package api

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/metrics"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/readiness"
	"github.com/kache-planner/kache-planner/central/internal/retention"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// newMissingHarness is a server with a token whose 404 reports go to a
// retention service without a bucket (reported keys drop at once).
func newMissingHarness(t *testing.T) *harness {
	t.Helper()
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	ing, err := ingest.NewService(st, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ret, err := retention.New(retention.Config{}, st, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ready := readiness.New(m.SetReady)
	ready.Set(true)
	srv, err := New(Config{Token: "tok", MaxBodyBytes: 64 << 10, MaxManifestBytes: 256 << 10, MaxTimelineBytes: 32 << 10, MaxMissingKeysBytes: 16 << 10,
		Limits: httpserve.Limits{BodyTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}},
		Deps{Planner: planner.New(st, planner.Config{}), Ingester: ing, Ready: ready, Missing: ret, Metrics: m, Registerer: reg, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Error(err)
		}
		ln.Close()
		<-done
		ing.Close()
		st.Close()
	})
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxResponseBodySize: 1 << 20}
	return &harness{t: t, dial: ln.Dial, client: client, store: st, ready: ready, reg: reg}
}

func missingBody(keys ...wire.MissingKey) string {
	b, _ := json.Marshal(wire.MissingKeys{Keys: keys})
	return string(b)
}

func TestMissingKeysDropsFromPlans(t *testing.T) {
	h := newMissingHarness(t)
	auth := []string{"Authorization", "Bearer tok"}
	manifest := `{"version":3,"created":"2026-01-01T00:00:00Z","manifest_key":"x","entries":[` +
		`{"cache_key":"` + key(0) + `","crate_name":"serde","compile_time_ms":10,"artifact_size":100},` +
		`{"cache_key":"` + key(1) + `","crate_name":"serde","compile_time_ms":10,"artifact_size":100}]}`
	if r := h.postJSON("/v1/manifests", manifest, auth...); r.status != 200 {
		t.Fatalf("manifest: %d %s", r.status, r.body)
	}
	if p := h.plan(`{"crate_names":["serde"]}`, auth...); len(p.Candidates) != 2 {
		t.Fatalf("plan before: %+v", p)
	}
	r := h.postJSON("/v1/missing-keys", missingBody(wire.MissingKey{CacheKey: key(0), CrateName: "serde"}, wire.MissingKey{CacheKey: key(7), CrateName: "tokio"}), auth...)
	var res wire.MissingKeysResult
	if r.status != 200 || json.Unmarshal(r.body, &res) != nil || res != (wire.MissingKeysResult{Dropped: 1, Unknown: 1}) {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	p := h.plan(`{"crate_names":["serde"]}`, auth...)
	if len(p.Candidates) != 1 || p.Candidates[0].CacheKey != key(1) {
		t.Fatalf("plan after: %+v", p)
	}
}

func TestMissingKeysRefusals(t *testing.T) {
	h := newMissingHarness(t)
	auth := []string{"Authorization", "Bearer tok"}
	many := make([]wire.MissingKey, wire.MaxMissingKeys+1)
	for i := range many {
		many[i] = wire.MissingKey{CacheKey: key(i), CrateName: "c"}
	}
	for _, tc := range []struct {
		name    string
		body    string
		headers []string
		status  int
		want    string
	}{
		{"no token", missingBody(), nil, 401, ""},
		{"wrong token", missingBody(), []string{"Authorization", "Bearer nope"}, 401, "invalid bearer token"},
		{"invalid key", missingBody(wire.MissingKey{CacheKey: "XYZ", CrateName: "serde"}), auth, 400, "1 invalid keys"},
		{"not JSON", `{"keys":`, auth, 400, ""},
		{"body over the limit", missingBody(many[:200]...), auth, 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.postJSON("/v1/missing-keys", tc.body, tc.headers...)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
				t.Fatalf("%d %s, want %d %q", r.status, r.body, tc.status, tc.want)
			}
		})
	}
	// More keys than a report may hold, under the body limit.
	if _, err := ingest.MissingKeys(&wire.MissingKeys{Keys: many}); err == nil || statusOf(err) != fasthttp.StatusRequestEntityTooLarge {
		t.Fatalf("too many keys: %v", err)
	}
	h.ready.Set(false)
	if r := h.postJSON("/v1/missing-keys", missingBody(), auth...); r.status != 503 {
		t.Fatalf("not ready: %d %s", r.status, r.body)
	}
}
