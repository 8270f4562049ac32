package compose

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// fakeSource is a DataSource over fixed rows, like kache's test data sources.
type fakeSource struct {
	shards    []wire.PrefetchCandidate
	shardErr  error
	history   []wire.PrefetchCandidate
	keyCache  map[string][]string
	historyQs [][]string
}

func (f *fakeSource) ShardCandidates(string, []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	return slices.Clone(f.shards), f.shardErr
}

func (f *fakeSource) HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error) {
	f.historyQs = append(f.historyQs, crates)
	var out []wire.PrefetchCandidate
	for _, r := range f.history {
		if slices.Contains(crates, r.CrateName) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeSource) KeyCacheKeys(crate string) ([]string, error) {
	return slices.Clone(f.keyCache[crate]), nil
}

func cand(key, crate string) wire.PrefetchCandidate {
	return wire.PrefetchCandidate{CacheKey: key, CrateName: crate}
}

func nsIntent(crates ...string) *wire.BuildIntent {
	ns := "ns"
	deps := make([]wire.LockDep, len(crates))
	for i, c := range crates {
		deps[i] = wire.LockDep{Name: c, Version: "1.0.0"}
	}
	return &wire.BuildIntent{CrateNames: crates, Namespace: &ns, CargoLockDeps: deps}
}

type want struct {
	key    string
	source wire.Source
	demand int // -1 = nil
}

func check(t *testing.T, got []wire.PrefetchCandidate, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d candidates %v, want %d", len(got), keys(got), len(wants))
	}
	for i, w := range wants {
		g := got[i]
		d := -1
		if g.DemandIndex != nil {
			d = int(*g.DemandIndex)
		}
		if g.CacheKey != w.key || (w.source != "" && g.Source != w.source) || (w.demand != -2 && d != w.demand) {
			t.Errorf("candidate %d = {%s %s demand %d}, want {%s %s demand %d}", i, g.CacheKey, g.Source, d, w.key, w.source, w.demand)
		}
	}
}

func keys(cs []wire.PrefetchCandidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.CacheKey
	}
	return out
}

// Test vectors 4-9 of kache-protocol.md section 9.
func TestComposeVectors(t *testing.T) {
	tests := []struct {
		name   string
		src    *fakeSource
		intent *wire.BuildIntent
		want   []want
	}{
		{"4 shard hit", &fakeSource{shards: []wire.PrefetchCandidate{cand("from-shard", "serde")}},
			nsIntent("serde"), []want{{"from-shard", wire.SourceShard, 0}}},
		{"5 shard error falls through to history and key cache", &fakeSource{
			shardErr: errors.New("s3 down"),
			history:  []wire.PrefetchCandidate{cand("history-key", "serde")},
			keyCache: map[string][]string{"tokio": {"tokio-key"}},
		}, nsIntent("serde", "tokio"), []want{{"history-key", wire.SourceHistory, 0}, {"tokio-key", wire.SourceKeyCache, 1}}},
		{"6 shards follow intent order", &fakeSource{shards: []wire.PrefetchCandidate{cand("app-key", "app"), cand("dep-key", "dep"), cand("middle-key", "middle")}},
			nsIntent("dep", "middle", "app"), []want{{"dep-key", wire.SourceShard, 0}, {"middle-key", wire.SourceShard, 1}, {"app-key", wire.SourceShard, 2}}},
		{"7 partial shard", &fakeSource{
			shards:   []wire.PrefetchCandidate{cand("dep-shard-key", "dep")},
			history:  []wire.PrefetchCandidate{cand("middle-history-key", "middle")},
			keyCache: map[string][]string{"app": {"app-key-cache-key"}},
		}, nsIntent("dep", "middle", "app"), []want{{"dep-shard-key", wire.SourceShard, 0}, {"middle-history-key", wire.SourceHistory, 1}, {"app-key-cache-key", wire.SourceKeyCache, 2}}},
		{"8 shard wins over history and key cache", &fakeSource{
			shards:   []wire.PrefetchCandidate{cand("serde-shard-key", "serde")},
			history:  []wire.PrefetchCandidate{cand("serde-history-key", "serde")},
			keyCache: map[string][]string{"serde": {"serde-kc-key"}},
		}, nsIntent("serde"), []want{{"serde-shard-key", wire.SourceShard, 0}}},
		{"9 history without namespace", &fakeSource{
			shards:  []wire.PrefetchCandidate{cand("never", "dep")},
			history: []wire.PrefetchCandidate{cand("app-key", "app"), cand("dep-key", "dep"), cand("middle-key", "middle")},
		}, &wire.BuildIntent{CrateNames: []string{"dep", "middle", "app"}}, []want{{"dep-key", wire.SourceHistory, 0}, {"middle-key", wire.SourceHistory, 1}, {"app-key", wire.SourceHistory, 2}}},
		{"duplicate intent names keep first position", &fakeSource{history: []wire.PrefetchCandidate{cand("b", "b"), cand("a", "a")}},
			&wire.BuildIntent{CrateNames: []string{"a", "b", "a"}}, []want{{"a", wire.SourceHistory, 0}, {"b", wire.SourceHistory, 1}}},
		{"shard crate outside the intent has no demand", &fakeSource{shards: []wire.PrefetchCandidate{cand("x", "elsewhere"), cand("s", "serde")}},
			nsIntent("serde"), []want{{"s", wire.SourceShard, 0}, {"x", wire.SourceShard, -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := Compose(tt.intent, tt.src, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			check(t, got, tt.want)
		})
	}
}

func TestComposeHistoryErrorFailsPlan(t *testing.T) {
	_, _, err := Compose(&wire.BuildIntent{CrateNames: []string{"a"}}, &errSource{}, DefaultLimits())
	if err == nil {
		t.Fatal("a history error must fail the plan")
	}
}

type errSource struct{ fakeSource }

func (*errSource) HistoryCandidates([]string) ([]wire.PrefetchCandidate, error) {
	return nil, errors.New("db gone")
}

func keyList(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}

// Test vectors 10-15: caps and drop counters.
func TestComposeLimits(t *testing.T) {
	tests := []struct {
		name   string
		src    *fakeSource
		crates []string
		lim    Limits
		want   []string
		comp   Composition
	}{
		{"10 key cache per-crate cap", &fakeSource{keyCache: map[string][]string{"serde": keyList("k", 4)}}, []string{"serde"},
			DefaultLimits(), []string{"k1", "k2"}, Composition{FromKeyCache: 2, DroppedKeyCachePerCrate: 2, Resolved: 0}},
		{"11 key cache total cap", &fakeSource{keyCache: map[string][]string{"a": {"a-k1"}, "b": {"b-k1"}, "c": {"c-k1"}}}, []string{"a", "b", "c"},
			Limits{KeyCachePerCrate: 2, KeyCacheTotal: 1, HistoryPerCrate: 2}, []string{"a-k1"}, Composition{FromKeyCache: 1, DroppedKeyCacheTotal: 2}},
		{"12 all caps disabled", &fakeSource{keyCache: map[string][]string{"serde": keyList("k", 3)}}, []string{"serde"},
			Limits{}, []string{"k1", "k2", "k3"}, Composition{FromKeyCache: 3}},
		{"13 history cap", &fakeSource{history: []wire.PrefetchCandidate{cand("serde-newest", "serde"), cand("serde-older", "serde"), cand("serde-oldest", "serde")}}, []string{"serde"},
			Limits{KeyCachePerCrate: 2, KeyCacheTotal: 64, HistoryPerCrate: 1}, []string{"serde-newest"}, Composition{FromHistory: 1, DroppedHistoryPerCrate: 2, Resolved: 1}},
		{"14 total reached before a crate", &fakeSource{keyCache: map[string][]string{"a": {"a1"}, "b": keyList("b", 5)}}, []string{"a", "b"},
			Limits{KeyCachePerCrate: 2, KeyCacheTotal: 1, HistoryPerCrate: 2}, []string{"a1"}, Composition{FromKeyCache: 1, DroppedKeyCacheTotal: 5}},
		{"15 per-crate then total", &fakeSource{keyCache: map[string][]string{"serde": keyList("k", 3)}}, []string{"serde"},
			Limits{KeyCachePerCrate: 2, KeyCacheTotal: 1, HistoryPerCrate: 2}, []string{"k1"}, Composition{FromKeyCache: 1, DroppedKeyCachePerCrate: 1, DroppedKeyCacheTotal: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, comp, err := Compose(&wire.BuildIntent{CrateNames: tt.crates}, tt.src, tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys(got), tt.want) {
				t.Errorf("keys %v, want %v", keys(got), tt.want)
			}
			if comp != tt.comp {
				t.Errorf("composition %+v, want %+v", comp, tt.comp)
			}
		})
	}
}

func TestDroppedTotal(t *testing.T) {
	c := Composition{DroppedHistoryPerCrate: 1, DroppedKeyCachePerCrate: 2, DroppedKeyCacheTotal: 3}
	if c.DroppedTotal() != 6 {
		t.Fatalf("DroppedTotal = %d", c.DroppedTotal())
	}
}

// Test vector 16.
func TestCapTo(t *testing.T) {
	tests := []struct {
		n, limit, kept, dropped int
	}{{5, 2, 2, 3}, {2, 2, 2, 0}, {5, 0, 5, 0}}
	for _, tt := range tests {
		kept, dropped := CapTo(make([]int, tt.n), tt.limit)
		if len(kept) != tt.kept || dropped != tt.dropped {
			t.Errorf("CapTo(%d, %d) kept %d dropped %d", tt.n, tt.limit, len(kept), dropped)
		}
	}
}

func dc(src wire.Source, cost uint64, demand int) wire.PrefetchCandidate {
	c := wire.PrefetchCandidate{Source: src, CompileTimeMs: cost}
	if demand >= 0 {
		d := uint32(demand)
		c.DemandIndex = &d
	}
	return c
}

// Test vector 17: dispatch key comparisons.
func TestDispatchKeyOrder(t *testing.T) {
	tests := []struct {
		name        string
		first, then wire.PrefetchCandidate
		equal       bool
	}{
		{"earlier bucket beats cost", dc(wire.SourceShard, 10, 0), dc(wire.SourceShard, 100000, 500), false},
		{"same bucket: cost decides", dc(wire.SourceShard, 5000, 1), dc(wire.SourceShard, 10, 0), false},
		{"demand 0 and 15 share a bucket", dc(wire.SourceShard, 10, 0), dc(wire.SourceShard, 10, 15), true},
		{"demand 16 is the next bucket", dc(wire.SourceShard, 10, 15), dc(wire.SourceShard, 10, 16), false},
		{"confidence beats cost", dc(wire.SourceShard, 1, 0), dc(wire.SourceKeyCache, 99999, 0), false},
		{"known cost before unknown", dc(wire.SourceShard, 1, 0), dc(wire.SourceShard, 0, 0), false},
		{"unknown cost in bucket 0 before bucket 62", dc(wire.SourceShard, 0, 0), dc(wire.SourceShard, 50000, 999), false},
		{"known demand before unknown demand", dc(wire.SourceShard, 1, 100000), dc(wire.SourceShard, 50000, -1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := KeyOf(&tt.first).Compare(KeyOf(&tt.then))
			if tt.equal && c != 0 || !tt.equal && c >= 0 {
				t.Fatalf("compare = %d", c)
			}
		})
	}
}

// Test vector 18: the dispatch sort is stable.
func TestSortForDispatchStable(t *testing.T) {
	late, first, second := dc(wire.SourceShard, 1, 32), dc(wire.SourceShard, 10, 0), dc(wire.SourceShard, 10, 0)
	late.CacheKey, first.CacheKey, second.CacheKey = "late", "first", "second"
	cs := []wire.PrefetchCandidate{late, first, second}
	SortForDispatch(cs)
	if got := keys(cs); !slices.Equal(got, []string{"first", "second", "late"}) {
		t.Fatalf("order %v", got)
	}
}

// SortForDispatch agrees with a stable sort by DispatchKey.Compare on random
// candidates (the fast path sorts precomputed keys).
func TestSortForDispatchMatchesCompare(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	srcs := []wire.Source{wire.SourceShard, wire.SourceHistory, wire.SourceKeyCache, wire.SourceUnknown}
	for round := range 200 {
		cs := make([]wire.PrefetchCandidate, r.IntN(60))
		for i := range cs {
			cs[i] = dc(srcs[r.IntN(4)], uint64(r.IntN(4))*1000, r.IntN(70)-5)
			cs[i].CacheKey = fmt.Sprint(i)
		}
		want := slices.Clone(cs)
		slices.SortStableFunc(want, func(a, b wire.PrefetchCandidate) int { return KeyOf(&a).Compare(KeyOf(&b)) })
		SortForDispatch(cs)
		if !slices.Equal(keys(cs), keys(want)) {
			t.Fatalf("round %d: %v, want %v", round, keys(cs), keys(want))
		}
	}
}
