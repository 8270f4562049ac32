package planner

import (
	"cmp"
	"slices"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Ordering by demand: kache downloads a plan in the order it is given, over
// a dozen connections, and a build asks for its crates when rustc starts
// them. kache's dispatch key orders by the crate's position in crate_names
// (in windows of 16), then by compile cost, which says little about when a
// crate is asked for and nothing about how long its download takes: a big
// artifact asked for early arrives late. Build timelines say when the
// builds of a family (one CI job of one repository) asked for each crate,
// so the plan starts each download by the latest time it can start and
// still arrive before its crate is asked for: predicted demand minus the
// download's own duration, earliest first.

// demandFamilies are the families to look an intent up in, most specific
// first (ingest teaches every one of them).
func demandFamilies(in *wire.BuildIntent) [][32]byte {
	if in.Target == "" {
		return nil
	}
	var out [][32]byte
	if in.Runner != nil && in.Runner.Repository != "" {
		out = append(out, store.DemandFamily{Repository: in.Runner.Repository, Target: in.Target, Profile: in.Profile}.Digest())
	}
	out = append(out, store.DemandFamily{Target: in.Target, Profile: in.Profile}.Digest())
	if in.Profile != "" {
		out = append(out, store.DemandFamily{Target: in.Target}.Digest())
	}
	return out
}

// readDemand returns the first family of the intent that timelines taught
// anything, or nil.
func readDemand(idx Index, in *wire.BuildIntent) ([]store.CrateDemand, error) {
	for _, f := range demandFamilies(in) {
		ds, err := idx.Demand(f)
		if err != nil {
			return nil, err
		}
		if len(ds) > 0 {
			return ds, nil
		}
	}
	return nil, nil
}

// orderByDemand reorders cands (in place) by latest start: each crate's
// predicted demand time minus its download's duration, earliest first.
// A crate the family's timelines never had is predicted at the demand of
// the nearest crate before it in crate_names that they had (leaves come
// first, so it is asked for no earlier than those), or 0 when none. Keys
// left unused demoteAfter or more times in a row go last (0 disables).
// Ties keep the dispatch order. It reports how many keys it demoted.
func orderByDemand(cands []wire.PrefetchCandidate, ds []store.CrateDemand, crateNames []string, cfg *Config) int {
	if len(cands) == 0 || len(ds) == 0 {
		return 0
	}
	known := make(map[string]*store.CrateDemand, len(ds))
	for i := range ds {
		known[ds[i].Crate] = &ds[i]
	}
	predicted := make(map[string]float64, len(crateNames))
	last := 0.0
	for _, name := range crateNames {
		c := cargolock.CrateName(name)
		if d, ok := known[c]; ok && d.Builds > 0 {
			last = float64(d.DemandMs)
		}
		if _, ok := predicted[c]; !ok {
			predicted[c] = last
		}
	}
	type ranked struct {
		demoted bool
		start   float64
		pos     int
	}
	keys := make([]ranked, len(cands))
	demoted := 0
	for i := range cands {
		c := &cands[i]
		at, ok := predicted[c.CrateName]
		if !ok {
			if d, found := known[c.CrateName]; found && d.Builds > 0 {
				at = float64(d.DemandMs)
			} else {
				at = last
			}
		}
		size := c.SizeBytes
		if size == 0 {
			size = cfg.NominalSizeBytes
		}
		r := ranked{start: at - cfg.TransferLatencyMs - float64(size)/cfg.TransferBytesPerMs, pos: i}
		if d, found := known[c.CrateName]; found && cfg.DemoteAfter > 0 {
			for _, u := range d.Unused {
				if u.CacheKey == c.CacheKey && int(u.Times) >= cfg.DemoteAfter {
					r.demoted = true
					demoted++
				}
			}
		}
		keys[i] = r
	}
	order := make([]int, len(cands))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ka, kb := &keys[a], &keys[b]
		if ka.demoted != kb.demoted {
			if ka.demoted {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(ka.start, kb.start), cmp.Compare(ka.pos, kb.pos))
	})
	out := make([]wire.PrefetchCandidate, len(cands))
	for i, j := range order {
		out[i] = cands[j]
	}
	copy(cands, out)
	return demoted
}
