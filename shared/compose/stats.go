package compose

import (
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// NormalizeIntent returns a copy of in whose crate names are rustc crate
// names (kache-protocol.md 4.7), the names the object layout, the shards and
// central's index use. Lock deps keep Cargo's package names: shard hashes and
// the dep index are over Cargo.lock's "name@version".
func NormalizeIntent(in *wire.BuildIntent) *wire.BuildIntent {
	out := *in
	out.CrateNames = make([]string, len(in.CrateNames))
	for i, n := range in.CrateNames {
		out.CrateNames[i] = cargolock.CrateName(n)
	}
	return &out
}

// Stats starts a plan's stats from the composition of intent: the counts by
// source and what each cap dropped, with the caps that dropped anything named
// in Truncated. CountCandidates adds the totals of the final candidates.
func (c Composition) Stats(intent *wire.BuildIntent) *wire.PlanStats {
	st := &wire.PlanStats{
		IntentCrates:            len(Dedupe(intent.CrateNames)),
		ResolvedCrates:          c.Resolved,
		FromShards:              c.FromShards,
		FromHistory:             c.FromHistory,
		FromKeyCache:            c.FromKeyCache,
		DroppedHistoryPerCrate:  c.DroppedHistoryPerCrate,
		DroppedKeyCachePerCrate: c.DroppedKeyCachePerCrate,
		DroppedKeyCacheTotal:    c.DroppedKeyCacheTotal,
	}
	if c.DroppedHistoryPerCrate > 0 {
		st.Truncated = append(st.Truncated, "history_per_crate")
	}
	if c.DroppedKeyCachePerCrate > 0 {
		st.Truncated = append(st.Truncated, "key_cache_per_crate")
	}
	if c.DroppedKeyCacheTotal > 0 {
		st.Truncated = append(st.Truncated, "key_cache_total")
	}
	return st
}

// CountCandidates adds the known bytes, the candidates of unknown size and
// the compile time covered by cands to st.
func CountCandidates(st *wire.PlanStats, cands []wire.PrefetchCandidate) {
	for i := range cands {
		if cands[i].SizeBytes == 0 {
			st.UnknownSizeCandidates++
		}
		st.KnownBytes += cands[i].SizeBytes
		st.CompileMsCovered += cands[i].CompileTimeMs
	}
}
