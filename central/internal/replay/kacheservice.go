package replay

import (
	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// kacheService is a port of kache-service's planner (kache-protocol.md
// 2.2, 2.7): kache's composition over two tables, namespace_artifact
// (namespace, "name@version") and crate_artifact (crate name), each read
// newest first. Only cache keys and crate names are kept, so its candidates
// carry no metadata, and the key-cache pass reads crate_artifact too, which
// history has already consulted, so it never adds anything.
//
// kache-service has no write path: it only learns from a seed file. Here it
// is fed from the same manifests the other policies learn from, as a seed
// exporter would: every manifest entry becomes a crate_artifact row under
// its crate name, and each lock dep of a namespaced build becomes a
// namespace_artifact row with the entry kache's shard writer would have put
// in its shard (the first entry whose crate name equals the package name).
type kacheService struct {
	ns     map[nsDep]*rowList
	crates map[string]*rowList
}

// serviceRowsPerDep bounds the namespace rows kept per dep. The service
// keeps every row and its shard pass returns them all; keeping the newest
// only drops stale keys, so the bound can only improve this policy's byte
// precision, and it keeps plans over long histories affordable.
const serviceRowsPerDep = 64

// serviceRowsPerCrate bounds the crate rows kept and returned per crate:
// composition keeps the first two of history, the rest would only feed its
// drop counters, and the key-cache pass, which would read them all, only
// runs for crates without rows.
const serviceRowsPerCrate = 8

type nsDep struct{ namespace, dep string }

func newKacheService() *kacheService {
	return &kacheService{ns: map[nsDep]*rowList{}, crates: map[string]*rowList{}}
}

func (*kacheService) Name() string { return PolicyKacheService }
func (*kacheService) remote()      {}

func (p *kacheService) Plan(b *Build) (wire.PrefetchPlan, error) {
	fallback := wire.PrefetchPlan{Planner: "planner", Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}
	if len(p.crates) == 0 {
		return fallback, nil // fallback_no_candidates: an empty database
	}
	cands, _, err := compose.Compose(&b.Intent, p, compose.DefaultLimits())
	if err != nil {
		return fallback, nil // fallback_planning_error
	}
	if len(cands) == 0 {
		return fallback, nil
	}
	return wire.PrefetchPlan{Planner: "planner", Disposition: wire.Execute, Candidates: cands}, nil
}

func (p *kacheService) Learn(_ *Build, m *wire.BuildManifest, endMs int64) error {
	first := make(map[string]*wire.ManifestEntry, len(m.Entries))
	for i := range m.Entries {
		e := &m.Entries[i]
		rows(p.crates, e.CrateName).upsert(e.CacheKey, e.CrateName, endMs, serviceRowsPerCrate)
		if _, ok := first[e.CrateName]; !ok {
			first[e.CrateName] = e
		}
	}
	if m.Namespace == nil {
		return nil
	}
	for _, d := range m.CargoLockDeps {
		if e, ok := first[d.Name]; ok {
			rows(p.ns, nsDep{*m.Namespace, d.Key()}).upsert(e.CacheKey, e.CrateName, endMs, serviceRowsPerDep)
		}
	}
	return nil
}

// ShardCandidates: for each dep in request order, its rows newest first;
// duplicates dropped across the whole answer.
func (p *kacheService) ShardCandidates(namespace string, deps []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	var out []wire.PrefetchCandidate
	seen := map[string]bool{}
	for _, d := range deps {
		l := p.ns[nsDep{namespace, d.Key()}]
		if l == nil {
			continue
		}
		for _, r := range l.newest(0) {
			if !seen[r.key] {
				seen[r.key] = true
				out = append(out, wire.PrefetchCandidate{CacheKey: r.key, CrateName: r.crate})
			}
		}
	}
	return out, nil
}

// HistoryCandidates: for each crate, its crate_artifact rows newest first.
func (p *kacheService) HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error) {
	var out []wire.PrefetchCandidate
	for _, c := range crates {
		if l := p.crates[c]; l != nil {
			for _, r := range l.newest(serviceRowsPerCrate) {
				out = append(out, wire.PrefetchCandidate{CacheKey: r.key, CrateName: c})
			}
		}
	}
	return out, nil
}

// KeyCacheKeys reads crate_artifact again: every crate it could answer for
// was already resolved by history.
func (p *kacheService) KeyCacheKeys(crate string) ([]string, error) {
	var keys []string
	if l := p.crates[crate]; l != nil {
		for _, r := range l.newest(0) {
			keys = append(keys, r.key)
		}
	}
	return keys, nil
}

// rowList is one table's rows for one lookup key, oldest first; a re-seen
// key moves to the end (last_seen_at = now).
type rowList struct {
	rows []row
}

type row struct {
	key, crate string
	seen       int64
}

func rows[K comparable](m map[K]*rowList, k K) *rowList {
	l := m[k]
	if l == nil {
		l = &rowList{}
		m[k] = l
	}
	return l
}

// upsert sets a row's last_seen_at, keeping at most limit rows (0: all).
func (l *rowList) upsert(key, crate string, at int64, limit int) {
	for i := range l.rows {
		if l.rows[i].key == key {
			l.rows = append(l.rows[:i], l.rows[i+1:]...)
			break
		}
	}
	l.rows = append(l.rows, row{key: key, crate: crate, seen: at})
	if limit > 0 && len(l.rows) > limit {
		l.rows = l.rows[len(l.rows)-limit:]
	}
}

// newest returns up to limit rows (0: all), newest first.
func (l *rowList) newest(limit int) []row {
	n := len(l.rows)
	if limit > 0 {
		n = min(n, limit)
	}
	out := make([]row, n)
	for i := range out {
		out[i] = l.rows[len(l.rows)-1-i]
	}
	return out
}
