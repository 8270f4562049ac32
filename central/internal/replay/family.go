package replay

import (
	"math"

	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Planning under ambiguity, as kache-sidecar's planner does it
// (sidecar/internal/planner/family.go): for an intent without a profile,
// namespace or job context, the sidecar asks central once per profile and
// waits briefly for the build's first reads through its S3 surface, which
// tell the build's profile.

// sidecarProfiles are the profiles a sidecar splits a plan by
// (planner.Config.Profiles' default): cargo's two built-in profiles.
var sidecarProfiles = []string{"debug", "release"}

// revealWaitMs is how long the sidecar waits for a read that tells the
// profile before answering with every profile's keys
// (planner.Config.RevealWait's default).
const revealWaitMs = 150

// familySet has one bit per sidecarProfiles entry.
type familySet uint8

// split is a plan split by profile: each profile's plan from central, and
// which of them named each key.
type split struct {
	plans [][]wire.PrefetchCandidate
	fams  map[string]familySet
}

// merge is the chosen profiles' plans merged in their order, in dispatch
// order.
func (s *split) merge(chosen familySet) []wire.PrefetchCandidate {
	var out []wire.PrefetchCandidate
	seen := make(map[string]bool, len(s.fams))
	for i, p := range s.plans {
		if chosen&(1<<i) == 0 {
			continue
		}
		for _, c := range p {
			if !seen[c.CacheKey] {
				seen[c.CacheKey] = true
				out = append(out, c)
			}
		}
	}
	compose.SortForDispatch(out)
	return out
}

// splitter is a policy whose last plan was split (nil when it was not).
type splitter interface {
	lastSplit() *split
}

// splitPlan asks plan once per profile. The plan returned holds every
// profile's keys: the answer when no read tells the profile.
func splitPlan(in wire.BuildIntent, plan func(*wire.BuildIntent) (wire.PrefetchPlan, error)) (wire.PrefetchPlan, *split, error) {
	s := &split{plans: make([][]wire.PrefetchCandidate, len(sidecarProfiles)), fams: make(map[string]familySet)}
	name := ""
	for i, profile := range sidecarProfiles {
		sub := in
		sub.Profile = profile
		p, err := plan(&sub)
		if err != nil {
			return wire.PrefetchPlan{}, nil, err
		}
		if p.Disposition != wire.Execute {
			continue
		}
		if name == "" {
			name = p.Planner
		}
		s.plans[i] = p.Candidates
		for _, c := range p.Candidates {
			s.fams[c.CacheKey] |= 1 << i
		}
	}
	if len(s.fams) == 0 {
		return wire.PrefetchPlan{Planner: name, Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}, nil, nil
	}
	all := familySet(1)<<len(sidecarProfiles) - 1
	return executePlan(name, s.merge(all)), s, nil
}

// reveal is the sidecar's answer to a split plan: it waits for the build's
// first reads (the GET kache makes through the sidecar's S3 surface when
// rustc asks for a unit, at its demand time) and answers with the plans of
// the profiles holding the first read key that not every profile's plan
// holds, as soon as it comes: every key a build reads is of its own
// profile. When none comes within the wait it answers with every profile's
// keys. It returns the candidates kache and the sidecar prefetch, and when
// their downloads start. demandMs are the demand times without
// prefetching, which are the real ones until a prefetched artifact could
// first be restored, after the wait.
func (r *runner) reveal(b *Build, cands []wire.PrefetchCandidate, s *split, demandMs []float64) ([]wire.PrefetchCandidate, float64) {
	all := familySet(1)<<len(sidecarProfiles) - 1
	at, chosen := math.Inf(1), familySet(0)
	for u := range b.Units {
		f := s.fams[b.Units[u].Key]
		if f != 0 && f != all && demandMs[u] < at {
			at, chosen = demandMs[u], f
		}
	}
	if at > revealWaitMs {
		r.splits.Unrevealed++
		return cands, r.cfg.Transfer.DispatchMs + revealWaitMs
	}
	r.splits.Revealed++
	return s.merge(chosen), r.cfg.Transfer.DispatchMs + at
}
