package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/httpserve/httpservetest"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
)

// The ignored goroutines end on their own tick: fasthttp's idle-worker
// cleaners after Shutdown, goleveldb's pool drain after Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("time.Sleep"),
		// goleveldb's memdb pool drain (the benchmarks' hint database) ends
		// on its own tick after Close.
		goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"))
}

const key1 = "acdc9e416dd3000f77b9711b73251f76805354b21f5623c0ab85ff5c5a82a320"

func execResult() planner.Result {
	di := uint32(0)
	return planner.Result{Source: planner.SourceCentral, Plan: wire.PrefetchPlan{PlanID: "plan-1", Planner: "central", Disposition: wire.Execute,
		Candidates: []wire.PrefetchCandidate{{CacheKey: key1, CrateName: "syn", CompileTimeMs: 5400, SizeBytes: 3100000, Source: wire.SourceShard, DemandIndex: &di}}}}
}

// fakePlanner answers every intent with res.
type fakePlanner struct {
	mu   sync.Mutex
	res  planner.Result
	seen []*wire.BuildIntent
}

func (f *fakePlanner) Plan(_ context.Context, in *wire.BuildIntent) planner.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, in)
	r := f.res
	r.Intent = in
	return r
}

func (f *fakePlanner) Name() string { return "kache-sidecar" }

func (f *fakePlanner) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

type submitted struct {
	intent *wire.BuildIntent
	plan   wire.PrefetchPlan
	source planner.Source
}

// fakePrefetcher records submissions; with block set it holds each one
// until block is closed.
type fakePrefetcher struct {
	got   chan submitted
	block chan struct{}
}

func (f *fakePrefetcher) Submit(res planner.Result) {
	if f.block != nil {
		<-f.block
	}
	f.got <- submitted{res.Intent, res.Plan, res.Source}
}

type harness struct {
	t      *testing.T
	dial   func() (net.Conn, error)
	client *fasthttp.Client
	reg    *prometheus.Registry
	plan   *fakePlanner
	srv    *Server
}

func newHarness(t *testing.T, cfg Config, res planner.Result, pf Prefetcher) *harness {
	t.Helper()
	return newHarnessWith(t, cfg, res, func(d *Deps) {
		if pf != nil {
			d.Prefetcher = pf
		}
	})
}

func newHarnessWith(t *testing.T, cfg Config, res planner.Result, mod func(*Deps)) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	fp := &fakePlanner{res: res}
	deps := Deps{Planner: fp, Registerer: reg, Gatherer: reg}
	mod(&deps)
	if cfg.Version == "" {
		cfg.Version = "1.2.3"
	}
	srv, err := New(cfg, deps)
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
	})
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxResponseBodySize: 16 << 20}
	return &harness{t: t, dial: ln.Dial, client: client, reg: reg, plan: fp, srv: srv}
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
	req.SetRequestURI("http://sidecar" + path)
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

const kacheIntent = `{"crate_names":["syn","serde","tokio","app"],"namespace":"ci-main","cargo_lock_deps":[["serde","1.0.210"],["syn","2.0.0"]]}`

func TestPlanRoutes(t *testing.T) {
	for _, path := range []string{"/v1/prefetch-plan", "/v2/prefetch-plan"} {
		t.Run(path, func(t *testing.T) {
			h := newHarness(t, Config{}, execResult(), nil)
			r := h.do("POST", path, []byte(kacheIntent), "Content-Type", "application/json")
			if r.status != 200 || r.ctype != "application/json" {
				t.Fatalf("status %d type %q: %s", r.status, r.ctype, r.body)
			}
			// The planner's plan, with the answer's unique plan_id.
			wantPlan := execResult().Plan
			wantPlan.PlanID = "plan-1.1"
			want, _ := wantPlan.AppendJSON(nil)
			if !bytes.Equal(r.body, want) {
				t.Errorf("body\n got %s\nwant %s", r.body, want)
			}
			if _, err := wire.DecodePlan(r.body); err != nil {
				t.Errorf("a kache client would reject the plan: %v", err)
			}
			if got := counter(t, h.reg, "kache_sidecar_plan_requests_total", "central"); got != 1 {
				t.Errorf("requests{source=central} = %v, want 1", got)
			}
			if n := h.plan.calls(); n != 1 {
				t.Fatalf("planner called %d times", n)
			}
			in := h.plan.seen[0]
			if in.Namespace == nil || *in.Namespace != "ci-main" || len(in.CargoLockDeps) != 2 || in.CargoLockDeps[1].Name != "syn" {
				t.Errorf("planner saw intent %+v", in)
			}
		})
	}
}

func TestFallbackHasEmptyCandidates(t *testing.T) {
	h := newHarness(t, Config{}, planner.Result{Source: planner.SourceFallback,
		Plan: wire.PrefetchPlan{PlanID: "plan-9", Planner: "kache-sidecar", Disposition: wire.UseFallback}}, nil)
	r := h.do("POST", "/v2/prefetch-plan", []byte(`{"crate_names":[],"namespace":null,"cargo_lock_deps":[]}`), "Content-Type", "application/json")
	want := `{"plan_id":"plan-9.1","planner":"kache-sidecar","disposition":"use_fallback","candidates":[]}`
	if r.status != 200 || string(r.body) != want {
		t.Errorf("got %d %s, want 200 %s", r.status, r.body, want)
	}
}

func TestInvalidPlannerAnswerBecomesFallback(t *testing.T) {
	h := newHarness(t, Config{}, planner.Result{Source: planner.SourceCentral, Plan: wire.PrefetchPlan{Disposition: "Execute"}}, nil)
	r := h.do("POST", "/v2/prefetch-plan", []byte(kacheIntent), "Content-Type", "application/json")
	p, err := wire.DecodePlan(r.body)
	if r.status != 200 || err != nil || p.Disposition != wire.UseFallback {
		t.Errorf("got %d %s (%v), want a 200 use_fallback", r.status, r.body, err)
	}
}

func TestPlanRequestErrors(t *testing.T) {
	tests := []struct {
		name   string
		ctype  string
		body   string
		status int
	}{
		{name: "no content type", ctype: "", body: kacheIntent, status: 415},
		{name: "text/plain", ctype: "text/plain", body: kacheIntent, status: 415},
		{name: "json with charset", ctype: "application/json; charset=utf-8", body: kacheIntent, status: 200},
		{name: "vendor json", ctype: "application/vnd.kache+json", body: kacheIntent, status: 200},
		{name: "malformed", ctype: "application/json", body: `{"crate_names":[`, status: 400},
		{name: "empty body", ctype: "application/json", body: ``, status: 400},
		{name: "crate_names a string", ctype: "application/json", body: `{"crate_names":"x"}`, status: 422},
		{name: "lock deps as objects", ctype: "application/json", body: `{"cargo_lock_deps":[{"name":"a","version":"1"}]}`, status: 422},
		{name: "lock dep with three elements", ctype: "application/json", body: `{"cargo_lock_deps":[["a","1","x"]]}`, status: 422},
		{name: "unknown keys and missing fields", ctype: "application/json", body: `{"session":"s","identity":{"a":1}}`, status: 200},
		{name: "additive fields", ctype: "application/json", body: `{"crate_names":["a"],"target":"x86_64-unknown-linux-gnu","runner":{"repository":"a/b"}}`, status: 200},
		{name: "over the body limit", ctype: "application/json", body: `{"crate_names":["` + strings.Repeat("a", 2048) + `"]}`, status: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxBodyBytes: 1024}, execResult(), nil)
			var headers []string
			if tt.ctype != "" {
				headers = []string{"Content-Type", tt.ctype}
			}
			r := h.do("POST", "/v2/prefetch-plan", []byte(tt.body), headers...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.status == 200 {
				return
			}
			var e wire.Error
			if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" || r.ctype != "application/json" {
				t.Errorf("error body %q (%s) is not the JSON error shape", r.body, r.ctype)
			}
			if h.plan.calls() != 0 {
				t.Error("the planner was called for a refused request")
			}
		})
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		method  string
		auth    string
		status  int
		message string
	}{
		{name: "plan without header", path: "/v2/prefetch-plan", method: "POST", status: 401, message: "missing bearer token"},
		{name: "plan with wrong token", path: "/v2/prefetch-plan", method: "POST", auth: "Bearer nope", status: 401, message: "invalid bearer token"},
		{name: "lowercase scheme", path: "/v1/prefetch-plan", method: "POST", auth: "bearer s3cret", status: 401, message: "missing bearer token"},
		{name: "two spaces after the scheme", path: "/v2/prefetch-plan", method: "POST", auth: "Bearer  s3cret", status: 401, message: "invalid bearer token"},
		{name: "plan with token", path: "/v2/prefetch-plan", method: "POST", auth: "Bearer s3cret", status: 200},
		{name: "health is open", path: "/healthz", method: "GET", status: 200},
		{name: "metrics are open", path: "/metrics", method: "GET", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Token: " s3cret "}, execResult(), nil)
			headers := []string{"Content-Type", "application/json"}
			if tt.auth != "" {
				headers = append(headers, "Authorization", tt.auth)
			}
			var body []byte
			if tt.method == "POST" {
				body = []byte(kacheIntent)
			}
			r := h.do(tt.method, tt.path, body, headers...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.message != "" && !strings.Contains(string(r.body), tt.message) {
				t.Errorf("body %s, want %q", r.body, tt.message)
			}
		})
	}
}

func TestHealthMetricsAndUnknownRoutes(t *testing.T) {
	h := newHarness(t, Config{Version: "0.3.0"}, execResult(), nil)
	r := h.do("GET", "/healthz", nil)
	if want := `{"status":"ok","planner":"kache-sidecar","version":"0.3.0","kache_compat":"0.15.0-rc.2"}`; r.status != 200 || string(r.body) != want {
		t.Errorf("healthz = %d %s, want %s", r.status, r.body, want)
	}
	h.do("POST", "/v2/prefetch-plan", []byte(kacheIntent), "Content-Type", "application/json")
	r = h.do("GET", "/metrics", nil)
	if r.status != 200 || r.ctype != "text/plain; version=0.0.4" {
		t.Fatalf("metrics = %d %q", r.status, r.ctype)
	}
	for _, want := range []string{
		`kache_sidecar_plan_requests_total{source="central"} 1`,
		`kache_sidecar_plan_requests_total{source="stale_hint"} 0`,
		`kache_sidecar_plan_request_duration_seconds_count{source="central"} 1`,
		`kache_sidecar_plan_candidates_count 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/v3/prefetch-plan", 404},
		{"GET", "/v2/prefetch-plan", 405},
		{"POST", "/healthz", 405},
		{"GET", "/v2/prefetch-plan/", 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := h.do(tt.method, tt.path, nil)
			var e wire.Error
			if r.status != tt.status || json.Unmarshal(r.body, &e) != nil || e.Error == "" {
				t.Errorf("got %d %s, want %d with a JSON error", r.status, r.body, tt.status)
			}
		})
	}
}

func TestExecutePlansGoToThePrefetcher(t *testing.T) {
	tests := []struct {
		name   string
		res    planner.Result
		submit bool
	}{
		{name: "execute", res: execResult(), submit: true},
		{name: "use_fallback", res: planner.Result{Source: planner.SourceFallback, Plan: wire.PrefetchPlan{Disposition: wire.UseFallback}}},
		{name: "do_nothing", res: planner.Result{Source: planner.SourceCentral, Plan: wire.PrefetchPlan{Disposition: wire.DoNothing}}},
		{name: "execute without candidates", res: planner.Result{Source: planner.SourceBucket, Plan: wire.PrefetchPlan{Disposition: wire.Execute}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pf := &fakePrefetcher{got: make(chan submitted, 4)}
			h := newHarness(t, Config{}, tt.res, pf)
			if r := h.do("POST", "/v2/prefetch-plan", []byte(kacheIntent), "Content-Type", "application/json"); r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			if !tt.submit {
				select {
				case s := <-pf.got:
					t.Errorf("submitted %+v, want nothing", s.plan)
				case <-time.After(50 * time.Millisecond):
				}
				return
			}
			select {
			case s := <-pf.got:
				if s.source != planner.SourceCentral || s.plan.PlanID != "plan-1.1" || len(s.plan.Candidates) != 1 || s.intent == nil || len(s.intent.CrateNames) != 4 {
					t.Errorf("submitted %+v from %s for %+v", s.plan, s.source, s.intent)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("plan never submitted")
			}
		})
	}
}

func TestBlockedPrefetcherDoesNotDelayAnswers(t *testing.T) {
	pf := &fakePrefetcher{got: make(chan submitted, 64), block: make(chan struct{})}
	h := newHarness(t, Config{PrefetchQueue: 2}, execResult(), pf)
	// Unblock before Stop so the worker can end.
	t.Cleanup(func() { close(pf.block) })
	start := time.Now()
	for range 10 {
		if r := h.do("POST", "/v2/prefetch-plan", []byte(kacheIntent), "Content-Type", "application/json"); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("10 answers took %v with a blocked prefetcher", el)
	}
	// One held by the worker, two queued, the rest dropped.
	if got := counter(t, h.reg, "kache_sidecar_plan_prefetch_dropped_total", ""); got != 7 {
		t.Errorf("dropped = %v, want 7", got)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		token   string
		wantErr error
	}{
		{name: "loopback v4", addr: "127.0.0.1:7070"},
		{name: "loopback v6", addr: "[::1]:7070"},
		{name: "localhost", addr: "localhost:7070"},
		{name: "all interfaces without token", addr: "0.0.0.0:7070", wantErr: ErrInsecureBind},
		{name: "empty host without token", addr: ":7070", wantErr: ErrInsecureBind},
		{name: "pod IP without token", addr: "10.1.2.3:7070", wantErr: ErrInsecureBind},
		{name: "blank token counts as none", addr: "0.0.0.0:7070", token: "  ", wantErr: ErrInsecureBind},
		{name: "all interfaces with token", addr: "0.0.0.0:7070", token: "s3cret"},
		{name: "no port", addr: "127.0.0.1", wantErr: errors.New("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			_, err := New(Config{Addr: tt.addr, Token: tt.token}, Deps{Planner: &fakePlanner{}, Registerer: reg, Gatherer: reg})
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("New: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Error("New succeeded, want an error")
			case tt.wantErr != nil && tt.wantErr.Error() != "" && !errors.Is(err, tt.wantErr):
				t.Errorf("New error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("metrics registered twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		deps := Deps{Planner: &fakePlanner{}, Registerer: reg, Gatherer: reg}
		if _, err := New(Config{}, deps); err != nil {
			t.Fatal(err)
		}
		if _, err := New(Config{}, deps); err == nil {
			t.Error("second New on one registry succeeded")
		}
	})
}

func TestStartStopOnLoopback(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Addr: "127.0.0.1:0"}, Deps{Planner: &fakePlanner{res: execResult()}, Registerer: reg, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// net/http rather than fasthttp's default dialer, whose address-cache
	// cleaner goroutine is process-wide and never ends.
	tr := &http.Transport{}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://%s/healthz", srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"status":"ok"`)) {
		t.Errorf("healthz over TCP = %d %s %v", resp.StatusCode, body, err)
	}
	tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// counter reads a counter from reg; source selects the series by its source
// label ("" for an unlabelled counter).
func counter(t *testing.T, reg *prometheus.Registry, name, source string) float64 {
	t.Helper()
	return counterBy(t, reg, name, "source", source)
}

// counterBy reads the series of a counter whose label has value ("" for an
// unlabelled counter).
func counterBy(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					got = l.GetValue()
				}
			}
			if got == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// The sidecar's planner satisfies the surface's consumer interface.
var _ Planner = (*planner.Planner)(nil)

func TestStopWithoutStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(Config{}, Deps{Planner: &fakePlanner{}, Registerer: reg, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("Stop of a server never started: %v", err)
	}
}

// fakeRelay answers every timeline with status/answer or err.
type fakeRelay struct {
	status int
	answer string
	err    error
	mu     sync.Mutex
	got    [][]byte
}

func (f *fakeRelay) RelayTimeline(_ context.Context, body []byte) (int, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, body)
	return f.status, []byte(f.answer), f.err
}

func TestTimelineRelay(t *testing.T) {
	body := []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 1, 2}
	tests := []struct {
		name       string
		relay      *fakeRelay
		token      string
		headers    []string
		body       []byte
		status     int
		wantBody   string
		wantRelays int
		outcome    string
	}{
		{name: "relayed", relay: &fakeRelay{status: 200, answer: `{"stored":"inserted"}`}, headers: []string{"Content-Encoding", " ZSTD "},
			body: body, status: 200, wantBody: `{"stored":"inserted"}`, wantRelays: 1, outcome: "relayed"},
		{name: "central refuses", relay: &fakeRelay{status: 400, answer: `{"error":"body is not zstd"}`}, headers: []string{"Content-Encoding", "zstd"},
			body: body, status: 400, wantBody: `{"error":"body is not zstd"}`, wantRelays: 1, outcome: "central_refused"},
		{name: "central unreachable", relay: &fakeRelay{err: errors.New("connection refused")}, headers: []string{"Content-Encoding", "zstd"},
			body: body, status: 503, wantBody: `{"error":"this service is not currently storing build timelines"}`, wantRelays: 1, outcome: "central_unreachable"},
		{name: "no relay configured", headers: []string{"Content-Encoding", "zstd"},
			body: body, status: 503, wantBody: `{"error":"this service is not currently storing build timelines"}`, outcome: "not_configured"},
		{name: "not zstd", relay: &fakeRelay{status: 200}, headers: []string{"Content-Encoding", "gzip"},
			body: body, status: 415, outcome: "unsupported_encoding"},
		{name: "too large", relay: &fakeRelay{status: 200}, headers: []string{"Content-Encoding", "zstd"},
			body: bytes.Repeat([]byte{1}, 100), status: 413, outcome: "too_large"},
		{name: "missing token", relay: &fakeRelay{status: 200}, token: "s3cret", headers: []string{"Content-Encoding", "zstd"},
			body: body, status: 401, outcome: "unauthorized"},
		{name: "with token", relay: &fakeRelay{status: 200, answer: `{"stored":"kept"}`}, token: "s3cret",
			headers: []string{"Content-Encoding", "zstd", "Authorization", "Bearer s3cret"},
			body:    body, status: 200, wantBody: `{"stored":"kept"}`, wantRelays: 1, outcome: "relayed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarnessWith(t, Config{Token: tt.token, MaxTimelineBytes: 64}, execResult(), func(d *Deps) {
				if tt.relay != nil {
					d.Timelines = tt.relay
				}
			})
			r := h.do("POST", "/v1/build-timelines", tt.body, append([]string{"Content-Type", "application/json"}, tt.headers...)...)
			if r.status != tt.status || (tt.wantBody != "" && string(r.body) != tt.wantBody) {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, tt.status, tt.wantBody)
			}
			relays := 0
			if tt.relay != nil {
				relays = len(tt.relay.got)
				if relays == 1 && !bytes.Equal(tt.relay.got[0], tt.body) {
					t.Errorf("relayed %x, want the body unchanged", tt.relay.got[0])
				}
			}
			if relays != tt.wantRelays {
				t.Errorf("relayed %d times, want %d", relays, tt.wantRelays)
			}
			if got := counterBy(t, h.reg, "kache_sidecar_timeline_relays_total", "outcome", tt.outcome); got != 1 {
				t.Errorf("timeline_relays_total{outcome=%s} = %v, want 1", tt.outcome, got)
			}
		})
	}
}

type fakeSessions map[string]any

func (f fakeSessions) SessionProgress(id string) (any, bool) {
	p, ok := f[id]
	return p, ok
}

func TestSessionProgressRoute(t *testing.T) {
	cases := []struct {
		name     string
		sessions Sessions
		id       string
		status   int
		body     string
	}{
		{"known plan", fakeSessions{"plan-1.1": map[string]int{"done": 3}}, "plan-1.1", 200, `{"done":3}`},
		{"unknown plan", fakeSessions{}, "plan-9.9", 404, `no prefetch session`},
		{"no prefetcher", nil, "plan-1.1", 501, `does not prefetch`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, Config{}, execResult(), func(d *Deps) {
				if tc.sessions != nil {
					d.Sessions = tc.sessions
				}
			})
			r := h.do("GET", "/v1/prefetch/sessions/"+tc.id, nil)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.body) || r.ctype != "application/json" {
				t.Fatalf("GET session: %d %q %s", r.status, r.ctype, r.body)
			}
		})
	}
}

// A body the surface may not read is refused from the headers alone: the
// clients below send headers and one body byte, so an answer that waited
// for the body would never come.
func TestRefusedBeforeTheBody(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		length int
		auth   string
		status int
		reason string
	}{
		{name: "plan over its limit", path: "/v2/prefetch-plan", length: 15 << 20, auth: "Bearer s3cret", status: 413, reason: "too_large"},
		{name: "timeline over its limit", path: "/v1/build-timelines", length: 9 << 20, auth: "Bearer s3cret", status: 413, reason: "too_large"},
		{name: "no token", path: "/v2/prefetch-plan", length: 1 << 20, status: 401, reason: "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarnessWith(t, Config{Token: "s3cret"}, execResult(), func(d *Deps) { d.Timelines = &fakeRelay{status: 200} })
			hdr := []string{"Content-Encoding", "zstd", "Content-Type", "application/json"}
			if tt.auth != "" {
				hdr = append(hdr, "Authorization", tt.auth)
			}
			httpservetest.Refused(t, h.dial, tt.path, tt.length, tt.status, hdr...)
			if got := counterBy(t, h.reg, "kache_sidecar_http_requests_refused_total", "reason", tt.reason); got != 1 {
				t.Errorf("refused{%s} = %v", tt.reason, got)
			}
			if h.plan.calls() != 0 {
				t.Error("planned a refused request")
			}
		})
	}
}

// An answer the planner hands over with its tail encoded is sent as head
// plus that tail: the same bytes as encoding it whole.
func TestPlanWithEncodedTail(t *testing.T) {
	res := execResult()
	tail, err := res.Plan.AppendTail(nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Tail = tail
	h := newHarness(t, Config{}, res, nil)
	r := h.do("POST", "/v2/prefetch-plan", []byte(kacheIntent), "Content-Type", "application/json")
	wantPlan := execResult().Plan
	wantPlan.PlanID = "plan-1.1"
	want, _ := wantPlan.AppendJSON(nil)
	if r.status != 200 || !bytes.Equal(r.body, want) {
		t.Errorf("got %d %s\nwant %s", r.status, r.body, want)
	}
}
