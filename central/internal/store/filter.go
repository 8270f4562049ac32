package store

import (
	"hash/maphash"
	"math/bits"
)

// keyFilter is an in-memory Bloom filter of the cache keys in the database.
// Most keys an ingest names are new, and a goleveldb lookup that proves a key
// absent costs a filter-block read per table; this filter answers "new" for
// ~99% of them from memory (10 bits per key). It is rebuilt on open and grown
// (rebuilt larger) when it fills; it is only used under the write lock.
type keyFilter struct {
	seed     maphash.Seed
	bits     []uint64
	mask     uint64
	n, limit int
}

const filterProbes = 7

func newKeyFilter(capacity int) *keyFilter {
	capacity = max(capacity, 1<<12)
	m := uint64(1) << bits.Len64(uint64(capacity*10)-1) // bits, a power of two
	return &keyFilter{seed: maphash.MakeSeed(), bits: make([]uint64, m/64), mask: m - 1, limit: capacity}
}

func (f *keyFilter) probes(k *rawKey) (uint64, uint64) {
	h := maphash.Bytes(f.seed, k[:])
	return h, (h>>33 | h<<31) | 1
}

func (f *keyFilter) add(k *rawKey) {
	h1, h2 := f.probes(k)
	for i := uint64(0); i < filterProbes; i++ {
		b := (h1 + i*h2) & f.mask
		f.bits[b/64] |= 1 << (b % 64)
	}
	f.n++
}

func (f *keyFilter) mayContain(k *rawKey) bool {
	h1, h2 := f.probes(k)
	for i := uint64(0); i < filterProbes; i++ {
		b := (h1 + i*h2) & f.mask
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

func (f *keyFilter) full() bool { return f.n >= f.limit }
