package prefetch

import (
	"testing"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// TestSizeHintsHoldBudgetAtDispatch: with size hints, candidates dispatched
// at the same moment each hold their hint, so a pack known not to fit is
// never requested even when the ones before it have not reserved yet.
func TestSizeHintsHoldBudgetAtDispatch(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100, 100, 100, 100, 100, 100})
	gate := make(chan struct{})
	for i := range cands {
		cands[i].SizeBytes = 100
		f.gate[layout.PackKey("artifacts", cands[i].CrateName, cands[i].CacheKey)] = gate
	}
	e, _, _ := newEngine(t, Config{Concurrency: 4, SkipEntryManifests: true}, f, 0)
	s := e.Submit(Plan{Candidates: cands, Budget: Budget{MaxBytes: 250}})
	waitFor(t, func() bool { return e.Progress(s).Skipped == len(cands)-2 })
	close(gate)
	wait(t, s)
	opens := 0
	for _, c := range cands {
		opens += f.openCount(layout.PackKey("artifacts", c.CrateName, c.CacheKey))
	}
	if p := e.Progress(s); p.Fetched != 2 || opens != 2 || p.Bytes != 200 {
		t.Fatalf("%d GETs, progress %+v", opens, p)
	}
}

// TestEmptyPackIsCorrupt: a pack too short to hold the zstd magic is
// refused like one with the wrong magic.
func TestEmptyPackIsCorrupt(t *testing.T) {
	for _, body := range [][]byte{{}, zstdMagic[:2]} {
		f := newFake()
		cands := seed(f, []int{len(body)})
		f.put(layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey), body)
		e, st, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
		s := e.Submit(Plan{Candidates: cands})
		wait(t, s)
		if st.Has(store.Ref{Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}) || e.Progress(s).Failed != 1 {
			t.Fatalf("%d-byte pack kept: %+v", len(body), e.Progress(s))
		}
	}
}

// TestPresentPackGetsItsEntryManifest: a pack already local without its
// entry manifest (demanded, or its manifest GET failed earlier) gets the
// manifest from the next plan that lists it.
func TestPresentPackGetsItsEntryManifest(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{300})
	e, st, _ := newEngine(t, Config{Concurrency: 1}, f, 0)
	pack := store.Ref{Kind: store.Pack, Crate: cands[0].CrateName, CacheKey: cands[0].CacheKey}
	if err := e.Demand(t.Context(), pack); err != nil {
		t.Fatal(err)
	}
	man := store.Ref{Kind: store.EntryManifest, Crate: pack.Crate, CacheKey: pack.CacheKey}
	if st.Has(man) {
		t.Fatal("demand fetched the entry manifest too")
	}
	s := e.Submit(Plan{Candidates: []wire.PrefetchCandidate{cands[0]}})
	wait(t, s)
	if p := e.Progress(s); p.Present != 1 || !st.Has(man) {
		t.Fatalf("manifest stored=%v, progress %+v", st.Has(man), p)
	}
}
