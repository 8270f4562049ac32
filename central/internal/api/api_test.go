package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/metrics"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/readiness"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/httpserve/httpservetest"
	"github.com/kache-planner/kache-planner/shared/wire"
)

type harness struct {
	t      testing.TB
	dial   func() (net.Conn, error)
	client *fasthttp.Client
	store  *store.Store
	ready  *readiness.Flag
	reg    *prometheus.Registry
}

type option func(*Config)

func withToken(tok string) option { return func(c *Config) { c.Token = tok } }

func newHarness(t testing.TB, opts ...option) *harness {
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
	ready := readiness.New(m.SetReady)
	ready.Set(true)
	cfg := Config{Version: "0.15.0-rc.2", PlanCacheBytes: 1 << 20, MaxBodyBytes: 64 << 10, MaxManifestBytes: 256 << 10, MaxTimelineBytes: 32 << 10,
		Limits: httpserve.Limits{BodyTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg, Deps{Planner: planner.New(st, planner.Config{}), Ingester: ing, Ready: ready, Metrics: m, Registerer: reg, Gatherer: reg})
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
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxResponseBodySize: 16 << 20}
	return &harness{t: t, dial: ln.Dial, client: client, store: st, ready: ready, reg: reg}
}

type reply struct {
	status int
	body   []byte
	ctype  string
}

func (h *harness) do(method, path string, body []byte, headers ...string) reply {
	h.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://planner" + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != nil {
		req.SetBody(body)
	}
	if err := h.client.Do(req, resp); err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return reply{status: resp.StatusCode(), body: bytes.Clone(resp.Body()), ctype: string(resp.Header.ContentType())}
}

func (h *harness) postJSON(path, body string, headers ...string) reply {
	return h.do("POST", path, []byte(body), append([]string{"Content-Type", "application/json"}, headers...)...)
}

func (h *harness) plan(body string, headers ...string) wire.PrefetchPlan {
	h.t.Helper()
	r := h.postJSON("/v2/prefetch-plan", body, headers...)
	if r.status != 200 {
		h.t.Fatalf("plan status %d: %s", r.status, r.body)
	}
	p, err := wire.DecodePlan(r.body)
	if err != nil {
		h.t.Fatalf("plan does not decode as a kache client would: %v: %s", err, r.body)
	}
	return p
}

func key(i int) string { return fmt.Sprintf("%064x", i+1) }

func TestHealthz(t *testing.T) {
	h := newHarness(t)
	r := h.do("GET", "/healthz", nil)
	if r.status != 200 || string(r.body) != `{"status":"ok","planner":"planner","version":"0.15.0-rc.2","kache_compat":"0.15.0-rc.2"}` {
		t.Fatalf("healthz %d %s", r.status, r.body)
	}
	h.ready.Set(false)
	if r := h.do("GET", "/readyz", nil); r.status != 503 || len(r.body) != 0 {
		t.Fatalf("readyz not ready: %d %q", r.status, r.body)
	}
	if r := h.do("GET", "/healthz", nil); r.status != 200 {
		t.Fatalf("healthz must stay 200 when not ready: %d", r.status)
	}
	h.ready.Set(true)
	if r := h.do("GET", "/readyz", nil); r.status != 200 {
		t.Fatalf("readyz ready: %d", r.status)
	}
}

func TestMetricsOpenAndPreRegistered(t *testing.T) {
	h := newHarness(t, withToken("secret-token"))
	r := h.do("GET", "/metrics", nil)
	if r.status != 200 || r.ctype != "text/plain; version=0.0.4" {
		t.Fatalf("metrics %d %q", r.status, r.ctype)
	}
	for _, o := range metrics.PlanOutcomes {
		line := fmt.Sprintf(`kache_planner_requests_total{outcome=%q} 0`, o)
		if !bytes.Contains(r.body, []byte(line)) {
			t.Errorf("missing %s", line)
		}
	}
	for _, name := range []string{"kache_planner_request_duration_seconds_bucket", "kache_planner_ready 1"} {
		if !bytes.Contains(r.body, []byte(name)) {
			t.Errorf("missing %s", name)
		}
	}
	h.postJSON("/v2/prefetch-plan", `{"crate_names":["serde"]}`, "Authorization", "Bearer secret-token")
	r = h.do("GET", "/metrics", nil)
	if !bytes.Contains(r.body, []byte(`kache_planner_requests_total{outcome="fallback_no_state"} 1`)) ||
		!bytes.Contains(r.body, []byte(`kache_planner_requests_total{outcome="unauthorized"} 0`)) {
		t.Fatalf("counter not moved:\n%s", r.body)
	}
}

func TestAuth(t *testing.T) {
	h := newHarness(t, withToken(" secret-token \n"))
	intent := `{"crate_names":["serde"],"namespace":"linux/hash/debug","cargo_lock_deps":[["serde","1.0.0"]]}`
	tests := []struct {
		name   string
		header []string
		status int
		errMsg string
	}{
		{"no header", nil, 401, "unauthorized: missing bearer token"},
		{"wrong token", []string{"Authorization", "Bearer wrong-token"}, 401, "unauthorized: invalid bearer token"},
		{"lowercase scheme", []string{"Authorization", "bearer secret-token"}, 401, "unauthorized: missing bearer token"},
		{"two spaces", []string{"Authorization", "Bearer  secret-token"}, 401, "unauthorized: invalid bearer token"},
		{"right token", []string{"Authorization", "Bearer secret-token"}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.postJSON("/v2/prefetch-plan", intent, tt.header...)
			if r.status != tt.status {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if tt.errMsg != "" {
				var e wire.Error
				if err := json.Unmarshal(r.body, &e); err != nil || e.Error != tt.errMsg {
					t.Fatalf("body %s", r.body)
				}
			}
		})
	}
	// Vector 23: authorised, no state => use_fallback.
	p := h.plan(intent, "Authorization", "Bearer secret-token")
	if p.Disposition != wire.UseFallback || len(p.Candidates) != 0 || p.Planner != "planner" || !strings.HasPrefix(p.PlanID, "plan-") {
		t.Fatalf("plan %+v", p)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := h.do("GET", path, nil); r.status != 200 {
			t.Errorf("%s needs no auth, got %d", path, r.status)
		}
	}
	if r := h.postJSON("/v1/manifests", `{"entries":[]}`); r.status != 401 {
		t.Errorf("manifests without token: %d", r.status)
	}
}

func TestNotReadyPlan(t *testing.T) {
	h := newHarness(t)
	h.ready.Set(false)
	if r := h.postJSON("/v1/prefetch-plan", `{"crate_names":["serde"]}`); r.status != 503 {
		t.Fatalf("status %d", r.status)
	}
	if r := h.postJSON("/v1/manifests", `{"entries":[]}`); r.status != 503 {
		t.Fatalf("manifest status %d", r.status)
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name        string
		method      string
		path        string
		body        []byte
		contentType string
		status      int
	}{
		{"malformed JSON", "POST", "/v2/prefetch-plan", []byte(`{"crate_names":[`), "application/json", 400},
		{"empty body", "POST", "/v2/prefetch-plan", []byte(``), "application/json", 400},
		{"wrong types", "POST", "/v2/prefetch-plan", []byte(`{"crate_names":"x"}`), "application/json", 422},
		{"lock dep as object", "POST", "/v2/prefetch-plan", []byte(`{"cargo_lock_deps":[{"name":"a"}]}`), "application/json", 422},
		{"text content type", "POST", "/v2/prefetch-plan", []byte(`{}`), "text/plain", 415},
		{"no content type", "POST", "/v1/prefetch-plan", []byte(`{}`), "", 415},
		{"oversize plan body", "POST", "/v2/prefetch-plan", bytes.Repeat([]byte(" "), 65<<10), "application/json", 413},
		{"wrong method", "GET", "/v2/prefetch-plan", nil, "", 405},
		{"wrong method on health", "POST", "/healthz", []byte(`{}`), "application/json", 405},
		{"unknown route", "GET", "/v3/prefetch-plan", nil, "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.contentType != "" {
				hdr = []string{"Content-Type", tt.contentType}
			}
			r := h.do(tt.method, tt.path, tt.body, hdr...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			var e wire.Error
			if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
				t.Fatalf("not a JSON error: %q", r.body)
			}
		})
	}
	if r := h.postJSON("/v2/prefetch-plan", `{}`, "Content-Type", "application/vnd.kache+json; charset=utf-8"); r.status != 200 {
		t.Fatalf("+json content type refused: %d", r.status)
	}
}

// A body the route may not read is refused from the headers alone, before
// any of it is read: the clients below send headers and at most one body
// byte, so an answer that waited for the body would never come. The answer
// is the route's JSON error, and the connection is closed after it.
func TestRefusedBeforeTheBody(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		length int
		auth   string
		status int
		errMsg string
		reason string
	}{
		{name: "plan over its limit", path: "/v2/prefetch-plan", length: 15 << 20, auth: "Bearer tok", status: 413,
			errMsg: "request body too large: 15728640 bytes over the 65536-byte limit", reason: "too_large"},
		{name: "manifest over its limit", path: "/v1/manifests", length: 300 << 10, auth: "Bearer tok", status: 413, reason: "too_large"},
		{name: "no token", path: "/v1/manifests", length: 200 << 10, status: 401,
			errMsg: "unauthorized: missing bearer token", reason: "unauthorized"},
		{name: "wrong token", path: "/v2/prefetch-plan", length: 15 << 20, auth: "Bearer nope", status: 401,
			errMsg: "unauthorized: invalid bearer token", reason: "unauthorized"},
		{name: "timeline without credentials", path: "/v1/build-timelines", length: 1 << 20, status: 401,
			errMsg: "unauthorized: build timelines need the service's credentials", reason: "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, withToken("tok"))
			hdr := []string{"Content-Type", "application/json", "Content-Encoding", "zstd"}
			if tt.auth != "" {
				hdr = append(hdr, "Authorization", tt.auth)
			}
			msg := httpservetest.Refused(t, h.dial, tt.path, tt.length, tt.status, hdr...)
			if tt.errMsg != "" && msg != tt.errMsg {
				t.Errorf("error %q, want %q", msg, tt.errMsg)
			}
			line := fmt.Sprintf(`kache_planner_http_requests_refused_total{reason=%q} 1`, tt.reason)
			if r := h.do("GET", "/metrics", nil); !bytes.Contains(r.body, []byte(line)) {
				t.Errorf("metrics lack %s", line)
			}
		})
	}
}

func manifestJSON(entries ...wire.ManifestEntry) string {
	b, _ := json.Marshal(wire.BuildManifest{Version: 3, Created: "2026-01-01T00:00:00.123456789+00:00", ManifestKey: "x86_64-unknown-linux-gnu", Entries: entries})
	return string(b)
}

func TestManifestIngestThenPlan(t *testing.T) {
	h := newHarness(t)
	r := h.postJSON("/v1/manifests", manifestJSON(
		wire.ManifestEntry{CacheKey: key(1), CrateName: "proc_macro2", CompileTimeMs: 900, ArtifactSize: 4096},
		wire.ManifestEntry{CacheKey: key(2), CrateName: "serde", CompileTimeMs: 5000, ArtifactSize: 1 << 20},
		wire.ManifestEntry{CacheKey: key(3), CrateName: "app", CompileTimeMs: 100, ArtifactSize: 10},
	))
	if r.status != 200 || string(r.body) != `{"stored":3,"new":3}` {
		t.Fatalf("ingest %d %s", r.status, r.body)
	}
	// The client sends package names; candidates carry layout crate names.
	p := h.plan(`{"crate_names":["proc-macro2","serde","app"],"namespace":null,"cargo_lock_deps":[]}`)
	if p.Disposition != wire.Execute || len(p.Candidates) != 3 {
		t.Fatalf("plan %+v", p)
	}
	want := []struct {
		key, crate string
		cost       uint64
	}{{key(2), "serde", 5000}, {key(1), "proc_macro2", 900}, {key(3), "app", 100}}
	for i, w := range want {
		c := p.Candidates[i]
		if c.CacheKey != w.key || c.CrateName != w.crate || c.CompileTimeMs != w.cost || c.Source != wire.SourceHistory || c.DemandIndex == nil {
			t.Errorf("candidate %d = %+v, want %v", i, c, w)
		}
	}
	if p.Stats == nil || p.Stats.FromHistory != 3 || p.Stats.ResolvedCrates != 3 {
		t.Fatalf("stats %+v", p.Stats)
	}
}

func TestManifestRejectsInvalidEntriesAtomically(t *testing.T) {
	h := newHarness(t)
	r := h.postJSON("/v1/manifests", manifestJSON(
		wire.ManifestEntry{CacheKey: key(1), CrateName: "serde"},
		wire.ManifestEntry{CacheKey: "serde-key", CrateName: "serde"},
		wire.ManifestEntry{CacheKey: key(3), CrateName: "../evil"},
	))
	if r.status != 400 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var e wire.Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Details) != 2 || e.Details[0].Index != 1 || e.Details[1].Index != 2 || e.Details[1].CrateName != "../evil" {
		t.Fatalf("details %+v", e.Details)
	}
	if h.store.ArtifactCount() != 0 {
		t.Fatal("a rejected manifest stored entries")
	}
}

func TestManifestWithNamespaceFeedsShards(t *testing.T) {
	h := newHarness(t)
	body := `{"version":3,"entries":[{"cache_key":"` + key(7) + `","crate_name":"proc_macro2","compile_time_ms":10,"artifact_size":20}],
	"namespace":"ci-main","cargo_lock_deps":[["proc-macro2","1.0.86"],["serde","1.0.0"]],"target":"x86_64-unknown-linux-gnu","profile":"debug"}`
	if r := h.postJSON("/v1/manifests", body); r.status != 200 {
		t.Fatalf("ingest %d %s", r.status, r.body)
	}
	p := h.plan(`{"crate_names":["proc-macro2"],"namespace":"ci-main","cargo_lock_deps":[["proc-macro2","1.0.86"]]}`)
	if len(p.Candidates) != 1 || p.Candidates[0].Source != wire.SourceShard || p.Candidates[0].CrateName != "proc_macro2" {
		t.Fatalf("plan %+v", p)
	}
	p = h.plan(`{"crate_names":["proc-macro2"],"namespace":"other","cargo_lock_deps":[["proc-macro2","1.0.86"]]}`)
	if len(p.Candidates) != 1 || p.Candidates[0].Source != wire.SourceHistory {
		t.Fatalf("other namespace should fall to history: %+v", p)
	}
}

// The sidecar's toolchain field reaches ingest and planning over HTTP: keys
// of another rustc are never planned.
func TestPlanToolchain(t *testing.T) {
	h := newHarness(t)
	body := `{"version":3,"entries":[{"cache_key":"` + key(7) + `","crate_name":"serde","compile_time_ms":10,"artifact_size":20}],
	"namespace":"ci","cargo_lock_deps":[["serde","1.0.0"]],"target":"x86_64-unknown-linux-gnu","profile":"debug","toolchain":"1.81.0"}`
	if r := h.postJSON("/v1/manifests", body); r.status != 200 {
		t.Fatalf("ingest %d %s", r.status, r.body)
	}
	tests := []struct {
		name      string
		toolchain string
		want      wire.Disposition
	}{
		{"same toolchain", `"1.81.0"`, wire.Execute},
		{"another toolchain", `"1.82.0"`, wire.UseFallback},
		{"unknown toolchain", `""`, wire.Execute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := h.plan(`{"crate_names":["serde"],"namespace":"ci","cargo_lock_deps":[["serde","1.0.0"],["log","0.4.0"]],"toolchain":` + tt.toolchain + `}`)
			if p.Disposition != tt.want {
				t.Fatalf("plan %+v, want %s", p, tt.want)
			}
		})
	}
}

func zstdBody(t testing.TB, v any) []byte {
	t.Helper()
	raw, ok := v.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

func TestBuildTimelines(t *testing.T) {
	h := newHarness(t, withToken("tok"))
	auth := []string{"Authorization", "Bearer tok", "Content-Type", "application/json", "Content-Encoding", "zstd"}
	rec := func(id string, units int) wire.BuildTimeline {
		tl := wire.BuildTimeline{Schema: 2, ClientRecordID: id, FinishedAtMs: 1_700_000_000_000}
		for i := range units {
			tl.Units = append(tl.Units, wire.TimelineUnit{CacheKey: key(100 + i), CrateName: "tokio", Result: "miss", CompileTimeMs: 1200, Size: 999})
		}
		return tl
	}
	tests := []struct {
		name    string
		body    []byte
		headers []string
		status  int
		reply   string
	}{
		{"no credentials", zstdBody(t, rec("a", 1)), []string{"Content-Encoding", "zstd"}, 401, `{"error":"unauthorized: build timelines need the service's credentials"}`},
		{"no zstd encoding", []byte(`{}`), []string{"Authorization", "Bearer tok"}, 415, ""},
		{"not zstd", []byte("plain text"), auth, 400, ""},
		{"not a record", zstdBody(t, []byte(`[1,2]`)), auth, 400, ""},
		{"unsupported schema", zstdBody(t, wire.BuildTimeline{Schema: 99, ClientRecordID: "x"}), auth, 400, ""},
		{"blank record id", zstdBody(t, wire.BuildTimeline{Schema: 2, ClientRecordID: "  "}), auth, 400, ""},
		{"too large compressed", bytes.Repeat([]byte{1}, 33<<10), auth, 413, ""},
		{"too large decoded", zstdBody(t, append([]byte(`{"schema":2,"client_record_id":"big","pad":"`), append(bytes.Repeat([]byte("a"), 2<<20), '"', '}')...)), auth, 413, ""},
		{"inserted", zstdBody(t, rec("r1", 2)), auth, 200, `{"stored":"inserted"}`},
		{"kept with fewer units", zstdBody(t, rec("r1", 1)), auth, 200, `{"stored":"kept"}`},
		{"replaced with as many", zstdBody(t, rec("r1", 2)), auth, 200, `{"stored":"replaced"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do("POST", "/v1/build-timelines", tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.reply != "" && string(r.body) != tt.reply {
				t.Fatalf("reply %s, want %s", r.body, tt.reply)
			}
		})
	}
	p := h.plan(`{"crate_names":["tokio"]}`, "Authorization", "Bearer tok")
	if len(p.Candidates) != 2 || p.Candidates[0].CompileTimeMs != 1200 {
		t.Fatalf("timeline units not learned: %+v", p)
	}
}

func TestPlanBudget(t *testing.T) {
	h := newHarness(t)
	var entries []wire.ManifestEntry
	for i := range 10 {
		entries = append(entries, wire.ManifestEntry{CacheKey: key(i), CrateName: fmt.Sprintf("c%d", i), CompileTimeMs: uint64(100 * (i + 1)), ArtifactSize: 1000})
	}
	h.postJSON("/v1/manifests", manifestJSON(entries...))
	names := make([]string, 10)
	for i := range names {
		names[i] = fmt.Sprintf("%q", fmt.Sprintf("c%d", i))
	}
	p := h.plan(`{"crate_names":[` + strings.Join(names, ",") + `],"budget":{"max_bytes":3000}}`)
	if len(p.Candidates) != 3 || p.Stats.DroppedBudget != 7 {
		t.Fatalf("byte budget: %d candidates, stats %+v", len(p.Candidates), p.Stats)
	}
	for _, c := range p.Candidates {
		if c.CompileTimeMs < 800 {
			t.Fatalf("kept a cheap candidate %+v", c)
		}
	}
	p = h.plan(`{"crate_names":[` + strings.Join(names, ",") + `],"budget":{"max_keys":4}}`)
	if len(p.Candidates) != 4 {
		t.Fatalf("key budget: %d", len(p.Candidates))
	}
}

// FuzzPlanRequest feeds arbitrary bodies to the plan route: the service must
// answer every one with a status kache understands and a JSON body.
func FuzzPlanRequest(f *testing.F) {
	f.Add([]byte(`{"crate_names":["serde"],"namespace":"ns","cargo_lock_deps":[["serde","1.0.0"]]}`))
	f.Add([]byte(`{"crate_names":null,"budget":{"max_keys":-1,"max_bytes":1}}`))
	f.Add([]byte(`[`))
	h := newHarness(f)
	seedFuzz(h)
	f.Fuzz(func(t *testing.T, body []byte) {
		h.t = t
		r := h.do("POST", "/v2/prefetch-plan", body, "Content-Type", "application/json")
		switch r.status {
		case 200:
			if _, err := wire.DecodePlan(r.body); err != nil {
				t.Fatalf("200 with a plan kache rejects: %v: %s", err, r.body)
			}
		case 400, 413, 422:
			if !json.Valid(r.body) {
				t.Fatalf("%d with non-JSON body %q", r.status, r.body)
			}
		default:
			t.Fatalf("status %d for %q: %s", r.status, body, r.body)
		}
	})
}

// FuzzManifestRequest does the same for the manifest route.
func FuzzManifestRequest(f *testing.F) {
	f.Add([]byte(manifestJSON(wire.ManifestEntry{CacheKey: key(1), CrateName: "serde", CompileTimeMs: 1, ArtifactSize: 2})))
	f.Add([]byte(`{"entries":[{"cache_key":"` + key(1) + `","crate_name":"a"}],"namespace":"n","cargo_lock_deps":[["a","1"]],"created":"bad"}`))
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		h.t = t
		r := h.do("POST", "/v1/manifests", body, "Content-Type", "application/json")
		switch r.status {
		case 200, 400, 413, 422:
			if !json.Valid(r.body) {
				t.Fatalf("%d with non-JSON body %q", r.status, r.body)
			}
		default:
			t.Fatalf("status %d for %q: %s", r.status, body, r.body)
		}
	})
}

func seedFuzz(h *harness) {
	var entries []wire.ManifestEntry
	for i := range 20 {
		entries = append(entries, wire.ManifestEntry{CacheKey: key(i), CrateName: []string{"serde", "a", "b"}[i%3], CompileTimeMs: uint64(i), ArtifactSize: uint64(i)})
	}
	h.postJSON("/v1/manifests", manifestJSON(entries...))
}

// Repeated intents are answered from the plan cache with a fresh plan id
// until the next write, which the next answer reflects.
func TestPlanCache(t *testing.T) {
	h := newHarness(t)
	h.postJSON("/v1/manifests", manifestJSON(wire.ManifestEntry{CacheKey: key(1), CrateName: "serde", CompileTimeMs: 5, ArtifactSize: 6}))
	intent := `{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[]}`
	first := h.plan(intent)
	time.Sleep(2 * time.Millisecond)
	second := h.plan(intent)
	if len(second.Candidates) != 1 || second.Candidates[0].CacheKey != first.Candidates[0].CacheKey || *second.Candidates[0].DemandIndex != 0 {
		t.Fatalf("cached plan differs: %+v vs %+v", second, first)
	}
	if second.PlanID == first.PlanID {
		t.Fatalf("cached answer reused plan id %s", first.PlanID)
	}
	if !bytes.Contains(h.do("GET", "/metrics", nil).body, []byte(`kache_planner_plan_cache_total{result="hit"} 1`)) {
		t.Fatal("no cache hit counted")
	}
	h.postJSON("/v1/manifests", manifestJSON(wire.ManifestEntry{CacheKey: key(2), CrateName: "serde", CompileTimeMs: 5, ArtifactSize: 6}))
	third := h.plan(intent)
	if len(third.Candidates) != 2 {
		t.Fatalf("write did not invalidate the cache: %+v", third)
	}
	// A different body is a different intent.
	if p := h.plan(`{"crate_names":["other"]}`); p.Disposition != wire.UseFallback {
		t.Fatalf("%+v", p)
	}
}

// A write invalidates only the cached plans that read what it changed: a
// build of another crate leaves the plan cached.
func TestPlanCacheKeepsPlansOthersWritesMiss(t *testing.T) {
	h := newHarness(t)
	h.postJSON("/v1/manifests", manifestJSON(wire.ManifestEntry{CacheKey: key(1), CrateName: "serde", CompileTimeMs: 5, ArtifactSize: 6}))
	intent := `{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[]}`
	hits := func() string {
		m := h.do("GET", "/metrics", nil).body
		i := bytes.Index(m, []byte(`kache_planner_plan_cache_total{result="hit"} `))
		return string(bytes.Fields(m[i:])[1])
	}
	h.plan(intent)
	h.postJSON("/v1/manifests", manifestJSON(wire.ManifestEntry{CacheKey: key(2), CrateName: "tokio", CompileTimeMs: 5, ArtifactSize: 6}))
	if p := h.plan(intent); len(p.Candidates) != 1 || hits() != "1" {
		t.Fatalf("after a build of another crate: %d candidates, %s hits", len(p.Candidates), hits())
	}
	h.postJSON("/v1/manifests", manifestJSON(wire.ManifestEntry{CacheKey: key(3), CrateName: "serde", CompileTimeMs: 5, ArtifactSize: 6}))
	if p := h.plan(intent); len(p.Candidates) != 2 || hits() != "1" {
		t.Fatalf("after a build of its crate: %d candidates, %s hits", len(p.Candidates), hits())
	}
}
