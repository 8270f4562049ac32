package planner

import (
	"cmp"
	"fmt"
	"github.com/kache-planner/kache-planner/shared/compose"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Index is the part of the store planning reads.
type Index interface {
	Variants(crate string) ([]store.Variant, error)
	DepVariants(namespace, dep string) ([]store.Variant, error)
	Identity(digest [32]byte) ([]store.Variant, error)
	// Demand is what build timelines taught about a demand family
	// (store.DemandFamily).
	Demand(family [32]byte) ([]store.CrateDemand, error)
	CrateKeys(crate string, limit int) ([]string, error)
	ArtifactCount() uint64
	// Generation changes whenever the index changes.
	Generation() uint64
}

// Outcome is the result label of one plan request, as kache's metrics name it.
type Outcome string

// The plan outcomes of kache-protocol.md 2.9 that planning decides; the API
// layer adds unauthorized and not_ready.
const (
	OutcomeExecute       Outcome = "execute"
	OutcomeNoState       Outcome = "fallback_no_state"
	OutcomePlanningError Outcome = "fallback_planning_error"
	OutcomeNoCandidates  Outcome = "fallback_no_candidates"
	OutcomeUnauthorized  Outcome = "unauthorized"
	OutcomeNotReady      Outcome = "not_ready"
)

// Outcomes lists every outcome label, for pre-registering metrics.
var Outcomes = []Outcome{OutcomeExecute, OutcomeNoState, OutcomePlanningError, OutcomeNoCandidates, OutcomeUnauthorized, OutcomeNotReady}

// Config configures a Planner.
type Config struct {
	// Name is reported in every plan; blank becomes "planner".
	Name   string
	Limits compose.Limits
	// NominalSizeBytes is charged for a candidate of unknown size when a byte
	// budget is applied.
	NominalSizeBytes uint64
	// VariantsPerVersion is how many keys the shard pass takes per locked
	// version of a crate (default 1). A build compiles one key per crate
	// version, and a namespace is one CI job: a second variant is an older
	// build's key, needed only when a build reverts to it.
	VariantsPerVersion int
	// NoDemandOrder keeps kache's dispatch order instead of ordering by the
	// demand times build timelines taught (a measurement aid).
	NoDemandOrder bool
	// TransferLatencyMs and TransferBytesPerMs estimate one download's
	// duration when ordering by demand (latency + size / throughput): one
	// connection to a same-region object store, 40 ms and 20 MiB/s by
	// default.
	TransferLatencyMs  float64
	TransferBytesPerMs float64
	// DemoteAfter: a key its family's builds left unused this many
	// prefetches in a row goes last in the plan (default 2; negative:
	// never).
	DemoteAfter int
	// ClientBudget is applied, by compile time saved per byte, when the
	// intent carries no budget: kache's own prefetch_max_keys and
	// prefetch_max_bytes (2,000 keys, 2 GiB), which kache applies by
	// cutting the plan's tail. Zero fields take those defaults.
	ClientBudget wire.Budget
	// NoClientBudget applies only the intent's budget.
	NoClientBudget bool
}

// Planner answers plan requests from the index.
type Planner struct {
	idx Index
	cfg Config
	now func() time.Time
}

// New returns a Planner over idx.
func New(idx Index, cfg Config) *Planner {
	cfg.Name = NormalizeName(cfg.Name)
	if cfg.Limits == (compose.Limits{}) {
		cfg.Limits = compose.DefaultLimits()
	}
	if cfg.NominalSizeBytes == 0 {
		cfg.NominalSizeBytes = 1 << 20
	}
	if cfg.VariantsPerVersion <= 0 {
		cfg.VariantsPerVersion = 1
	}
	if cfg.TransferLatencyMs <= 0 {
		cfg.TransferLatencyMs = 40
	}
	if cfg.TransferBytesPerMs <= 0 {
		cfg.TransferBytesPerMs = 20 * 1024 * 1024 / 1000.0
	}
	if cfg.DemoteAfter == 0 {
		cfg.DemoteAfter = 2
	}
	if cfg.ClientBudget.MaxKeys == 0 {
		cfg.ClientBudget.MaxKeys = 2000
	}
	if cfg.ClientBudget.MaxBytes == 0 {
		cfg.ClientBudget.MaxBytes = 2 << 30
	}
	return &Planner{idx: idx, cfg: cfg, now: time.Now}
}

// NormalizeName trims a planner name; blank becomes "planner".
func NormalizeName(n string) string {
	n = strings.TrimSpace(n)
	if n == "" {
		return "planner"
	}
	return n
}

// Generation identifies the state plans are computed from: a plan computed
// at one generation is valid until it changes.
func (p *Planner) Generation() uint64 { return p.idx.Generation() }

// Name is the planner name reported in plans and health replies.
func (p *Planner) Name() string { return p.cfg.Name }

// Plan answers one intent. It never fails: every problem becomes a
// use_fallback plan with the outcome saying why, and err carries the cause of
// a planning error for the caller to log.
func (p *Planner) Plan(intent *wire.BuildIntent) (plan wire.PrefetchPlan, outcome Outcome, err error) {
	return p.plan(intent, p.idx)
}

// plan is Plan reading idx.
func (p *Planner) plan(intent *wire.BuildIntent, idx Index) (plan wire.PrefetchPlan, outcome Outcome, err error) {
	plan = wire.PrefetchPlan{
		PlanID:      "plan-" + strconv.FormatInt(p.now().UnixMilli(), 10),
		Planner:     p.cfg.Name,
		Disposition: wire.UseFallback,
		Candidates:  []wire.PrefetchCandidate{},
	}
	if idx.ArtifactCount() == 0 {
		return plan, OutcomeNoState, nil
	}
	norm := compose.NormalizeIntent(intent)
	if norm.Namespace == nil && len(norm.CargoLockDeps) > 0 {
		// kache sends lock deps only with a namespace; kache-sidecar sends
		// them always (warm reads the workspace's Cargo.lock). Ingest links
		// the lock deps of a manifest without a namespace under the empty
		// one, so that is where the shard pass finds them.
		none := ""
		norm.Namespace = &none
	}
	src := &indexSource{idx: idx, intent: norm, perCrate: p.cfg.Limits.KeyCachePerCrate, perVersion: p.cfg.VariantsPerVersion}
	cands, comp, err := compose.Compose(norm, src, p.cfg.Limits)
	if err != nil {
		return plan, OutcomePlanningError, fmt.Errorf("compose plan: %w", err)
	}
	stats := comp.Stats(norm)
	if !p.cfg.NoDemandOrder {
		ds, err := readDemand(idx, intent)
		if err != nil {
			return plan, OutcomePlanningError, fmt.Errorf("read demand: %w", err)
		}
		orderByDemand(cands, ds, norm.CrateNames, &p.cfg)
	}
	var budget wire.Budget
	switch {
	case intent.Budget != nil:
		budget = *intent.Budget
	case !p.cfg.NoClientBudget:
		budget = p.cfg.ClientBudget
	}
	if budget != (wire.Budget{}) {
		cands = admit(cands, budget, p.cfg.NominalSizeBytes, stats)
	}
	compose.CountCandidates(stats, cands)
	plan.Stats = stats
	if len(cands) == 0 {
		return plan, OutcomeNoCandidates, nil
	}
	plan.Disposition = wire.Execute
	plan.Candidates = cands
	return plan, OutcomeExecute, nil
}

// indexSource adapts the index to composition, choosing variants by the
// intent's dimensions.
type indexSource struct {
	idx        Index
	intent     *wire.BuildIntent
	perCrate   int
	perVersion int
	// nsKnown: the shard pass found keys built in the intent's namespace.
	// Then a crate it left unresolved was never built there with its locked
	// versions, and the history and key-cache passes, which can only offer
	// keys of other versions or other jobs, are skipped.
	nsKnown bool
	// unmatched are crates whose locked versions were built in the
	// namespace, but whose kept keys there are all of other dimensions
	// than the intent's. A namespace shared by several jobs (the empty
	// one, where lock deps without a namespace are linked) keeps a few
	// newest keys per dep across all of them, so the history pass may
	// still find the right one.
	unmatched map[string]bool
}

// ShardCandidates starts from the keys of the latest build with the intent's
// identity (namespace, lock, target, profile, toolchain): when the lock did
// not change they are exactly what this build needs, except for edited
// workspace members. Every other crate of the lock gets the best keys built
// in the namespace with any of its locked versions, as many as the crate has
// locked versions that were built there. Ingest links a lock dep to every
// key of its crate (manifest entries carry no version), so the keys of syn 1
// and syn 2 are under both deps, and one key per dep could pick the same key
// twice.
func (s *indexSource) ShardCandidates(namespace string, deps []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	// Group the deps by crate without a slice per crate: the first dep of
	// each crate in lock order, and next[i] the crate's dep after dep i.
	keys := make([]string, len(deps))
	crateOf := make([]string, len(deps))
	next := make([]int, len(deps))
	var firsts []int
	last := make(map[string]int, len(deps))
	for i, d := range deps {
		keys[i] = d.Key()
		crateOf[i] = cargolock.CrateName(d.Name)
		next[i] = -1
		if j, ok := last[crateOf[i]]; ok {
			next[j] = i
		} else {
			firsts = append(firsts, i)
		}
		last[crateOf[i]] = i
	}
	id := store.BuildIdentity{Namespace: namespace, Target: s.intent.Target, Profile: s.intent.Profile, Toolchain: s.intent.Toolchain, LockDeps: keys}
	same, err := s.idx.Identity(id.Digest())
	if err != nil {
		return nil, err
	}
	out := make([]wire.PrefetchCandidate, 0, len(same)+len(firsts))
	covered := make(map[string]bool, len(same))
	for i := range same {
		covered[same[i].CrateName] = true
		out = append(out, candidate(&same[i]))
	}
	s.nsKnown = len(same) > 0
	for _, first := range firsts {
		if covered[crateOf[first]] {
			continue
		}
		var vs []store.Variant
		built := 0
		for i := first; i >= 0; i = next[i] {
			dv, err := s.idx.DepVariants(namespace, keys[i])
			if err != nil {
				return nil, err
			}
			if len(dv) == 0 {
				continue
			}
			built++
			if built == 1 {
				vs = dv // shared with the store: never modified
				continue
			}
			if built == 2 {
				vs = slices.Clone(vs)
			}
			for j := range dv {
				if !slices.ContainsFunc(vs, func(v store.Variant) bool { return v.CacheKey == dv[j].CacheKey }) {
					vs = append(vs, dv[j])
				}
			}
		}
		if built == 0 {
			continue
		}
		s.nsKnown = true
		vs, _ = compose.CapTo(s.rank(vs, built == 1), built*s.perVersion)
		if len(vs) == 0 {
			if s.unmatched == nil {
				s.unmatched = make(map[string]bool)
			}
			s.unmatched[crateOf[first]] = true
		}
		for i := range vs {
			out = append(out, candidate(&vs[i]))
		}
	}
	return out, nil
}

func (s *indexSource) HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error) {
	out := make([]wire.PrefetchCandidate, 0, 2*len(crates))
	for _, c := range crates {
		if s.nsKnown && !s.unmatched[c] {
			continue
		}
		vs, err := s.idx.Variants(c)
		if err != nil {
			return nil, err
		}
		vs = newestBuilds(s.rank(vs, true))
		for i := range vs {
			out = append(out, candidate(&vs[i]))
		}
	}
	return out, nil
}

// newestBuilds keeps, of a crate's ranked variants, the keys the newest
// build of each family (target, profile, toolchain, as far as known) used:
// a build of the crate needs one key per locked version of it, and without
// lock deps the keys the family's latest build used are the best guess of
// both which and how many. The second-newest key of a family is an older
// version's or an older build's, and almost never needed again. A build
// sees all its keys at once, so they share their last-seen time. The order
// of vs is kept; the result may share vs's array and must not be modified.
func newestBuilds(vs []store.Variant) []store.Variant {
	type family struct{ target, profile, toolchain string }
	newest := make(map[family]int64, 4)
	for i := range vs {
		f := family{vs[i].Target, vs[i].Profile, vs[i].Toolchain}
		newest[f] = max(newest[f], vs[i].LastSeenMs)
	}
	keep := func(v *store.Variant) bool { return v.LastSeenMs == newest[family{v.Target, v.Profile, v.Toolchain}] }
	if !slices.ContainsFunc(vs, func(v store.Variant) bool { return !keep(&v) }) {
		return vs
	}
	out := make([]store.Variant, 0, len(vs))
	for i := range vs {
		if keep(&vs[i]) {
			out = append(out, vs[i])
		}
	}
	return out
}

func (s *indexSource) KeyCacheKeys(crate string) ([]string, error) {
	if s.nsKnown {
		return nil, nil
	}
	// A few more than the per-crate cap keeps the drop counters meaningful
	// without listing every key of a crate with thousands.
	limit := 4 * s.perCrate
	if limit <= 0 {
		limit = 0
	}
	return s.idx.CrateKeys(crate, limit)
}

// rank drops the variants built for another target, profile or toolchain
// than the intent's (every cache key hashes all three, so such a key is never
// the one a build needs) and orders the rest: those matching more of the
// intent's dimensions first (a variant of unknown dimensions may still be
// right), then newest first, then by key. byRecency says vs is already in
// that recency order (one store list). The result may share vs's array, so
// it must not be modified.
func (s *indexSource) rank(vs []store.Variant, byRecency bool) []store.Variant {
	in := s.intent
	differs := func(want, got string) bool { return want != "" && got != "" && want != got }
	score := func(v *store.Variant) int {
		n := 0
		if in.Toolchain != "" && v.Toolchain == in.Toolchain {
			n += 4
		}
		if in.Target != "" && v.Target == in.Target {
			n += 2
		}
		if in.Profile != "" && v.Profile == in.Profile {
			n++
		}
		return n
	}
	// Most plans keep every variant in store order: check before copying.
	keep := byRecency
	for i := 0; keep && i < len(vs); i++ {
		v := &vs[i]
		keep = !differs(in.Target, v.Target) && !differs(in.Profile, v.Profile) && !differs(in.Toolchain, v.Toolchain) &&
			(i == 0 || score(v) <= score(&vs[i-1]))
	}
	if keep {
		return vs
	}
	kept := make([]store.Variant, 0, len(vs))
	for i := range vs {
		v := &vs[i]
		if !differs(in.Target, v.Target) && !differs(in.Profile, v.Profile) && !differs(in.Toolchain, v.Toolchain) {
			kept = append(kept, *v)
		}
	}
	slices.SortStableFunc(kept, func(a, b store.Variant) int {
		return cmp.Or(cmp.Compare(score(&b), score(&a)), cmp.Compare(b.LastSeenMs, a.LastSeenMs), strings.Compare(a.CacheKey, b.CacheKey))
	})
	return kept
}

func candidate(v *store.Variant) wire.PrefetchCandidate {
	return wire.PrefetchCandidate{
		CacheKey:      v.CacheKey,
		CrateName:     v.CrateName,
		CompileTimeMs: v.CompileTimeMs,
		SizeBytes:     v.SizeBytes,
	}
}

// admit applies a requester's budget. Over the key budget, the last
// candidates in dispatch order go; over the byte budget, the ones that save
// the least compile time per byte go first (unknown sizes are charged a
// nominal size). Dispatch order of what stays is unchanged.
func admit(cands []wire.PrefetchCandidate, b wire.Budget, nominal uint64, stats *wire.PlanStats) []wire.PrefetchCandidate {
	before := len(cands)
	if b.MaxKeys > 0 && len(cands) > b.MaxKeys {
		cands = cands[:b.MaxKeys]
		stats.Truncated = append(stats.Truncated, "max_keys")
	}
	if b.MaxBytes > 0 {
		size := func(c *wire.PrefetchCandidate) uint64 {
			if c.SizeBytes == 0 {
				return nominal
			}
			return c.SizeBytes
		}
		var total uint64
		for i := range cands {
			total += size(&cands[i])
		}
		if total > b.MaxBytes {
			idx := make([]int, len(cands))
			for i := range idx {
				idx[i] = i
			}
			// Least valuable first: lowest compile ms per byte, then later in
			// dispatch order.
			slices.SortStableFunc(idx, func(x, y int) int {
				vx := float64(cands[x].CompileTimeMs) / float64(size(&cands[x]))
				vy := float64(cands[y].CompileTimeMs) / float64(size(&cands[y]))
				if c := cmp.Compare(vx, vy); c != 0 {
					return c
				}
				return cmp.Compare(y, x)
			})
			drop := make([]bool, len(cands))
			for _, i := range idx {
				if total <= b.MaxBytes {
					break
				}
				drop[i] = true
				total -= size(&cands[i])
			}
			kept := cands[:0]
			for i := range cands {
				if !drop[i] {
					kept = append(kept, cands[i])
				}
			}
			cands = kept
			stats.Truncated = append(stats.Truncated, "max_bytes")
		}
	}
	stats.DroppedBudget = before - len(cands)
	return cands
}
