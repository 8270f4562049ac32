package prefetch

import (
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// bodyGates is a fakeSource whose pack bodies can be held: a body's first
// Read blocks until its key's gate closes. It records the order bodies
// started streaming and how many streamed at once.
type bodyGates struct {
	*fakeSource
	mu      sync.Mutex
	gates   map[string]chan struct{}
	started []string
	running atomic.Int64
	maxRun  atomic.Int64
}

func newBodyGates() *bodyGates {
	return &bodyGates{fakeSource: newFake(), gates: map[string]chan struct{}{}}
}

func (b *bodyGates) hold(key string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := make(chan struct{})
	b.gates[key] = g
	return g
}

func (b *bodyGates) order() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.started)
}

func (b *bodyGates) Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error) {
	rc, obj, err := b.fakeSource.Open(ctx, key)
	if err != nil {
		return nil, obj, err
	}
	b.mu.Lock()
	g := b.gates[key]
	b.mu.Unlock()
	return &laneBody{ReadCloser: rc, src: b, key: key, gate: g, ctx: ctx, left: obj.Size}, obj, nil
}

type laneBody struct {
	io.ReadCloser
	src     *bodyGates
	key     string
	gate    chan struct{}
	ctx     context.Context
	left    int64 // bytes not read yet
	started bool
}

func (g *laneBody) Read(p []byte) (int, error) {
	if !g.started {
		g.started = true
		g.src.mu.Lock()
		g.src.started = append(g.src.started, g.key)
		g.src.mu.Unlock()
		raisePeak(&g.src.maxRun, g.src.running.Add(1))
		if g.gate != nil {
			select {
			case <-g.gate:
			case <-g.ctx.Done():
				return 0, g.ctx.Err()
			}
		}
	}
	n, err := g.ReadCloser.Read(p)
	if g.left -= int64(n); g.left == 0 {
		g.done()
	}
	return n, err
}

// done ends the body's streaming, once.
func (g *laneBody) done() {
	if g.started && g.left >= 0 {
		g.left = -1
		g.src.running.Add(-1)
	}
}

func (g *laneBody) Close() error {
	g.done()
	return g.ReadCloser.Close()
}

func gatedEngine(t *testing.T, cfg Config, src *bodyGates) (*Engine, *store.Store) {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Prefix = "artifacts"
	cfg.SkipEntryManifests = true
	e := New(cfg, src, st, nil, &recorder{}, nil)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e, st
}

func packKeys(n int) []string {
	var keys []string
	for i := range n {
		keys = append(keys, layout.PackKey("artifacts", "crate_"+string(rune('0'+i)), hexKey(i)))
	}
	return keys
}

// laneWaiting reports whether n bodies wait for a lane.
func laneWaiting(e *Engine, n int) func() bool {
	return func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.laneWait) == n
	}
}

// lookaheadState holds the first body on the only lane and lets the
// responses of the others in once it streams: n-1 bodies then wait.
func lookaheadState(t *testing.T, n int) (*Engine, *store.Store, *bodyGates, *Session, []string, chan struct{}) {
	t.Helper()
	src := newBodyGates()
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = 1000
	}
	cands := seed(src.fakeSource, sizes)
	keys := packKeys(n)
	g0 := src.hold(keys[0])
	resp := make(chan struct{})
	for _, k := range keys[1:] {
		src.gate[k] = resp
	}
	e, st := gatedEngine(t, Config{Concurrency: 1, Lookahead: n - 1}, src)
	s := e.Submit(Plan{Candidates: cands})
	waitFor(t, func() bool { return len(src.order()) == 1 })
	// Sent while the lane streams the first body: the look-ahead.
	for _, k := range keys[1:] {
		waitFor(t, func() bool { return src.openCount(k) == 1 })
	}
	close(resp)
	waitFor(t, laneWaiting(e, n-1))
	return e, st, src, s, keys, g0
}

// With a look-ahead the next candidates' GETs are sent while the only lane
// streams, and their bodies follow one at a time: the request latency
// overlaps the body before it, not the bandwidth.
func TestLookaheadSendsRequestsBeforeALaneFrees(t *testing.T) {
	e, st, src, s, keys, g0 := lookaheadState(t, 3)
	if got := src.order(); !slices.Equal(got, keys[:1]) {
		t.Fatalf("bodies streaming while the lane is busy: %v", got)
	}
	// Only the streaming body holds store space; the waiting ones none.
	if r := st.Stats().ReservedBytes; r != 1000 {
		t.Fatalf("%d bytes reserved in the store while one 1000-byte body streams", r)
	}
	close(g0)
	wait(t, s)
	if got := src.order(); !slices.Equal(got, keys) {
		t.Fatalf("bodies streamed in order %v, want %v", got, keys)
	}
	if m := src.maxRun.Load(); m != 1 {
		t.Fatalf("%d bodies at once over 1 lane", m)
	}
	if p := e.Progress(s); p.Fetched != 3 || st.Stats().ReservedBytes != 0 {
		t.Fatalf("progress %+v, store %+v", p, st.Stats())
	}
}

// Waiting bodies get the lane in plan order, not in the order their
// responses came: the second candidate's response comes last and still
// streams first.
func TestWaitingBodiesStreamInPlanOrder(t *testing.T) {
	src := newBodyGates()
	cands := seed(src.fakeSource, []int{1000, 1000, 1000, 1000})
	keys := packKeys(4)
	g0 := src.hold(keys[0])
	early, late := make(chan struct{}), make(chan struct{})
	src.gate[keys[1]], src.gate[keys[2]], src.gate[keys[3]] = late, early, early
	e, _ := gatedEngine(t, Config{Concurrency: 1, Lookahead: 3}, src)
	s := e.Submit(Plan{Candidates: cands})
	waitFor(t, func() bool { return len(src.order()) == 1 })
	close(early)
	waitFor(t, laneWaiting(e, 2))
	close(late)
	waitFor(t, laneWaiting(e, 3))
	close(g0)
	wait(t, s)
	if got := src.order(); !slices.Equal(got, keys) {
		t.Fatalf("bodies streamed in order %v, want plan order %v", got, keys)
	}
}

// A build asking for an object whose body waits for a lane does not wait
// behind the plan: its body streams at once.
func TestDemandedBodyDoesNotWaitForALane(t *testing.T) {
	e, st, _, s, keys, g0 := lookaheadState(t, 2)
	r := store.Ref{Kind: store.Pack, Crate: "crate_1", CacheKey: hexKey(1)}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := e.Demand(ctx, r); err != nil {
		t.Fatal(err)
	}
	if !st.Has(r) || st.Has(store.Ref{Kind: store.Pack, Crate: "crate_0", CacheKey: hexKey(0)}) {
		t.Fatalf("the demanded body (%s) did not overtake the busy lane", keys[1])
	}
	close(g0)
	wait(t, s)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.idleLanes != 1 || len(e.laneWait) != 0 {
		t.Fatalf("after the plan: %d lanes idle, %d bodies waiting", e.idleLanes, len(e.laneWait))
	}
}

// Without a look-ahead a GET is sent only when a lane is free: 2 lanes, 2
// requests, whatever the plan holds.
func TestNoLookaheadSendsNoMoreThanTheLanes(t *testing.T) {
	src := newBodyGates()
	cands := seed(src.fakeSource, []int{1000, 1000, 1000, 1000})
	keys := packKeys(4)
	g0, g1 := src.hold(keys[0]), src.hold(keys[1])
	e, _ := gatedEngine(t, Config{Concurrency: 2}, src)
	s := e.Submit(Plan{Candidates: cands})
	waitFor(t, func() bool { return len(src.order()) == 2 })
	if n := src.openCount(keys[2]) + src.openCount(keys[3]); n != 0 {
		t.Fatalf("%d GETs sent beyond the 2 lanes", n)
	}
	close(g0)
	close(g1)
	wait(t, s)
}

// Stop ends bodies waiting for a lane and gives every lane back.
func TestStopEndsBodiesWaitingForALane(t *testing.T) {
	e, st, _, _, _, _ := lookaheadState(t, 3)
	if err := e.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.idleLanes != 1 || len(e.laneWait) != 0 || len(e.flights) != 0 {
		t.Fatalf("after Stop: %d lanes idle, %d waiting, %d flights", e.idleLanes, len(e.laneWait), len(e.flights))
	}
	if st.Stats().ReservedBytes != 0 {
		t.Fatalf("partial objects kept: %+v", st.Stats())
	}
}
