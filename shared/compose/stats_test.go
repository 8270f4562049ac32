package compose

import (
	"reflect"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestNormalizeIntent(t *testing.T) {
	tests := []struct {
		name   string
		crates []string
		want   []string
	}{
		{name: "no crates", crates: nil, want: []string{}},
		{name: "crate names unchanged", crates: []string{"serde", "tokio"}, want: []string{"serde", "tokio"}},
		{name: "hyphens become underscores", crates: []string{"proc-macro2", "serde-json"}, want: []string{"proc_macro2", "serde_json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps := []wire.LockDep{{Name: "proc-macro2", Version: "1.0.86"}}
			ns := "ns"
			in := &wire.BuildIntent{CrateNames: tt.crates, Namespace: &ns, CargoLockDeps: deps, Toolchain: "1.82.0"}
			before := append([]string(nil), tt.crates...)
			got := NormalizeIntent(in)
			if !reflect.DeepEqual(got.CrateNames, tt.want) {
				t.Errorf("crate names %q, want %q", got.CrateNames, tt.want)
			}
			if got.Namespace != in.Namespace || got.Toolchain != "1.82.0" || !reflect.DeepEqual(got.CargoLockDeps, deps) {
				t.Errorf("other fields changed: %+v", got)
			}
			if !reflect.DeepEqual(append([]string(nil), in.CrateNames...), before) {
				t.Errorf("the input was modified: %q", in.CrateNames)
			}
		})
	}
}

func TestCompositionStats(t *testing.T) {
	tests := []struct {
		name   string
		crates []string
		comp   Composition
		want   wire.PlanStats
	}{
		{name: "empty", want: wire.PlanStats{}},
		{
			name:   "counts without drops",
			crates: []string{"a", "b", "a"},
			comp:   Composition{FromShards: 3, FromHistory: 2, FromKeyCache: 1, Resolved: 2},
			want:   wire.PlanStats{IntentCrates: 2, ResolvedCrates: 2, FromShards: 3, FromHistory: 2, FromKeyCache: 1},
		},
		{
			name:   "every cap dropped",
			crates: []string{"a"},
			comp:   Composition{DroppedHistoryPerCrate: 1, DroppedKeyCachePerCrate: 2, DroppedKeyCacheTotal: 3},
			want: wire.PlanStats{IntentCrates: 1, DroppedHistoryPerCrate: 1, DroppedKeyCachePerCrate: 2, DroppedKeyCacheTotal: 3,
				Truncated: []string{"history_per_crate", "key_cache_per_crate", "key_cache_total"}},
		},
		{
			name:   "one cap dropped",
			crates: []string{"a"},
			comp:   Composition{DroppedKeyCacheTotal: 1},
			want:   wire.PlanStats{IntentCrates: 1, DroppedKeyCacheTotal: 1, Truncated: []string{"key_cache_total"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.comp.Stats(&wire.BuildIntent{CrateNames: tt.crates})
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("stats %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestCountCandidates(t *testing.T) {
	tests := []struct {
		name  string
		cands []wire.PrefetchCandidate
		want  wire.PlanStats
	}{
		{name: "none", want: wire.PlanStats{IntentCrates: 1}},
		{
			name: "known and unknown sizes",
			cands: []wire.PrefetchCandidate{
				{CacheKey: "k1", SizeBytes: 100, CompileTimeMs: 7},
				{CacheKey: "k2", CompileTimeMs: 5},
				{CacheKey: "k3", SizeBytes: 20},
			},
			want: wire.PlanStats{IntentCrates: 1, KnownBytes: 120, UnknownSizeCandidates: 1, CompileMsCovered: 12},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := wire.PlanStats{IntentCrates: 1}
			CountCandidates(&st, tt.cands)
			if !reflect.DeepEqual(st, tt.want) {
				t.Errorf("stats %+v, want %+v", st, tt.want)
			}
		})
	}
}
