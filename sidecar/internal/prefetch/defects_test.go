package prefetch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// Regression tests for the defects of issue 14.

// waitJoined waits until n requests wait on r's download.
func waitJoined(t *testing.T, e *Engine, r store.Ref, n int) {
	t.Helper()
	waitFor(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		f := e.flights[r]
		return f != nil && f.waiters == n
	})
}

// recv returns what errc delivers, failing the test if nothing comes.
func recv(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("request did not return in 10 s")
		return nil
	}
}

func packRefOf(c wire.PrefetchCandidate) store.Ref {
	return store.Ref{Kind: store.Pack, Crate: c.CrateName, CacheKey: c.CacheKey}
}

// A demand joining a prefetch that its session's byte budget refuses still
// gets the object, from the same GET, and the session is not charged.
func TestDemandJoiningOverBudgetPrefetchGetsObject(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[key] = gate
	e, st, _ := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 0)
	s := e.Submit(Plan{Candidates: cands, Budget: Budget{MaxBytes: 1000}})
	ref := packRefOf(cands[0])
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	errc := make(chan error, 1)
	go func() { errc <- e.Demand(context.Background(), ref) }()
	waitJoined(t, e, ref, 2)
	close(gate)
	if err := recv(t, errc); err != nil {
		t.Fatalf("demand joining an over-budget prefetch: %v", err)
	}
	wait(t, s)
	if !st.Has(ref) || f.openCount(key) != 1 {
		t.Fatalf("stored=%v after %d GETs", st.Has(ref), f.openCount(key))
	}
	if p := e.Progress(s); p.Bytes > 1000 || p.Present != 1 {
		t.Fatalf("session progress %+v", p)
	}
}

// One requester giving up does not fail the others sharing its download.
func TestCancelledDemandDoesNotFailItsJoiners(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[key] = gate
	e, st, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	ref := packRefOf(cands[0])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- e.Demand(ctx, ref) }()
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	second := make(chan error, 1)
	go func() { second <- e.Demand(context.Background(), ref) }()
	waitJoined(t, e, ref, 2)
	cancel()
	if err := recv(t, first); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled demand: %v", err)
	}
	close(gate)
	if err := recv(t, second); err != nil {
		t.Fatalf("joiner of a cancelled demand: %v", err)
	}
	if !st.Has(ref) || f.openCount(key) != 1 {
		t.Fatalf("stored=%v after %d GETs", st.Has(ref), f.openCount(key))
	}
}

// A prefetch waits for its download as long as its session wants it: a
// demand joining and leaving does not cancel it.
func TestSessionKeepsDownloadAfterDemandLeaves(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[key] = gate
	e, st, _ := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 0)
	s := e.Submit(Plan{Candidates: cands})
	ref := packRefOf(cands[0])
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.Demand(ctx, ref) }()
	waitJoined(t, e, ref, 2)
	cancel()
	if err := recv(t, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled demand: %v", err)
	}
	close(gate)
	wait(t, s)
	if p := e.Progress(s); p.Fetched != 1 || !st.Has(ref) || f.openCount(key) != 1 {
		t.Fatalf("stored=%v after %d GETs, progress %+v", st.Has(ref), f.openCount(key), p)
	}
}

// When its last requester leaves, a download is cancelled.
func TestAbandonedDownloadIsCancelled(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	f.gate[key] = make(chan struct{}) // never opens: only a cancel ends the GET
	e, _, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.Demand(ctx, packRefOf(cands[0])) }()
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	cancel()
	if err := recv(t, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled demand: %v", err)
	}
	waitFor(t, func() bool { return f.inflight.Load() == 0 })
}

// Many callers demanding one object at once cost one GET.
func TestConcurrentDemandsShareOneGET(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[key] = gate
	e, st, _ := newEngine(t, Config{Concurrency: 1, DemandConcurrency: 1}, f, 0)
	ref := packRefOf(cands[0])
	const n = 16
	errc := make(chan error, n)
	for range n {
		go func() { errc <- e.Demand(context.Background(), ref) }()
	}
	waitJoined(t, e, ref, n)
	close(gate)
	for range n {
		if err := recv(t, errc); err != nil {
			t.Fatal(err)
		}
	}
	if !st.Has(ref) || f.openCount(key) != 1 {
		t.Fatalf("stored=%v after %d GETs", st.Has(ref), f.openCount(key))
	}
}

// Stop cancels a demand download and waits for it, so the store is never
// closed under it.
func TestStopCancelsAndWaitsForDemand(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[key] = gate
	t.Cleanup(func() { close(gate) })
	e, _, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	errc := make(chan error, 1)
	go func() { errc <- e.Demand(context.Background(), packRefOf(cands[0])) }()
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.inflight.Load(); n != 0 {
		t.Fatalf("Stop returned with %d GETs running", n)
	}
	if err := recv(t, errc); !errors.Is(err, ErrStopped) {
		t.Fatalf("demand cut by Stop: %v", err)
	}
}

func TestDemandAfterStop(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{5000})
	e, _, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Demand(context.Background(), packRefOf(cands[0])); !errors.Is(err, ErrStopped) {
		t.Fatalf("demand after Stop: %v", err)
	}
	if n := f.openCount(layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)); n != 0 {
		t.Fatalf("%d GETs after Stop", n)
	}
}

// A session queued behind a blocked one still stops at its deadline.
func TestQueuedSessionMeetsItsDeadline(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100, 100})
	blocked := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	gate := make(chan struct{})
	f.gate[blocked] = gate
	e, _, _ := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 0)
	first := e.Submit(Plan{Candidates: cands[:1]})
	waitFor(t, func() bool { return f.openCount(blocked) > 0 })
	queued := e.Submit(Plan{Candidates: cands[1:], Budget: Budget{Deadline: 50 * time.Millisecond}})
	select {
	case <-queued.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("queued session not done at its deadline")
	}
	if p := e.Progress(queued); p.StopReason != "deadline" || p.Skipped != 1 || !p.Finished {
		t.Fatalf("queued session progress %+v", p)
	}
	select {
	case <-first.Done():
		t.Fatal("blocked session done")
	default:
	}
	close(gate)
	wait(t, first)
	if n := f.openCount(layout.PackKey("artifacts", cands[1].CrateName, cands[1].CacheKey)); n != 0 {
		t.Fatalf("expired session's pack fetched (%d GETs)", n)
	}
}

// A Stop that runs out of time still closes and reports open sessions, and
// then returns its error.
func TestStopClosesSessionsWhenItTimesOut(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100})
	key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
	hang := make(chan struct{})
	f.stall[key] = hang
	e, _, rec := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 0)
	t.Cleanup(func() { close(hang) }) // before the engine's own Stop
	s := e.Submit(Plan{ID: "plan-stuck", Candidates: cands})
	waitFor(t, func() bool { return f.openCount(key) > 0 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with an expired context: %v", err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("session left open")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reports) != 1 || rec.reports[0].Reason != "shutdown" || rec.reports[0].Plan.ID != "plan-stuck" {
		t.Fatalf("reports %+v", rec.reports)
	}
}

// A crate named "." is refused before any request.
func TestDotCrateCostsNoRequest(t *testing.T) {
	f := newFake()
	k := hexKey(3)
	key := layout.PackKey("artifacts", ".", k)
	f.put(key, pack(10))
	e, _, _ := newEngine(t, Config{Concurrency: 1, SkipEntryManifests: true}, f, 0)
	s := e.Submit(Plan{Candidates: []wire.PrefetchCandidate{{CacheKey: k, CrateName: "."}}})
	wait(t, s)
	if p := e.Progress(s); p.Keys != 0 {
		t.Fatalf("progress %+v", p)
	}
	if err := e.Demand(context.Background(), store.Ref{Crate: ".", CacheKey: k}); !errors.Is(err, store.ErrInvalidRef) {
		t.Fatalf("demand of crate \".\": %v", err)
	}
	if n := f.openCount(key); n != 0 {
		t.Fatalf("%d GETs for crate \".\"", n)
	}
}
