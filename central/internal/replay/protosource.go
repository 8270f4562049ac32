package replay

import (
	"cmp"
	"slices"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// protoSource is the prototype's data source for composition.
type protoSource struct {
	p          *proto
	intent     *wire.BuildIntent
	toolchain  string
	noFallback bool
	// changed caches, per lock a variant was built with, the packages whose
	// versions differ from the intent's lock.
	changed map[lockID][]string
	lock    map[string]string
}

// ShardCandidates: the identity build's keys for the crates it built, then
// for every other crate the newest variants built with its locked versions.
func (s *protoSource) ShardCandidates(namespace string, deps []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	var out []wire.PrefetchCandidate
	covered := map[string]bool{}
	if s.p.opts.Identity {
		id := buildIdentity(namespace, deps, s.intent.Target, s.intent.Profile, s.toolchain)
		for _, e := range s.p.ids[id] {
			covered[e.CrateName] = true
			if s.p.opts.Churn && s.p.churn.churny(namespace, e.CrateName) {
				continue
			}
			out = append(out, wire.PrefetchCandidate{CacheKey: e.CacheKey, CrateName: e.CrateName, CompileTimeMs: e.CompileTimeMs, SizeBytes: e.ArtifactSize})
		}
	}
	// Group the lock deps by crate, in lock order.
	var crates []string
	versions := map[string][]string{}
	for _, d := range deps {
		c := cargolock.CrateName(d.Name)
		if covered[c] {
			continue
		}
		if _, ok := versions[c]; !ok {
			crates = append(crates, c)
		}
		versions[c] = append(versions[c], d.Key())
	}
	for _, c := range crates {
		var vs []store.Variant
		seen := map[string]bool{}
		seenVersions := 0
		for _, dep := range versions[c] {
			dv, err := s.p.st.DepVariants(namespace, dep)
			if err != nil {
				return nil, err
			}
			if len(dv) > 0 {
				seenVersions++
			}
			for _, v := range dv {
				if !seen[v.CacheKey] {
					seen[v.CacheKey] = true
					vs = append(vs, v)
				}
			}
		}
		if s.p.opts.Churn && s.p.churn.churny(namespace, c) {
			continue
		}
		vs = s.rank(vs)
		if s.p.opts.CoChange {
			vs = slices.DeleteFunc(vs, func(v store.Variant) bool { return s.stale(c, &v, deps) })
		}
		n := s.p.perCrate(len(versions[c]), seenVersions)
		for i := range vs[:min(n, len(vs))] {
			out = append(out, wire.PrefetchCandidate{CacheKey: vs[i].CacheKey, CrateName: vs[i].CrateName, CompileTimeMs: vs[i].CompileTimeMs, SizeBytes: vs[i].SizeBytes})
		}
	}
	return out, nil
}

// perCrate is how many variants of one crate the shard pass takes.
func (p *proto) perCrate(versions, seenVersions int) int {
	switch {
	case !p.opts.PerCrateVersions:
		return versions // one per dep, as ShardPerDep: 1
	case p.opts.SkipUnseen:
		return seenVersions
	}
	return versions
}

// rank orders variants by how many of the build's dimensions they match
// (target, profile, and with Toolchain the rustc version), then newest
// first, then by key.
func (s *protoSource) rank(vs []store.Variant) []store.Variant {
	score := func(v *store.Variant) int {
		n := 0
		if s.toolchain != "" && s.p.toolchains[v.CacheKey] == s.toolchain {
			n += 4
		}
		if s.intent.Target != "" && v.Target == s.intent.Target {
			n += 2
		}
		if s.intent.Profile != "" && v.Profile == s.intent.Profile {
			n++
		}
		return n
	}
	if s.toolchain != "" {
		// A key built by another rustc is never the one this build needs.
		vs = slices.DeleteFunc(vs, func(v store.Variant) bool {
			tc, ok := s.p.toolchains[v.CacheKey]
			return ok && tc != s.toolchain
		})
	}
	slices.SortStableFunc(vs, func(a, b store.Variant) int {
		return cmp.Or(cmp.Compare(score(&b), score(&a)), cmp.Compare(b.LastSeenMs, a.LastSeenMs), cmp.Compare(a.CacheKey, b.CacheKey))
	})
	return vs
}

// HistoryCandidates is the real planner's history pass (newest variants of
// the crate, two per crate), unless the namespace already said the crate
// was never built.
func (s *protoSource) HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error) {
	if s.noFallback {
		return nil, nil
	}
	var out []wire.PrefetchCandidate
	for _, c := range crates {
		vs, err := s.p.st.Variants(c)
		if err != nil {
			return nil, err
		}
		vs = s.rank(slices.Clone(vs))
		for i := range vs {
			out = append(out, wire.PrefetchCandidate{CacheKey: vs[i].CacheKey, CrateName: vs[i].CrateName, CompileTimeMs: vs[i].CompileTimeMs, SizeBytes: vs[i].SizeBytes})
		}
	}
	return out, nil
}

// KeyCacheKeys: keys only listed, never built, are not worth a request.
func (*protoSource) KeyCacheKeys(string) ([]string, error) { return nil, nil }

// stale reports whether a variant of crate was built with another version of
// a package the crate is known to depend on.
func (s *protoSource) stale(crate string, v *store.Variant, deps []wire.LockDep) bool {
	id, ok := s.p.deps.keyLock[v.CacheKey]
	if !ok {
		return false
	}
	if s.lock == nil {
		s.lock = versionsByName(deps)
		s.changed = map[lockID][]string{}
	}
	changed, ok := s.changed[id]
	if !ok {
		changed = diffLocks(s.lock, s.p.deps.locks[id])
		s.changed[id] = changed
	}
	for _, x := range changed {
		if s.p.deps.affects[x][crate] {
			return true
		}
	}
	return false
}
