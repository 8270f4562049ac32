package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
)

// The plan surface under a fleet's load (issue 12): the real handler and
// planning chain, hints warm, over fasthttp's in-memory listener. Compare
// the "hints" case with "fixed", whose planner hands back a ready answer of
// the same size (decoding the intent and encoding the reply are all that is
// left), within one run: on a shared machine only the ratio means much.
//
//	go test -run '^$' -bench PlanSurface -benchmem ./sidecar/internal/api/

// benchIntents are workspaces of 100 to 500 packages, in kache's wire shape,
// as e2e/load_test.go's.
func benchIntents() [][]byte {
	var out [][]byte
	for n, size := range []int{100, 180, 260, 320, 420, 500} {
		in := wire.BuildIntent{CargoLockDeps: []wire.LockDep{}}
		for i := range size {
			in.CrateNames = append(in.CrateNames, fmt.Sprintf("crate-%03d", (n*37+i)%320))
		}
		b, _ := json.Marshal(in)
		out = append(out, b)
	}
	return out
}

// benchCentral plans one candidate per crate name, the same keys for every
// profile (central knows no key's profile), as the load scenario's central.
type benchCentral struct{ calls atomic.Int64 }

func (c *benchCentral) Plan(_ context.Context, in *wire.BuildIntent) (wire.PrefetchPlan, error) {
	c.calls.Add(1)
	return benchPlan(in.CrateNames), nil
}

func benchPlan(names []string) wire.PrefetchPlan {
	p := wire.PrefetchPlan{PlanID: "central-1", Planner: "kache-planner", Disposition: wire.Execute}
	for i, n := range slices.Compact(slices.Clone(names)) {
		crate := strings.ReplaceAll(n, "-", "_")
		sum := sha256.Sum256([]byte(crate))
		di := uint32(i)
		p.Candidates = append(p.Candidates, wire.PrefetchCandidate{CacheKey: hex.EncodeToString(sum[:]), CrateName: crate,
			CompileTimeMs: uint64(200 + i*13), SizeBytes: uint64(16<<10 + i*997), Source: wire.SourceShard, DemandIndex: &di})
	}
	return p
}

// benchSurface is a server on an in-memory listener and a client of it.
type benchSurface struct {
	srv    *Server
	client *fasthttp.Client
}

func newBenchSurface(b *testing.B, p Planner, pf Prefetcher) *benchSurface {
	b.Helper()
	reg := prometheus.NewRegistry()
	deps := Deps{Planner: p, Registerer: reg, Gatherer: reg}
	if pf != nil {
		deps.Prefetcher = pf
	}
	srv, err := New(Config{Version: "bench"}, deps)
	if err != nil {
		b.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		ln.Close()
		<-done
	})
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConnsPerHost: 1024, MaxResponseBodySize: 16 << 20}
	return &benchSurface{srv: srv, client: client}
}

func (s *benchSurface) post(req *fasthttp.Request, resp *fasthttp.Response, body []byte) error {
	req.Reset()
	req.SetRequestURI("http://sidecar/v2/prefetch-plan")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(body)
	if err := s.client.Do(req, resp); err != nil {
		return err
	}
	if resp.StatusCode() != 200 {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
	}
	return nil
}

// realPlanner is the sidecar's chain as serve builds it with an S3 surface
// (plans split by profile), over a hint database in dir, warmed with every
// intent.
func realPlanner(b *testing.B, intents [][]byte) (*planner.Planner, *benchCentral) {
	b.Helper()
	h, err := hints.Open(b.TempDir(), hints.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := &benchCentral{}
	p, err := planner.New(planner.Config{Name: "kache-sidecar", Runner: &wire.RunnerContext{Repository: "acme/app"},
		Target: "x86_64-unknown-linux-gnu", ObservesReads: true}, planner.Deps{Hints: h, Central: c})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = p.Stop(context.Background())
		_ = h.Close()
	})
	for _, body := range intents {
		var in wire.BuildIntent
		if err := json.Unmarshal(body, &in); err != nil {
			b.Fatal(err)
		}
		if r := p.Plan(context.Background(), &in); r.Source != planner.SourceCentral {
			b.Fatalf("warm-up answered from %s", r.Source)
		}
	}
	// Hints are stored off the answer path.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if n, _ := h.Stats(); n == 2*len(intents) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("hints not stored")
		}
		time.Sleep(time.Millisecond)
	}
	return p, c
}

// fixedPlanner hands back a ready answer: the floor of the surface.
type fixedPlanner struct{ res planner.Result }

func (f fixedPlanner) Plan(_ context.Context, in *wire.BuildIntent) planner.Result {
	r := f.res
	r.Intent = in
	return r
}

func (fixedPlanner) Name() string { return "kache-sidecar" }

func fixedAnswer(intents [][]byte) planner.Result {
	var in wire.BuildIntent
	_ = json.Unmarshal(intents[2], &in) // the median workspace
	return planner.Result{Plan: benchPlan(in.CrateNames), Source: planner.SourceHint}
}

// countingPrefetcher takes plans and drops them.
type countingPrefetcher struct{ n atomic.Int64 }

func (c *countingPrefetcher) Submit(planner.Result) { c.n.Add(1) }

// BenchmarkPlanSurface: 1 client (the CPU of one plan: ns/op) and 200
// concurrent clients (SetParallelism) over the in-memory listener; reports
// plans/s, the p99 and bytes allocated per plan (client and server both:
// fasthttp's client reuses its buffers, so nearly all are the server's).
func BenchmarkPlanSurface(b *testing.B) {
	intents := benchIntents()
	cases := []struct {
		name string
		plan func(*testing.B) Planner
	}{
		{"fixed", func(*testing.B) Planner { return fixedPlanner{fixedAnswer(intents)} }},
		{"hints", func(b *testing.B) Planner { p, _ := realPlanner(b, intents); return p }},
	}
	for _, tc := range cases {
		for _, clients := range []int{1, 200} {
			b.Run(fmt.Sprintf("%s/clients=%d", tc.name, clients), func(b *testing.B) {
				benchSurfaceRun(b, tc.plan(b), intents, clients)
			})
		}
	}
}

func benchSurfaceRun(b *testing.B, p Planner, intents [][]byte, clients int) {
	s := newBenchSurface(b, p, &countingPrefetcher{})
	var (
		mu    sync.Mutex
		lat   []time.Duration
		seq   atomic.Int64
		fails atomic.Int64
	)
	procs := runtime.GOMAXPROCS(0)
	if clients < procs {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(clients))
	}
	b.SetParallelism(max(1, clients/procs))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		mine := make([]time.Duration, 0, 1024)
		for pb.Next() {
			body := intents[int(seq.Add(1))%len(intents)]
			t0 := time.Now()
			if err := s.post(req, resp, body); err != nil {
				fails.Add(1)
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	took := time.Since(start)
	b.StopTimer()
	if n := fails.Load(); n > 0 {
		b.Fatalf("%d failed requests", n)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/took.Seconds(), "plans/s")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99_ms")
}
