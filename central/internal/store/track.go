package store

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync/atomic"
)

// Tracked reads: a plan reads a few hundred lists (dep and crate indexes, an
// identity, key lists), all through the list cache, where each has a
// version. Reads remembers those versions, so whether anything a plan read
// has changed since can be told without reading it again (Current): a write
// then invalidates only the cached plans that read what it changed.

// Reads records what one reader read. Fill it through Tracked; afterwards
// it is read-only and Current may be called from any goroutine.
type Reads struct {
	// gen is a store generation at which every list read was known to be
	// current.
	gen   atomic.Uint64
	lists []listRead
	// untracked: something was read that has no version (a list the cache
	// could not keep, an empty store); then only an unchanged generation
	// says nothing changed.
	untracked bool
}

type listRead struct {
	key string
	ver uint64
}

func (r *Reads) add(key string, ver uint64) {
	if r == nil {
		return
	}
	if ver == 0 {
		r.untracked = true
		return
	}
	r.lists = append(r.lists, listRead{key: key, ver: ver})
}

// Seal ends the recording: r is kept (in a cache) from now on, so the
// spare capacity of its list goes.
func (r *Reads) Seal() { r.lists = slices.Clip(r.lists) }

// Bytes approximates the memory r holds (the keys are the cache's).
func (r *Reads) Bytes() int { return 64 + 24*cap(r.lists) }

// Tracked returns a reader of s that records what it reads in r. r must be
// new; it belongs to one reader.
func (s *Store) Tracked(r *Reads) *Reader {
	r.gen.Store(s.generation.Load())
	return &Reader{s: s, r: r}
}

// Current reports whether nothing r recorded has changed since it was read.
// A false answer can be wrong only in the safe direction (a list evicted from
// the cache counts as changed).
func (s *Store) Current(r *Reads) bool {
	// Every write moves the generation after its lists are settled, so a
	// generation read before checking them covers every write it counts.
	g := s.generation.Load()
	if r.gen.Load() == g {
		return true
	}
	if r.untracked {
		return false
	}
	for i := range r.lists {
		if !s.lists.current(r.lists[i].key, r.lists[i].ver) {
			return false
		}
	}
	r.gen.Store(g)
	return true
}

// Reader reads the store like Store does, recording what it reads.
type Reader struct {
	s *Store
	r *Reads
}

// Variants is Store.Variants, recorded.
func (t *Reader) Variants(crate string) ([]Variant, error) {
	prefix, err := crateIndexPrefix(crate)
	if err != nil {
		return nil, nil
	}
	return t.s.readIndex(prefix, t.s.opts.VariantsPerCrate, false, t.r)
}

// DepVariants is Store.DepVariants, recorded.
func (t *Reader) DepVariants(namespace, dep string) ([]Variant, error) {
	prefix, err := depIndexPrefix(namespace, dep)
	if err != nil {
		return nil, nil
	}
	return t.s.readIndex(prefix, t.s.opts.KeysPerDep, true, t.r)
}

// Identity is Store.Identity, recorded.
func (t *Reader) Identity(digest [32]byte) ([]Variant, error) {
	return t.s.readIdentity(digest, t.r)
}

// CrateKeys is Store.CrateKeys, recorded.
func (t *Reader) CrateKeys(crate string, limit int) ([]string, error) {
	return t.s.crateKeys(crate, limit, t.r)
}

// ArtifactCount is Store.ArtifactCount; an empty store's answer changes
// with any write.
func (t *Reader) ArtifactCount() uint64 {
	n := t.s.ArtifactCount()
	if n == 0 {
		t.r.untracked = true
	}
	return n
}

// Generation is Store.Generation.
func (t *Reader) Generation() uint64 { return t.s.Generation() }

// readIdentity reads an identity through the list cache (an unknown one is
// cached as an empty list), hiding the keys of pending drops as the indexes
// do.
func (s *Store) readIdentity(digest [32]byte, rec *Reads) ([]Variant, error) {
	key := identityKey(digest)
	e, ok, epoch := s.lists.get(key)
	if ok {
		rec.add(e.key, e.ver)
		return nilIfEmpty(e.vs), nil
	}
	b, err := s.get(key)
	vs := []Variant{}
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, err
	default:
		at, dec, err := decodeIdentity(b, s.names)
		if err != nil {
			return nil, fmt.Errorf("read identity %x: %w", digest[:4], err)
		}
		for i := range dec {
			dec[i].LastSeenMs = at
		}
		vs = s.forget.visible(dec, at)
	}
	k := string(key)
	rec.add(k, s.lists.fill(k, vs, epoch))
	return nilIfEmpty(vs), nil
}

func nilIfEmpty(vs []Variant) []Variant {
	if len(vs) == 0 {
		return nil
	}
	return vs
}

// maxCachedKeyLimit bounds the CrateKeys limits whose answers are cached;
// keyLimits in Store has one bit per limit cached so far, so a writer knows
// which cached answers a new key of a crate changes.
const maxCachedKeyLimit = 63

// crateKeys is CrateKeys through the list cache for small limits, under the
// key-index prefix followed by the limit.
func (s *Store) crateKeys(crate string, limit int, rec *Reads) ([]string, error) {
	prefix, err := crateKeyPrefix(crate)
	if err != nil {
		return nil, nil
	}
	if limit <= 0 || limit > maxCachedKeyLimit {
		if rec != nil {
			rec.untracked = true
		}
		return s.scanCrateKeys(prefix, crate, limit)
	}
	// Announce the limit before reading: a writer that misses the bit wrote
	// before this read began.
	if bit := uint64(1) << limit; s.keyLimits.Load()&bit == 0 {
		s.keyLimits.Or(bit)
	}
	key := append(prefix, byte(limit))
	e, ok, epoch := s.lists.get(key)
	if ok {
		rec.add(e.key, e.ver)
		return keysOf(e.vs), nil
	}
	keys, err := s.scanCrateKeys(prefix, crate, limit)
	if err != nil {
		return nil, err
	}
	vs := make([]Variant, len(keys))
	for i, k := range keys {
		vs[i] = Variant{CacheKey: k}
	}
	k := string(key)
	rec.add(k, s.lists.fill(k, vs, epoch))
	return keys, nil
}

func keysOf(vs []Variant) []string {
	if len(vs) == 0 {
		return nil
	}
	keys := make([]string, len(vs))
	for i := range vs {
		keys[i] = vs[i].CacheKey
	}
	return keys
}

// crateKeyLists are the cache keys of a crate's cached CrateKeys answers.
func (s *Store) crateKeyLists(crate string, fn func(key string)) {
	limits := s.keyLimits.Load()
	if limits == 0 {
		return
	}
	prefix, err := crateKeyPrefix(crate)
	if err != nil {
		return
	}
	for limits != 0 {
		l := bits.TrailingZeros64(limits)
		limits &^= 1 << l
		fn(string(append(prefix, byte(l))))
	}
}
