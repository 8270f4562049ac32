package store

import (
	"errors"
	"fmt"
	"slices"

	"github.com/syndtr/goleveldb/leveldb/util"
)

// Variants returns the crate's most recent built variants, newest first (at
// most Options.VariantsPerCrate). An unknown crate yields none and no error.
// The slice is shared with the store's cache: callers must not modify it.
func (s *Store) Variants(crate string) ([]Variant, error) {
	prefix, err := crateIndexPrefix(crate)
	if err != nil {
		return nil, nil
	}
	return s.readIndex(prefix, s.opts.VariantsPerCrate, false, nil)
}

// DepVariants returns the keys most recently built with a lock dep
// ("name@version") in a namespace, newest first (at most Options.KeysPerDep).
// The slice is shared: callers must not modify it.
func (s *Store) DepVariants(namespace, dep string) ([]Variant, error) {
	prefix, err := depIndexPrefix(namespace, dep)
	if err != nil {
		return nil, nil
	}
	return s.readIndex(prefix, s.opts.KeysPerDep, true, nil)
}

// readIndex returns the first limit distinct keys under an index prefix,
// through the cache, and records the read in rec when it is not nil. Dep
// indexes can hold a stale older entry for a key that was rebuilt without
// that dep; keys are deduplicated, newest kept.
func (s *Store) readIndex(prefix []byte, limit int, withCrate bool, rec *Reads) ([]Variant, error) {
	e, ok, epoch := s.lists.get(prefix)
	if ok {
		rec.add(e.key, e.ver)
		return e.vs, nil
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	it := s.db.NewIterator(util.BytesPrefix(prefix), nil)
	defer it.Release()
	vs := make([]Variant, 0, min(limit, 4))
	seen := make(map[rawKey]bool, limit)
	for scanned := 0; it.Next() && len(vs) < limit && scanned < 8*limit; scanned++ {
		at, k, ok := parseRecent(it.Key())
		if !ok || seen[k] {
			continue
		}
		seen[k] = true
		v := Variant{CacheKey: k.String(), LastSeenMs: at}
		if s.forget.hidden(v.CacheKey, at) {
			continue // a dropped key's entry, not yet swept
		}
		if !withCrate {
			v.CrateName = s.names.intern(it.Key()[2 : 2+int(it.Key()[1])])
		}
		if err := decodeEntry(it.Value(), &v, withCrate, s.names); err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	vs = slices.Clip(vs)
	key := string(prefix)
	rec.add(key, s.lists.fill(key, vs, epoch))
	return vs, nil
}

// ObjectETag returns the ETag recorded when a bucket object was crawled.
func (s *Store) ObjectETag(key string) (string, bool, error) {
	b, err := s.get(objectKey(key))
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return string(b), true, nil
}
