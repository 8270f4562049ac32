// Package bufpool pools the byte buffers HTTP handlers encode responses into.
package bufpool

import "sync"

const (
	initialCap = 64 << 10
	// maxKeptCap: a buffer that grew past it goes to the GC, not the pool.
	maxKeptCap = 4 << 20
)

var pool = sync.Pool{New: func() any { b := make([]byte, 0, initialCap); return &b }}

// Get returns a buffer of length 0 or more; use (*b)[:0].
func Get() *[]byte { return pool.Get().(*[]byte) }

// Put returns a buffer to the pool unless it grew past what is worth keeping.
func Put(b *[]byte) {
	if cap(*b) <= maxKeptCap {
		pool.Put(b)
	}
}
