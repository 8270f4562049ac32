package prefetch

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is an in-memory bucket. gate, when set for a key, blocks its
// GET until closed; stall does the same ignoring the GET's context (a hung
// connection); breakOnce makes the first GET of a key fail mid-body.
type fakeSource struct {
	mu        sync.Mutex
	objects   map[string][]byte
	etags     map[string]string
	gate      map[string]chan struct{}
	stall     map[string]chan struct{}
	breakOnce map[string]bool
	opens     map[string]int
	inflight  atomic.Int64
	maxSeen   atomic.Int64
}

func newFake() *fakeSource {
	return &fakeSource{objects: map[string][]byte{}, etags: map[string]string{}, gate: map[string]chan struct{}{},
		stall: map[string]chan struct{}{}, breakOnce: map[string]bool{}, opens: map[string]int{}}
}

func (f *fakeSource) put(key string, data []byte) {
	sum := md5.Sum(data)
	f.objects[key] = data
	f.etags[key] = hex.EncodeToString(sum[:])
}

func (f *fakeSource) Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error) {
	f.mu.Lock()
	f.opens[key]++
	data, ok := f.objects[key]
	etag := f.etags[key] // read with the object: a test may replace both
	gate := f.gate[key]
	stall := f.stall[key]
	broken := f.breakOnce[key]
	delete(f.breakOnce, key)
	f.mu.Unlock()
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	raisePeak(&f.maxSeen, n)
	if stall != nil {
		<-stall
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, s3source.Object{}, ctx.Err()
		}
	}
	if !ok {
		return nil, s3source.Object{}, fmt.Errorf("%w: %s", s3source.ErrNotFound, key)
	}
	obj := s3source.Object{Key: key, Size: int64(len(data)), ETag: etag}
	if broken {
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[:len(data)/2]), errReader{})), obj, nil
	}
	return io.NopCloser(bytes.NewReader(data)), obj, nil
}

func (f *fakeSource) openCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens[key]
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func hexKey(i int) string { return fmt.Sprintf("%064x", i+1) }

// pack builds a pack body that starts like a zstd frame.
func pack(size int) []byte {
	b := bytes.Repeat([]byte{7}, size)
	copy(b, zstdMagic[:])
	return b
}

// seed puts n packs (with entry manifests) of the given sizes into f and
// returns the plan candidates in order.
func seed(f *fakeSource, sizes []int) []wire.PrefetchCandidate {
	var cands []wire.PrefetchCandidate
	for i, sz := range sizes {
		crate := fmt.Sprintf("crate_%d", i)
		k := hexKey(i)
		f.put(layout.PackKey("artifacts", crate, k), pack(sz))
		m, _ := json.Marshal(wire.EntryManifest{Version: 3, CacheKey: k, CrateName: crate,
			PackKey: layout.PackKey("artifacts", crate, k), PackBytes: uint64(sz)})
		f.put(layout.EntryManifestKey("artifacts", crate, k), m)
		cands = append(cands, wire.PrefetchCandidate{CacheKey: k, CrateName: crate, Source: wire.SourceShard})
	}
	return cands
}

type recorder struct {
	mu      sync.Mutex
	reports []Report
}

func (r *recorder) Report(_ context.Context, rep Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
	return nil
}

func newEngine(t *testing.T, cfg Config, f *fakeSource, storeMax int64, opts ...func(*Engine)) (*Engine, *store.Store, *recorder) {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir(), MaxBytes: storeMax, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the engine stops (cleanups run last first)
	cfg.Prefix = "artifacts"
	rec := &recorder{}
	e := New(cfg, f, st, nil, rec, nil)
	for _, o := range opts {
		o(e)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e, st, rec
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

func wait(t *testing.T, s *Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("session did not finish")
	}
}

func TestPrefetchPlanIntoStore(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100, 2000, 50, 70000, 10})
	cands = append(cands, wire.PrefetchCandidate{CacheKey: hexKey(99), CrateName: "gone"}) // 404
	e, st, _ := newEngine(t, Config{Concurrency: 3}, f, 0)
	s := e.Submit(Plan{ID: "plan-1", Candidates: cands})
	wait(t, s)
	p := e.Progress(s)
	if p.Keys != 6 || p.Fetched != 5 || p.NotFound != 1 || !p.Finished {
		t.Fatalf("progress %+v", p)
	}
	for _, c := range cands[:5] {
		for _, kind := range []store.Kind{store.Pack, store.EntryManifest} {
			if !st.Has(store.Ref{Kind: kind, Crate: c.CrateName, CacheKey: c.CacheKey}) {
				t.Errorf("%s %v not stored", c.CrateName, kind)
			}
		}
	}
	// A second plan with the same keys fetches nothing.
	s2 := e.Submit(Plan{ID: "plan-2", Candidates: cands[:5]})
	wait(t, s2)
	if p := e.Progress(s2); p.Present != 5 || p.Bytes != 0 {
		t.Fatalf("second plan progress %+v", p)
	}
}

func TestByteBudgetIsAHardCap(t *testing.T) {
	f := newFake()
	sizes := make([]int, 40)
	for i := range sizes {
		sizes[i] = 1000 + 997*(i%7)
	}
	cands := seed(f, sizes)
	const budget = 20_000
	e, _, _ := newEngine(t, Config{Concurrency: 12, SkipEntryManifests: true}, f, 0)
	s := e.Submit(Plan{Candidates: cands, Budget: Budget{MaxBytes: budget}})
	wait(t, s)
	p := e.Progress(s)
	if p.Bytes > budget {
		t.Fatalf("received %d bytes over a %d budget", p.Bytes, budget)
	}
	if p.Fetched == 0 || p.Skipped == 0 {
		t.Fatalf("want some fetched and some over budget: %+v", p)
	}
	// Every byte counted was a byte kept: nothing was fetched beyond the cap.
	var kept int64
	for i, c := range cands {
		if f.openCount(layout.PackKey("artifacts", c.CrateName, c.CacheKey)) > 0 && e.st.Has(store.Ref{Crate: c.CrateName, CacheKey: c.CacheKey}) {
			kept += int64(sizes[i])
		}
	}
	if kept != p.Bytes {
		t.Fatalf("kept %d bytes, counted %d", kept, p.Bytes)
	}
}

func TestKeyBudgetKeepsPlanOrder(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{10, 10, 10, 10, 10, 10})
	e, st, _ := newEngine(t, Config{Concurrency: 2}, f, 0)
	s := e.Submit(Plan{Candidates: cands, Budget: Budget{MaxKeys: 4}})
	wait(t, s)
	for i, c := range cands {
		has := st.Has(store.Ref{Crate: c.CrateName, CacheKey: c.CacheKey})
		if has != (i < 4) {
			t.Errorf("candidate %d stored=%v", i, has)
		}
	}
}

func TestDemandJoinsDownloadInFlight(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[key] = gate
	e, st, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	s := e.Submit(Plan{Candidates: cands})
	ref := store.Ref{Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	errc := make(chan error, 3)
	for range 3 {
		go func() { errc <- e.Demand(context.Background(), ref) }()
	}
	waitJoined(t, e, ref, 4) // the session and the three demands
	close(gate)
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	wait(t, s)
	if n := f.openCount(key); n != 1 {
		t.Fatalf("pack downloaded %d times", n)
	}
	if !st.Has(ref) {
		t.Fatal("pack not stored")
	}
}

func TestDemandJumpsTheQueue(t *testing.T) {
	f := newFake()
	cands := seed(f, make([]int, 12))
	for i := range cands {
		f.objects[layout.PackKey("artifacts", cands[i].CrateName, cands[i].CacheKey)] = pack(100)
		f.objects[layout.EntryManifestKey("artifacts", cands[i].CrateName, cands[i].CacheKey)] = nil
		delete(f.objects, layout.EntryManifestKey("artifacts", cands[i].CrateName, cands[i].CacheKey))
		f.etags[layout.PackKey("artifacts", cands[i].CrateName, cands[i].CacheKey)] = ""
	}
	// The first speculative download blocks the only worker.
	block := make(chan struct{})
	f.gate[layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)] = block
	defer close(block)
	e, st, _ := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 0)
	e.Submit(Plan{Candidates: cands})
	last := store.Ref{Crate: cands[11].CrateName, CacheKey: cands[11].CacheKey}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Demand(ctx, last); err != nil {
		t.Fatalf("demand behind a blocked queue: %v", err)
	}
	if !st.Has(last) {
		t.Fatal("demanded pack not stored")
	}
	if n := f.openCount(layout.PackKey("artifacts", cands[5].CrateName, cands[5].CacheKey)); n != 0 {
		t.Fatalf("queue advanced past the blocked worker (%d)", n)
	}
}

func TestRetryAfterBrokenTransfer(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{4096})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	f.breakOnce[key] = true
	e, st, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	s := e.Submit(Plan{Candidates: cands})
	wait(t, s)
	if f.openCount(key) != 2 || !st.Has(store.Ref{Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}) {
		t.Fatalf("opens=%d stored=%v", f.openCount(key), st.Has(store.Ref{Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}))
	}
}

func TestCorruptObjectsAreNotKept(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(f *fakeSource, packKey string)
	}{
		{"size differs from entry manifest", func(f *fakeSource, k string) { f.objects[k] = pack(10); f.etags[k] = "" }},
		{"not a zstd frame", func(f *fakeSource, k string) { f.put(k, bytes.Repeat([]byte("x"), 300)) }},
		{"etag mismatch", func(f *fakeSource, k string) { f.etags[k] = strings.Repeat("f", 32) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			cands := seed(f, []int{300})
			k := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
			tc.mutate(f, k)
			e, st, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
			s := e.Submit(Plan{Candidates: cands})
			wait(t, s)
			if p := e.Progress(s); p.Failed != 1 {
				t.Fatalf("progress %+v", p)
			}
			if st.Has(store.Ref{Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}) {
				t.Fatal("corrupt pack kept")
			}
		})
	}
}

func TestInvalidCandidatesAreDropped(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{10})
	cands = append(cands,
		wire.PrefetchCandidate{CacheKey: hexKey(1), CrateName: "../../etc"},
		wire.PrefetchCandidate{CacheKey: "../" + hexKey(2)[3:], CrateName: "serde"},
		wire.PrefetchCandidate{CacheKey: "serde-key", CrateName: "serde"})
	e, _, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	s := e.Submit(Plan{Candidates: cands})
	wait(t, s)
	if p := e.Progress(s); p.Keys != 1 || p.Fetched != 1 {
		t.Fatalf("progress %+v", p)
	}
	if err := e.Demand(context.Background(), store.Ref{Crate: "..", CacheKey: hexKey(1)}); !errors.Is(err, store.ErrInvalidRef) {
		t.Fatalf("demand of a traversal ref: %v", err)
	}
}

func TestOutcomeReport(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{10, 20, 30})
	e, _, rec := newEngine(t, Config{Concurrency: 1, SessionIdle: time.Hour, DemandObserved: true}, f, 0)
	s := e.Submit(Plan{ID: "plan-7", Source: "central", Candidates: cands})
	wait(t, s)
	// The build uses the first candidate (already local) and a key the plan
	// did not have.
	if err := e.Demand(context.Background(), store.Ref{Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}); err != nil {
		t.Fatal(err)
	}
	if err := e.Demand(context.Background(), store.Ref{Crate: "other", CacheKey: hexKey(50)}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("demand of a missing key: %v", err)
	}
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rec.reports) != 1 {
		t.Fatalf("%d reports", len(rec.reports))
	}
	r := rec.reports[0]
	if r.Fetched != 3 || r.OnTime != 1 || r.Unused != 2 || r.Missed != 1 || r.Late != 0 {
		t.Fatalf("report %+v", r)
	}
	tl := r.Timeline
	if tl.Summary == nil || tl.Summary.PlanID != "plan-7" || tl.Summary.DemandedKeys != 2 || tl.ClientRecordID == "" || len(tl.Transfers) != 3 {
		t.Fatalf("timeline %+v", tl)
	}
	if tl.Transfers[0].Outcome != "used_on_time/fetched" || tl.Transfers[0].Prefetch.CandidateSource != "shard" {
		t.Fatalf("first transfer %+v", tl.Transfers[0])
	}
}

func TestConcurrencyBound(t *testing.T) {
	f := newFake()
	cands := seed(f, make([]int, 60))
	for i := range cands {
		k := layout.PackKey("artifacts", cands[i].CrateName, cands[i].CacheKey)
		f.put(k, pack(64))
	}
	e, _, _ := newEngine(t, Config{Concurrency: 5, SkipEntryManifests: true}, f, 0)
	wait(t, e.Submit(Plan{Candidates: cands}))
	if m := f.maxSeen.Load(); m > 5 {
		t.Fatalf("%d downloads at once with concurrency 5", m)
	}
}

func TestDeadlineStopsNewDownloads(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{10, 10, 10})
	start := time.Unix(1_800_000_000, 0)
	now := start
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, st, rec := newEngine(t, Config{Concurrency: 1, Clock: clock}, f, 0)
	gate := make(chan struct{})
	f.gate[layout.EntryManifestKey("artifacts", cands[0].CrateName, cands[0].CacheKey)] = gate
	s := e.Submit(Plan{Candidates: cands, Budget: Budget{Deadline: time.Minute}})
	waitFor(t, func() bool {
		return f.openCount(layout.EntryManifestKey("artifacts", cands[0].CrateName, cands[0].CacheKey)) > 0
	})
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	close(gate)
	wait(t, s)
	p := e.Progress(s)
	if p.StopReason != "deadline" || p.Fetched != 1 || p.Skipped != 2 {
		t.Fatalf("progress %+v", p)
	}
	if st.Has(store.Ref{Crate: cands[1].CrateName, CacheKey: cands[1].CacheKey}) {
		t.Fatal("fetched after the deadline")
	}
	// The outcome is dated by the engine's clock, not the host's.
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rec.reports) != 1 || !rec.reports[0].StartedAt.Equal(start) || rec.reports[0].Timeline.StartedAtMs != uint64(start.UnixMilli()) {
		t.Fatalf("reports %+v", rec.reports)
	}
}

func TestDiskBudgetStopsPrefetch(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{600, 600, 600})
	e, st, _ := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 500)
	s := e.Submit(Plan{Candidates: cands})
	wait(t, s)
	if p := e.Progress(s); p.StopReason != "disk_full" || p.Fetched != 0 {
		t.Fatalf("progress %+v", p)
	}
	if st.Stats().Bytes != 0 {
		t.Fatalf("bytes kept: %+v", st.Stats())
	}
}

// Without a surface that sees the build's reads, a report says what was
// fetched and claims nothing about use.
func TestOutcomeWithoutDemandObservation(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{10, 20})
	e, _, rec := newEngine(t, Config{Concurrency: 1, SessionIdle: time.Hour}, f, 0)
	wait(t, e.Submit(Plan{ID: "plan-8", Candidates: cands}))
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := rec.reports[0]
	if r.Fetched != 2 || r.Unused != 0 || r.Missed != 0 || r.Timeline.Transfers[0].Outcome != "not_observed/fetched" {
		t.Fatalf("report %+v, first transfer %+v", r, r.Timeline.Transfers[0])
	}
}

// raisePeak makes peak at least v, for counters of things at once.
func raisePeak(peak *atomic.Int64, v int64) {
	for {
		old := peak.Load()
		if v <= old || peak.CompareAndSwap(old, v) {
			return
		}
	}
}
