package replay

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// contextBuild is one build of a namespaced or namespace-less job whose
// second unit was compiled and uploaded by it.
func contextBuild(ns *string) *Build {
	deps := []wire.LockDep{{Name: "app", Version: "0.1.0"}, {Name: "serde", Version: "1.0.0"}}
	b := &Build{
		Job:       Job{Target: "aarch64-apple-darwin", Profile: "release", Features: "default"},
		Namespace: ns, Toolchain: "1.82.0", Host: "aarch64-apple-darwin",
		Lock:   &LockGraph{LockDeps: deps},
		Runner: &wire.RunnerContext{Repository: "acme/app", Commit: "abc"},
		Units: []Unit{
			{Crate: "serde", Key: key('a'), CompileMs: 10, SizeBytes: 20},
			{Crate: "app", Key: key('b'), CompileMs: 30, SizeBytes: 40},
		},
		Uploaded: []bool{false, true},
		Intent:   wire.BuildIntent{CrateNames: []string{"serde", "app"}, Namespace: ns, CargoLockDeps: []wire.LockDep{}},
	}
	if ns != nil {
		b.Intent.CargoLockDeps = deps
	}
	return b
}

func TestPlannerIntent(t *testing.T) {
	ns := "aarch64-apple-darwin/release"
	tests := []struct {
		name string
		ns   *string
		ctx  Context
		want wire.BuildIntent
	}{
		{"none: kache's intent and the sidecar's host", nil, ContextNone,
			wire.BuildIntent{CrateNames: []string{"serde", "app"}, CargoLockDeps: []wire.LockDep{}, Target: "aarch64-apple-darwin"}},
		{"none with a namespace: kache sends the lock deps", &ns, ContextNone,
			wire.BuildIntent{CrateNames: []string{"serde", "app"}, Namespace: &ns, CargoLockDeps: contextBuild(nil).Lock.LockDeps, Target: "aarch64-apple-darwin"}},
		{"warm: the job and the lock deps, namespace or not", nil, ContextWarm,
			wire.BuildIntent{CrateNames: []string{"serde", "app"}, CargoLockDeps: contextBuild(nil).Lock.LockDeps,
				Target: "aarch64-apple-darwin", Profile: "release", Toolchain: "1.82.0", Runner: contextBuild(nil).Runner}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := plannerIntent(contextBuild(tt.ns), tt.ctx)
			if !equalJSON(t, got, tt.want) {
				t.Errorf("intent %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDeliveries(t *testing.T) {
	ns := "ci"
	tests := []struct {
		name string
		ns   *string
		ctx  Context
		// want are the fields beyond the entries: kache's manifest, then
		// the observed packs'.
		kache, packs wire.BuildManifest
	}{
		{"none: kache's manifest as kache writes it, packs with their meta", nil, ContextNone,
			wire.BuildManifest{ManifestKey: "aarch64-apple-darwin", Target: "aarch64-apple-darwin"},
			wire.BuildManifest{ManifestKey: "sidecar-observed", Target: "aarch64-apple-darwin", Profile: "release"}},
		{"none with a namespace: the sidecar adds what kache's intent said", &ns, ContextNone,
			wire.BuildManifest{ManifestKey: "aarch64-apple-darwin", Target: "aarch64-apple-darwin", Namespace: &ns, CargoLockDeps: contextBuild(nil).Lock.LockDeps},
			wire.BuildManifest{ManifestKey: "sidecar-observed", Target: "aarch64-apple-darwin", Profile: "release"}},
		{"warm: the job annotates both, lock deps on kache's only", nil, ContextWarm,
			wire.BuildManifest{ManifestKey: "aarch64-apple-darwin", Target: "aarch64-apple-darwin", Profile: "release", Toolchain: "1.82.0",
				Runner: contextBuild(nil).Runner, CargoLockDeps: contextBuild(nil).Lock.LockDeps},
			wire.BuildManifest{ManifestKey: "sidecar-observed", Target: "aarch64-apple-darwin", Profile: "release", Toolchain: "1.82.0", Runner: contextBuild(nil).Runner}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := deliveries(contextBuild(tt.ns), tt.ctx, 1_800_000_000_000)
			packs, kache := got[0], got[1]
			if len(kache.Entries) != 2 || len(packs.Entries) != 1 || packs.Entries[0].CrateName != "app" {
				t.Fatalf("entries: kache's %+v, packs %+v", kache.Entries, packs.Entries)
			}
			for _, m := range []*wire.BuildManifest{&kache, &packs} {
				if m.Version != 3 || m.Created != "2027-01-15T08:00:00Z" {
					t.Errorf("%s: version %d created %q", m.ManifestKey, m.Version, m.Created)
				}
				m.Entries, m.Version, m.Created = nil, 0, ""
			}
			if !equalJSON(t, kache, tt.kache) || !equalJSON(t, packs, tt.packs) {
				t.Errorf("kache's %+v\npacks %+v", kache, packs)
			}
		})
	}
}

func TestSplitReveal(t *testing.T) {
	d := func(n uint32) *uint32 { return &n }
	c := func(k byte, crate string) wire.PrefetchCandidate {
		return wire.PrefetchCandidate{CacheKey: key(k), CrateName: crate, Source: wire.SourceHistory, DemandIndex: d(0)}
	}
	plans := map[string][]wire.PrefetchCandidate{
		"debug":   {c('a', "serde"), c('c', "syn")},
		"release": {c('b', "serde"), c('c', "syn")},
	}
	plan, s, err := splitPlan(wire.BuildIntent{}, func(in *wire.BuildIntent) (wire.PrefetchPlan, error) {
		return executePlan("planner", plans[in.Profile]), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := func(cs []wire.PrefetchCandidate) string {
		var b []byte
		for _, c := range cs {
			b = append(b, c.CacheKey[0])
		}
		return string(b)
	}
	if got := keys(plan.Candidates); got != "acb" {
		t.Fatalf("unrevealed plan %s, want every profile's keys", got)
	}
	r := &runner{cfg: DefaultConfig(1)}
	// syn (in both plans) is read first, then serde's release key.
	b := &Build{Units: []Unit{{Key: key('c')}, {Key: key('b')}, {Key: key('z')}}}
	got, dispatch := r.reveal(b, plan.Candidates, s, []float64{0, 40, 0})
	if keys(got) != "bc" || dispatch != r.cfg.Transfer.DispatchMs+40 {
		t.Errorf("revealed plan %s dispatched at %v", keys(got), dispatch)
	}
	// The revealing read comes after the wait: every profile's keys.
	got, dispatch = r.reveal(b, plan.Candidates, s, []float64{0, 2000, 0})
	if keys(got) != "acb" || dispatch != r.cfg.Transfer.DispatchMs+revealWaitMs {
		t.Errorf("unrevealed plan %s dispatched at %v", keys(got), dispatch)
	}
	if r.splits != (SplitStats{Revealed: 1, Unrevealed: 1}) {
		t.Errorf("split stats %+v", r.splits)
	}
}

// TestRunContexts replays the synthetic trace under both contexts, with
// and without a namespace: planner must stay ahead of kache's fallback,
// and only a plan without profile or namespace is split.
func TestRunContexts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	writeSyntheticTrace(t, dir, 24)
	tr, err := LoadTrace(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ctx := range []Context{ContextNone, ContextWarm} {
		for _, ns := range []string{"", "{target}/{profile}"} {
			t.Run(string(ctx)+" namespace "+ns, func(t *testing.T) {
				cfg := DefaultConfig(2)
				cfg.Context, cfg.Namespace = ctx, ns
				cfg.Only = []string{PolicyKacheFallback, PolicyPlanner, PolicyOracle}
				res, err := Run(tr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if res.Model.Context != ctx || !slices.Equal(res.Order, []string{PolicyNone, PolicyKacheFallback, PolicyPlanner, PolicyOracle}) {
					t.Fatalf("model %+v, policies %v", res.Model, res.Order)
				}
				p, fb := res.Policies[PolicyPlanner].Overall, res.Policies[PolicyKacheFallback].Overall
				// The synthetic history bumps a dep every fourth commit and
				// edits a member every commit: many stale keys.
				if p.Recall < 0.9 || p.Recall < fb.Recall || p.BytePrecision < 0.5 || p.BytePrecision < fb.BytePrecision {
					t.Errorf("planner %+v, fallback %+v", p, fb)
				}
				split := res.Splits.Revealed + res.Splits.Unrevealed
				if wantSplit := ctx == ContextNone && ns == ""; (split > 0) != wantSplit {
					t.Errorf("split %d plans", split)
				}
			})
		}
	}
	t.Run("max commits", func(t *testing.T) {
		cfg := DefaultConfig(2)
		cfg.MaxCommits = 5
		res, err := Run(tr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Builds != 5*len(cfg.Jobs) {
			t.Errorf("%d builds", res.Builds)
		}
	})
	t.Run("unknown context", func(t *testing.T) {
		cfg := DefaultConfig(2)
		cfg.Context = "sometimes"
		if _, err := Run(tr, cfg); err == nil {
			t.Error("Run accepted an unknown context")
		}
	})
}

// equalJSON compares two values by their JSON.
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}
