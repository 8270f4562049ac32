package replay

import (
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Policy is one planning policy under test. Plan is called before a build
// with the bucket as it is then; Learn after each build completes, in
// completion order, with the manifest `kache save-manifest` wrote. Nothing
// else reaches a policy, so none sees the future.
type Policy interface {
	Name() string
	Plan(b *Build) (wire.PrefetchPlan, error)
	Learn(b *Build, m *wire.BuildManifest, endMs int64) error
}

// remotePlanner marks policies the daemon reaches over HTTP: their answers
// go through the daemon's result handling (kache-protocol.md 3.4), so
// use_fallback or an empty execute plan runs kache's local fallback planner
// instead.
type remotePlanner interface {
	Policy
	remote()
}

// The policy names of the results file, in table order.
const (
	PolicyNone          = "none"
	PolicyKacheFallback = "kache_fallback"
	PolicyKacheService  = "kache_service"
	PolicyLockfileAll   = "lockfile_all"
	PolicyPlanner       = "planner"
	PolicyOracle        = "oracle"
	// PolicyOracleLead is the oracle's plan fetched by the sidecar's warm
	// from --warm-lead before the first rustc (only with a lead).
	PolicyOracleLead = "oracle_lead"
	// PolicyOracleSidecar is the oracle's plan fetched by the sidecar
	// without a lead (only without one; with a lead oracle_lead is).
	PolicyOracleSidecar = "oracle_sidecar"
	// PolicyAllLocal is the bound: every needed, available artifact local
	// at t = 0, with no transfer at all.
	PolicyAllLocal = "all_local"
)

// warmer is a policy whose plan the sidecar's warm fetches from the lead
// before the first rustc (Config.WarmLeadMs): its plan is asked that long
// before the build starts, from what central knew then, and its downloads
// start that much earlier.
type warmer interface {
	warmed() bool
}

// sidecarFetched is a policy whose plans the sidecar's prefetch engine
// fetches, so its big objects are split (TransferModel.SplitParts).
type sidecarFetched interface {
	viaSidecar() bool
}

func executePlan(name string, cands []wire.PrefetchCandidate) wire.PrefetchPlan {
	if cands == nil {
		cands = []wire.PrefetchCandidate{}
	}
	return wire.PrefetchPlan{Planner: name, Disposition: wire.Execute, Candidates: cands}
}

// none never prefetches: the baseline every build pays without a plan.
type none struct{}

func (none) Name() string                                   { return PolicyNone }
func (none) Plan(*Build) (wire.PrefetchPlan, error)         { return executePlan(PolicyNone, nil), nil }
func (none) Learn(*Build, *wire.BuildManifest, int64) error { return nil }

// oracle fetches exactly the needed keys the bucket holds, in kache's
// dispatch order with the true compile times: the ceiling for every score.
// With sidecar it is fetched by the sidecar's engine (oracle_sidecar), with
// lead too by the sidecar's warm from the lead on (oracle_lead).
type oracle struct{ lead, sidecar bool }

func (o oracle) Name() string {
	switch {
	case o.lead:
		return PolicyOracleLead
	case o.sidecar:
		return PolicyOracleSidecar
	}
	return PolicyOracle
}

func (o oracle) warmed() bool     { return o.lead }
func (o oracle) viaSidecar() bool { return o.sidecar || o.lead }

func (oracle) Plan(b *Build) (wire.PrefetchPlan, error) {
	var cands []wire.PrefetchCandidate
	for i := range b.Units {
		u := &b.Units[i]
		if !u.Available {
			continue
		}
		d := uint32(u.Demand)
		cands = append(cands, wire.PrefetchCandidate{CacheKey: u.Key, CrateName: u.Crate, CompileTimeMs: u.CompileMs, SizeBytes: u.SizeBytes, Source: wire.SourceShard, DemandIndex: &d})
	}
	compose.SortForDispatch(cands)
	return executePlan(PolicyOracle, cands), nil
}

func (oracle) Learn(*Build, *wire.BuildManifest, int64) error { return nil }

// allLocal is the bound no prefetcher can beat: the oracle's keys, all
// local when the first rustc starts (the runner simply has them), so each
// costs only its restore. Its bytes and requests are what fetching them
// would have cost.
type allLocal struct{ oracle }

func (allLocal) Name() string     { return PolicyAllLocal }
func (allLocal) warmed() bool     { return false }
func (allLocal) viaSidecar() bool { return false }
func (allLocal) instant() bool    { return true }

// instant is a policy whose plan needs no transfer: every key it names that
// the bucket holds is local at t = 0.
type instant interface {
	instant() bool
}

// localDownloads are the downloads of an instant plan: every existing key,
// complete at t = 0.
func localDownloads(cands []wire.PrefetchCandidate, bucket *Bucket) []Download {
	out := make([]Download, 0, len(cands))
	seen := make(map[string]bool, len(cands))
	for _, c := range cands {
		if seen[c.CacheKey] {
			continue
		}
		seen[c.CacheKey] = true
		size, ok := bucket.Get(c.CrateName, c.CacheKey)
		out = append(out, Download{Key: c.CacheKey, Crate: c.CrateName, Exists: ok, Size: size})
	}
	return out
}

// lockfileAll fetches every stored variant of every crate in Cargo.lock (by
// the correct crate directory), in demand order. The list stops at the
// client's key budget: the daemon would drop the rest unread.
type lockfileAll struct {
	bucket  *Bucket
	maxKeys int
}

func (*lockfileAll) Name() string { return PolicyLockfileAll }

func (p *lockfileAll) Plan(b *Build) (wire.PrefetchPlan, error) {
	var cands []wire.PrefetchCandidate
	for i, name := range b.Intent.CrateNames {
		crate := cargolock.CrateName(name)
		d := uint32(i)
		for _, k := range p.bucket.List(crate) {
			if p.maxKeys > 0 && len(cands) >= p.maxKeys {
				return executePlan(PolicyLockfileAll, cands), nil
			}
			cands = append(cands, wire.PrefetchCandidate{CacheKey: k, CrateName: crate, Source: wire.SourceKeyCache, DemandIndex: &d})
		}
	}
	return executePlan(PolicyLockfileAll, cands), nil
}

func (*lockfileAll) Learn(*Build, *wire.BuildManifest, int64) error { return nil }

// timelineLearner is a policy that learns from the build timelines of the
// builds run under its own plans (kache's record and the sidecar's outcome
// record): the runner keeps each build's run for it until the build
// completes.
type timelineLearner interface {
	learnsTimelines() bool
}
