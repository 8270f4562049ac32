package prefetch

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// missingRecorder records reports; while block is open, reports wait on it.
type missingRecorder struct {
	mu      sync.Mutex
	reports [][]wire.MissingKey
	block   chan struct{}
}

func (r *missingRecorder) ReportMissing(ctx context.Context, keys []wire.MissingKey) (wire.MissingKeysResult, error) {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return wire.MissingKeysResult{}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, slices.Clone(keys))
	return wire.MissingKeysResult{Dropped: len(keys)}, nil
}

func (r *missingRecorder) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rep := range r.reports {
		for _, k := range rep {
			out = append(out, k.CrateName+"/"+k.CacheKey)
		}
	}
	slices.Sort(out)
	return out
}

// TestReportsPlannedKeysNotFound: a planned key whose pack or entry
// manifest is gone is reported once, in one batch; present keys are not.
func TestReportsPlannedKeysNotFound(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100, 200, 300, 400})
	delete(f.objects, layout.PackKey("artifacts", "crate_1", hexKey(1)))
	delete(f.objects, layout.EntryManifestKey("artifacts", "crate_2", hexKey(2)))
	cands = append(cands, wire.PrefetchCandidate{CacheKey: hexKey(9), CrateName: "gone"})
	rec := &missingRecorder{}
	e, _, _ := newEngine(t, Config{Concurrency: 2, Missing: rec}, f, 0, func(e *Engine) { e.missing.delay = 50 * time.Millisecond })
	wait(t, e.Submit(Plan{ID: "plan-1", Candidates: cands}))
	want := []string{"crate_1/" + hexKey(1), "crate_2/" + hexKey(2), "gone/" + hexKey(9)}
	waitFor(t, func() bool { return len(rec.keys()) == len(want) })
	if got := rec.keys(); !slices.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	if len(rec.reports) != 1 {
		t.Fatalf("%d reports, want the plan's 404s in one", len(rec.reports))
	}
	// The same plan again: nothing new to report.
	wait(t, e.Submit(Plan{ID: "plan-2", Candidates: cands}))
	time.Sleep(200 * time.Millisecond)
	if got := rec.keys(); len(got) != len(want) {
		t.Fatalf("reported again: %v", got)
	}
}

// TestMissingReportNeverBlocksDownloads: with central stuck, sessions still
// finish, and Stop sends what is left within its bound.
func TestMissingReportNeverBlocksDownloads(t *testing.T) {
	f := newFake()
	rec := &missingRecorder{block: make(chan struct{})}
	e, _, _ := newEngine(t, Config{Concurrency: 2, Missing: rec}, f, 0, func(e *Engine) { e.missing.delay = time.Millisecond })
	for i := range 3 {
		var cands []wire.PrefetchCandidate
		for j := range 2 * wire.MaxMissingKeys {
			cands = append(cands, wire.PrefetchCandidate{CacheKey: hexKey(i*10_000 + j), CrateName: "gone"})
		}
		wait(t, e.Submit(Plan{ID: "plan", Candidates: cands}))
	}
	close(rec.block)
	start := time.Now()
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > missingFinalTimeout+2*time.Second {
		t.Fatalf("stop took %s", took)
	}
	// The queue's worth plus the report that was waiting on central; the
	// rest of the 1536 were dropped.
	if n := len(rec.keys()); n < missingQueueLen || n > missingQueueLen+wire.MaxMissingKeys {
		t.Fatalf("%d keys reported, want the queue's %d and at most one report more", n, missingQueueLen)
	}
}
