package planner

import (
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// TrackingIndex is an Index whose reads can be recorded: a plan made
// through Tracked stays the answer to its intent until something it read
// changes (Current), however much else is written meanwhile.
type TrackingIndex interface {
	Index
	Tracked(r *store.Reads) *store.Reader
	Current(r *store.Reads) bool
}

// Stamp says whether a plan is still the planner's answer to its intent.
// It is safe for concurrent use once PlanTracked has returned it.
type Stamp struct {
	t     TrackingIndex // nil: only an unchanged generation says so
	reads store.Reads
	idx   Index
	gen   uint64
}

// Current reports whether the plan would come out the same now. It may say
// no when the answer is still the same (the index cannot always tell), never
// the reverse.
func (s *Stamp) Current() bool {
	if s.t != nil {
		return s.t.Current(&s.reads)
	}
	return s.idx.Generation() == s.gen
}

// Bytes approximates the memory the stamp holds.
func (s *Stamp) Bytes() int { return 64 + s.reads.Bytes() }

// PlanTracked is Plan, also returning the stamp that says how long the plan
// stays the answer to intent.
func (p *Planner) PlanTracked(intent *wire.BuildIntent) (wire.PrefetchPlan, Outcome, *Stamp, error) {
	st := &Stamp{idx: p.idx, gen: p.idx.Generation()}
	idx := p.idx
	if t, ok := p.idx.(TrackingIndex); ok {
		st.t = t
		idx = t.Tracked(&st.reads)
	}
	plan, out, err := p.plan(intent, idx)
	st.reads.Seal()
	return plan, out, st, err
}
