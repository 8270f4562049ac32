// Package compose is kache's plan composition and dispatch order
// (kache-protocol.md 1.7-1.8) over any DataSource. Central runs it over its
// ranking index; the sidecar over the bucket's shards and key listing, the way
// kache's local fallback does.
package compose

import (
	"cmp"
	"slices"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// DataSource is what composition reads. Errors from ShardCandidates are
// ignored (the shard pass is best effort); errors from the other two fail the
// plan, as in kache.
type DataSource interface {
	ShardCandidates(namespace string, deps []wire.LockDep) ([]wire.PrefetchCandidate, error)
	HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error)
	KeyCacheKeys(crate string) ([]string, error)
}

// Limits are kache's PlanLimits; 0 disables a cap.
type Limits struct {
	KeyCachePerCrate int
	KeyCacheTotal    int
	HistoryPerCrate  int
}

// DefaultLimits are the limits kache always uses.
func DefaultLimits() Limits {
	return Limits{KeyCachePerCrate: 2, KeyCacheTotal: 64, HistoryPerCrate: 2}
}

// Composition counts where candidates came from and what the caps dropped.
type Composition struct {
	FromShards              int
	FromHistory             int
	FromKeyCache            int
	DroppedHistoryPerCrate  int
	DroppedKeyCachePerCrate int
	DroppedKeyCacheTotal    int
	// Resolved is how many intent crates got at least one candidate source.
	Resolved int
}

// DroppedTotal is the sum of the three drop counters.
func (c Composition) DroppedTotal() int {
	return c.DroppedHistoryPerCrate + c.DroppedKeyCachePerCrate + c.DroppedKeyCacheTotal
}

// UrgencyBucket is kache's URGENCY_BUCKET: demand indexes in one window of 16
// are equally urgent.
const UrgencyBucket = 16

// Compose runs kache's build_prefetch_plan: shards, then history, then key
// cache, demand stamping and the stable dispatch sort. The returned candidates
// may be empty; turning that into use_fallback is the caller's decision.
func Compose(intent *wire.BuildIntent, ds DataSource, lim Limits) ([]wire.PrefetchCandidate, Composition, error) {
	var comp Composition
	order := Dedupe(intent.CrateNames)
	demand := make(map[string]uint32, len(order))
	for i, n := range order {
		demand[n] = uint32(i)
	}
	resolved := make(map[string]bool, len(order))
	seen := make(map[string]bool)
	out := make([]wire.PrefetchCandidate, 0, 2*len(order))
	add := func(c wire.PrefetchCandidate, src wire.Source) bool {
		if seen[c.CacheKey] {
			return false
		}
		seen[c.CacheKey] = true
		c.Source = src
		out = append(out, c)
		return true
	}

	if intent.Namespace != nil && len(intent.CargoLockDeps) > 0 {
		if shards, err := ds.ShardCandidates(*intent.Namespace, intent.CargoLockDeps); err == nil {
			sortByDemand(shards, demand, len(intent.CrateNames) > 0)
			for _, c := range shards {
				resolved[c.CrateName] = true
				if add(c, wire.SourceShard) {
					comp.FromShards++
				}
			}
		}
	}

	var query []string
	for _, n := range order {
		if !resolved[n] {
			query = append(query, n)
		}
	}
	if len(query) > 0 {
		rows, err := ds.HistoryCandidates(query)
		if err != nil {
			return nil, comp, err
		}
		sortByDemand(rows, demand, len(intent.CrateNames) > 0)
		groups := make(map[string][]wire.PrefetchCandidate, len(query))
		for _, r := range rows {
			groups[r.CrateName] = append(groups[r.CrateName], r)
		}
		for _, n := range query {
			g, dropped := CapTo(groups[n], lim.HistoryPerCrate)
			comp.DroppedHistoryPerCrate += dropped
			if len(g) > 0 {
				resolved[n] = true
			}
			for _, c := range g {
				if add(c, wire.SourceHistory) {
					comp.FromHistory++
				}
			}
		}
	}

	for _, n := range order {
		if resolved[n] {
			continue
		}
		keys, err := ds.KeyCacheKeys(n)
		if err != nil {
			return nil, comp, err
		}
		if lim.KeyCacheTotal > 0 && comp.FromKeyCache >= lim.KeyCacheTotal {
			for _, k := range keys {
				if !seen[k] {
					comp.DroppedKeyCacheTotal++
				}
			}
			continue
		}
		keys, dropped := CapTo(keys, lim.KeyCachePerCrate)
		comp.DroppedKeyCachePerCrate += dropped
		for _, k := range keys {
			if lim.KeyCacheTotal > 0 && comp.FromKeyCache >= lim.KeyCacheTotal {
				comp.DroppedKeyCacheTotal++
				continue
			}
			if add(wire.PrefetchCandidate{CacheKey: k, CrateName: n}, wire.SourceKeyCache) {
				comp.FromKeyCache++
			}
		}
	}

	for _, n := range order {
		if resolved[n] {
			comp.Resolved++
		}
	}
	stampDemand(out, demand)
	SortForDispatch(out)
	return out, comp, nil
}

// CapTo keeps the first limit items (all when limit is 0) and says how many
// it dropped.
func CapTo[T any](items []T, limit int) ([]T, int) {
	if limit <= 0 || len(items) <= limit {
		return items, 0
	}
	return items[:limit], len(items) - limit
}

// Dedupe keeps the first occurrence of each name, in order.
func Dedupe(names []string) []string {
	seen := make(map[string]bool, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// sortByDemand orders rows by the demand index of their crate; crates not in
// the intent go last; ties keep their order. kache skips it for an empty
// intent.
func sortByDemand(rows []wire.PrefetchCandidate, demand map[string]uint32, enabled bool) {
	if !enabled {
		return
	}
	permute(rows, func(c *wire.PrefetchCandidate) (uint64, uint64) {
		d, ok := demand[c.CrateName]
		if !ok {
			return 1 << 32, 0
		}
		return uint64(d), 0
	})
}

// sortKey is a precomputed two-word key plus the original position, so a
// plain (unstable) sort of 24-byte keys gives a stable order without moving
// candidates around in every comparison.
type sortKey struct {
	hi, lo uint64
	pos    int
}

// permute stable-sorts cands by key (hi, then lo, ascending).
func permute(cands []wire.PrefetchCandidate, key func(*wire.PrefetchCandidate) (uint64, uint64)) {
	if len(cands) < 2 {
		return
	}
	keys := make([]sortKey, len(cands))
	sorted := true
	for i := range cands {
		hi, lo := key(&cands[i])
		keys[i] = sortKey{hi, lo, i}
		if i > 0 && (keys[i-1].hi > hi || keys[i-1].hi == hi && keys[i-1].lo > lo) {
			sorted = false
		}
	}
	if sorted {
		return
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		switch {
		case a.hi != b.hi:
			return cmp.Compare(a.hi, b.hi)
		case a.lo != b.lo:
			return cmp.Compare(a.lo, b.lo)
		}
		return a.pos - b.pos
	})
	out := make([]wire.PrefetchCandidate, len(cands))
	for i, k := range keys {
		out[i] = cands[k.pos]
	}
	copy(cands, out)
}

// stampDemand overwrites every candidate's demand index with its crate's
// position in the intent (nil when absent). One backing array holds them all.
func stampDemand(cands []wire.PrefetchCandidate, demand map[string]uint32) {
	idx := make([]uint32, len(cands))
	for i := range cands {
		d, ok := demand[cands[i].CrateName]
		if !ok {
			cands[i].DemandIndex = nil
			continue
		}
		idx[i] = d
		cands[i].DemandIndex = &idx[i]
	}
}

// DispatchKey is kache's dispatch_sort_key: urgency bucket, confidence rank,
// then most expensive first (unknown cost counts as 0).
type DispatchKey struct {
	Bucket uint32
	Rank   int
	Cost   uint64
}

// KeyOf returns the dispatch key of a candidate.
func KeyOf(c *wire.PrefetchCandidate) DispatchKey {
	b := ^uint32(0)
	if c.DemandIndex != nil {
		b = *c.DemandIndex / UrgencyBucket
	}
	return DispatchKey{Bucket: b, Rank: c.Source.Rank(), Cost: c.CompileTimeMs}
}

// Compare orders dispatch keys ascending.
func (k DispatchKey) Compare(o DispatchKey) int {
	if k.Bucket != o.Bucket {
		return cmp.Compare(k.Bucket, o.Bucket)
	}
	if k.Rank != o.Rank {
		return k.Rank - o.Rank
	}
	switch {
	case k.Cost > o.Cost:
		return -1
	case k.Cost < o.Cost:
		return 1
	}
	return 0
}

// SortForDispatch stable-sorts candidates into the order the client downloads
// them (the order of DispatchKey.Compare); the client never re-sorts.
func SortForDispatch(cands []wire.PrefetchCandidate) {
	permute(cands, func(c *wire.PrefetchCandidate) (uint64, uint64) {
		k := KeyOf(c)
		return uint64(k.Bucket)<<2 | uint64(k.Rank), ^k.Cost
	})
}
