// Package readiness holds the flag that decides whether this replica serves
// plans and accepts writes: set once the database is open and seeded, and, with
// leader election, only while this replica holds the Lease.
package readiness

import "sync/atomic"

// Flag is a readiness flag with a change callback (for the ready gauge).
type Flag struct {
	v        atomic.Bool
	onChange func(bool)
}

// New returns a flag that starts not ready. onChange may be nil.
func New(onChange func(bool)) *Flag {
	f := &Flag{onChange: onChange}
	if onChange != nil {
		onChange(false)
	}
	return f
}

// Ready reports the flag.
func (f *Flag) Ready() bool { return f.v.Load() }

// Set changes the flag and reports the change.
func (f *Flag) Set(ready bool) {
	if f.v.Swap(ready) != ready && f.onChange != nil {
		f.onChange(ready)
	}
}
