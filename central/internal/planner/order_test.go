package planner

import (
	"slices"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestOrderByDemand(t *testing.T) {
	const mib = 1 << 20
	cand := func(crate string, k int, size uint64) wire.PrefetchCandidate {
		return wire.PrefetchCandidate{CacheKey: key(k), CrateName: crate, SizeBytes: size}
	}
	asked := func(crate string, ms uint64) store.CrateDemand {
		return store.CrateDemand{Crate: crate, DemandMs: ms, Builds: 1}
	}
	tests := []struct {
		name   string
		cands  []wire.PrefetchCandidate // in dispatch order
		demand []store.CrateDemand
		crates []string // the intent's crate_names
		want   []int    // keys, in plan order
		demote int
	}{
		{
			name:   "no timelines keep the dispatch order",
			cands:  []wire.PrefetchCandidate{cand("a", 1, 1000), cand("b", 2, 1000)},
			crates: []string{"a", "b"},
			want:   []int{1, 2},
		},
		{
			name:   "asked for earlier goes first",
			cands:  []wire.PrefetchCandidate{cand("a", 1, 1000), cand("b", 2, 1000)},
			demand: []store.CrateDemand{asked("a", 900), asked("b", 100)},
			crates: []string{"a", "b"},
			want:   []int{2, 1},
		},
		{
			// 20 MiB takes a second at 20 MiB/s: it must start before a
			// small crate asked for 500 ms earlier.
			name:   "a big artifact starts earlier",
			cands:  []wire.PrefetchCandidate{cand("small", 1, 1000), cand("big", 2, 20*mib)},
			demand: []store.CrateDemand{asked("small", 100), asked("big", 600)},
			crates: []string{"small", "big"},
			want:   []int{2, 1},
		},
		{
			// "new" was never asked for: it follows "b" in crate_names,
			// so it is predicted at b's time, after "a".
			name:   "an unseen crate takes the time of the crate before it",
			cands:  []wire.PrefetchCandidate{cand("new", 3, 1000), cand("b", 2, 1000), cand("a", 1, 1000)},
			demand: []store.CrateDemand{asked("a", 100), asked("b", 700)},
			crates: []string{"a", "b", "new"},
			want:   []int{1, 3, 2},
		},
		{
			name:   "package names map to crate names",
			cands:  []wire.PrefetchCandidate{cand("serde_json", 1, 1000), cand("serde", 2, 1000)},
			demand: []store.CrateDemand{asked("serde_json", 500), asked("serde", 100)},
			crates: []string{"serde", "serde-json"},
			want:   []int{2, 1},
		},
		{
			name:  "keys left unused twice in a row go last",
			cands: []wire.PrefetchCandidate{cand("a", 1, 1000), cand("a", 4, 1000), cand("b", 2, 1000), cand("c", 3, 1000)},
			demand: []store.CrateDemand{
				{Crate: "a", DemandMs: 0, Builds: 3, Unused: []store.UnusedKey{{CacheKey: key(1), Times: 2}}},
				{Crate: "b", DemandMs: 50, Builds: 3, Unused: []store.UnusedKey{{CacheKey: key(2), Times: 1}}},
				asked("c", 100),
			},
			crates: []string{"a", "b", "c"},
			want:   []int{4, 2, 3, 1},
			demote: 1,
		},
		{
			name:   "ties keep the dispatch order",
			cands:  []wire.PrefetchCandidate{cand("b", 2, 1000), cand("a", 1, 1000)},
			demand: []store.CrateDemand{asked("a", 100), asked("b", 100)},
			crates: []string{"a", "b"},
			want:   []int{2, 1},
		},
	}
	cfg := New(nil, Config{}).cfg
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := slices.Clone(tt.cands)
			demoted := orderByDemand(cands, tt.demand, tt.crates, &cfg)
			var got []int
			for _, c := range cands {
				got = append(got, slices.IndexFunc(tt.cands, func(o wire.PrefetchCandidate) bool { return o.CacheKey == c.CacheKey }))
			}
			want := make([]int, len(tt.want))
			for i, k := range tt.want {
				want[i] = slices.IndexFunc(tt.cands, func(o wire.PrefetchCandidate) bool { return o.CacheKey == key(k) })
			}
			if !slices.Equal(got, want) || demoted != tt.demote {
				t.Errorf("order %v (%d demoted), want %v (%d)", got, demoted, want, tt.demote)
			}
		})
	}
}

func TestDemandFamilies(t *testing.T) {
	repo := &wire.RunnerContext{Repository: "acme/app"}
	fam := func(r, tgt, p string) [32]byte {
		return store.DemandFamily{Repository: r, Target: tgt, Profile: p}.Digest()
	}
	tests := []struct {
		name string
		in   wire.BuildIntent
		want [][32]byte
	}{
		{"no target", wire.BuildIntent{Profile: "debug", Runner: repo}, nil},
		{"kache alone", wire.BuildIntent{Target: "t"}, [][32]byte{fam("", "t", "")}},
		{"split by profile", wire.BuildIntent{Target: "t", Profile: "debug"}, [][32]byte{fam("", "t", "debug"), fam("", "t", "")}},
		{"warm", wire.BuildIntent{Target: "t", Profile: "debug", Runner: repo}, [][32]byte{fam("acme/app", "t", "debug"), fam("", "t", "debug"), fam("", "t", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := demandFamilies(&tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("%d families, want %d", len(got), len(tt.want))
			}
		})
	}
}

// TestPlanOrderedByTimelines: a build timeline ingested through the
// timeline path reorders the next plan of the same job, and a plan of
// another job keeps kache's dispatch order.
func TestPlanOrderedByTimelines(t *testing.T) {
	st := memStore(t)
	const linux = "x86_64-unknown-linux-gnu"
	b := build{ns: "ci", target: linux, profile: "debug", toolchain: "1.82.0",
		entries: map[string]int{"a": 1, "b": 2, "c": 3}, deps: []string{"a@1.0.0", "b@1.0.0", "c@1.0.0"}}
	apply(t, st, b.manifest(1000))
	in := intent("ci", linux, "debug", "1.82.0", "a@1.0.0", "b@1.0.0", "c@1.0.0")
	in.Runner = &wire.RunnerContext{Repository: "acme/app"}
	p := New(st, Config{})
	order := func(in *wire.BuildIntent) []string {
		t.Helper()
		plan, _, err := p.Plan(in)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range plan.Candidates {
			out = append(out, c.CrateName)
		}
		return out
	}
	before := order(&in)
	tl := &wire.BuildTimeline{
		Schema: 2, ClientRecordID: "r1", StartedAtMs: 10_000, FinishedAtMs: 12_000,
		Identity: &wire.TimelineIdentity{IdentityKey: "id/0123456789abcdef/" + linux + "/debug"},
		Context:  in.Runner,
		Units: []wire.TimelineUnit{
			{CacheKey: key(3), CrateName: "c", StartedAtMs: 10_000},
			{CacheKey: key(2), CrateName: "b", StartedAtMs: 10_400},
			{CacheKey: key(1), CrateName: "a", StartedAtMs: 10_900},
		},
	}
	if _, err := st.Apply(ingest.Timeline(tl, time.UnixMilli(12_000))); err != nil {
		t.Fatal(err)
	}
	if got := order(&in); !slices.Equal(got, []string{"c", "b", "a"}) {
		t.Errorf("after the timeline: %v (before: %v)", got, before)
	}
	other := in
	other.Target = "aarch64-apple-darwin"
	other.Runner = nil
	if got := order(&other); len(got) != 0 && !slices.Equal(got, before) {
		t.Errorf("another target's plan: %v, want kache's order %v", got, before)
	}
	off := New(st, Config{NoDemandOrder: true})
	plan, _, err := off.Plan(&in)
	if err != nil || len(plan.Candidates) != len(before) || plan.Candidates[0].CrateName != before[0] {
		t.Errorf("NoDemandOrder: %+v, %v", plan.Candidates, err)
	}
}

func memStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func apply(t *testing.T, st *store.Store, m *wire.BuildManifest) {
	t.Helper()
	obs, err := ingest.Manifest(m, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(obs); err != nil {
		t.Fatal(err)
	}
}
