// Package readiness decides whether this replica serves plans and accepts
// writes: it is ready when every registered condition holds — the database is
// open and seeded, and with leader election the Lease is held, and with a
// bucket the first crawl is done.
package readiness

import "sync"

// Flag is a set of named conditions with a change callback (for the ready
// gauge).
type Flag struct {
	mu       sync.Mutex
	conds    map[string]bool
	ready    bool
	onChange func(bool)
}

// New returns a flag that starts not ready, with the given conditions all
// false. onChange may be nil.
func New(onChange func(bool), conditions ...string) *Flag {
	f := &Flag{conds: make(map[string]bool), onChange: onChange}
	for _, c := range conditions {
		f.conds[c] = false
	}
	if onChange != nil {
		onChange(false)
	}
	return f
}

// Require adds a condition, false until set.
func (f *Flag) Require(condition string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conds[condition] = false
	f.update()
}

// Ready reports whether every condition holds (and there is at least one).
func (f *Flag) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// SetCondition changes one condition.
func (f *Flag) SetCondition(condition string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conds[condition] = ok
	f.update()
}

func (f *Flag) update() {
	ready := len(f.conds) > 0
	for _, ok := range f.conds {
		ready = ready && ok
	}
	if ready != f.ready {
		f.ready = ready
		if f.onChange != nil {
			f.onChange(ready)
		}
	}
}

// Conditions used by kache-service.
const (
	// Started: the database is open, the seed imported, the listener bound.
	Started = "started"
	// Lease: this replica holds the leader Lease (HA only).
	Lease = "lease"
	// Bucket: the first crawl of the bucket finished (with a bucket only).
	Bucket = "bucket"
)

// Set sets the Started condition; tests and single-condition users call it.
func (f *Flag) Set(ready bool) { f.SetCondition(Started, ready) }
