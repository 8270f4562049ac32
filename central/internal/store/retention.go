package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Forgetting: the store drops keys that left the bucket, that runners got
// 404s for, or that nothing built, used or listed within the retention
// period, so plans stop naming them and the database stops growing.
//
// A drop deletes, in one synced batch, everything a plan reaches a key
// through directly: its artifact record, its crate-index entry and its
// key-index entry, and writes a tombstone. Dep-index and identity entries
// cannot be found from the key without a scan, so until Sweep deletes them
// reads hide them: an entry of a dropped key written no later than the drop
// is not returned. Compact then rewrites the tables, which is when
// goleveldb gives the space of deleted entries back.

// DropReason says why a key was dropped.
type DropReason uint8

// The reasons a key is dropped.
const (
	// DropDeleted: two complete listings in a row of the bucket's entry
	// manifests did not have the key, after an earlier one had it.
	DropDeleted DropReason = iota + 1
	// DropNotFound: a runner's GET of the key's objects got a 404 (a
	// sidecar reported it; central confirmed it when it has the bucket).
	DropNotFound
	// DropExpired: nothing built, used or listed the key within the
	// retention period.
	DropExpired
)

// DropReasons lists every reason, for metrics.
var DropReasons = []DropReason{DropDeleted, DropNotFound, DropExpired}

// String is the reason's metric label.
func (r DropReason) String() string {
	switch r {
	case DropDeleted:
		return "deleted"
	case DropNotFound:
		return "reported_404"
	case DropExpired:
		return "retention"
	}
	return "unknown"
}

// forgetting is the in-memory side of drops.
type forgetting struct {
	mu sync.RWMutex
	// pending maps each dropped key (hex) whose dep-index and identity
	// entries may remain to its drop time.
	pending  map[string]int64
	npending atomic.Int64
	// guards counts tombstones of reported 404s (it may over-count; exact
	// after Open): while zero, ReportedMissing answers without a read.
	guards  atomic.Int64
	dropped [DropExpired + 1]atomic.Uint64
	// deletes counts entries deleted since the last Compact.
	deletes atomic.Uint64
	// now is the clock of drop times (tests and the benchmark replay
	// history on their own clock); nil means time.Now.
	now func() time.Time
}

// hidden says whether an index entry of key written at atMs belongs to a
// dropped key.
func (f *forgetting) hidden(key string, atMs int64) bool {
	if f.npending.Load() == 0 {
		return false
	}
	f.mu.RLock()
	dropAt, ok := f.pending[key]
	f.mu.RUnlock()
	return ok && atMs <= dropAt
}

// visible removes the variants of dropped keys from an identity written at
// atMs, in place.
func (f *forgetting) visible(vs []Variant, atMs int64) []Variant {
	if f.npending.Load() == 0 {
		return vs
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.DeleteFunc(vs, func(v Variant) bool {
		dropAt, ok := f.pending[v.CacheKey]
		return ok && atMs <= dropAt
	})
}

func (f *forgetting) hide(keys []string, atMs int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		f.pending = make(map[string]int64, len(keys))
	}
	for _, k := range keys {
		f.pending[k] = atMs
	}
	f.npending.Store(int64(len(f.pending)))
}

// unhide ends the hiding of keys dropped at the given times (a later drop
// of the same key stays hidden).
func (f *forgetting) unhide(keys map[string]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, at := range keys {
		if f.pending[k] == at {
			delete(f.pending, k)
		}
	}
	f.npending.Store(int64(len(f.pending)))
}

func (f *forgetting) snapshot() map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m := make(map[string]int64, len(f.pending))
	for k, at := range f.pending {
		m[k] = at
	}
	return m
}

// tombstone is the value of a dropped key's 0x0A entry: uvarint drop time,
// reason byte, then 1 while its dep-index and identity entries may remain
// (0 once swept; only a reported 404's tombstone outlives the sweep).
type tombstone struct {
	atMs    int64
	reason  DropReason
	pending bool
}

func (t tombstone) encode() []byte {
	b := binary.AppendUvarint(make([]byte, 0, 12), uint64(t.atMs))
	p := byte(0)
	if t.pending {
		p = 1
	}
	return append(b, byte(t.reason), p)
}

func decodeTombstone(b []byte) (tombstone, error) {
	d := decoder{b: b}
	t := tombstone{atMs: int64(d.uvarint())}
	t.reason = DropReason(d.byte())
	t.pending = d.byte() == 1
	if d.err != nil {
		return tombstone{}, fmt.Errorf("decode tombstone: %w", d.err)
	}
	return t, nil
}

// scanOpts keeps whole-table scans out of the block cache plans read from.
var scanOpts = &opt.ReadOptions{DontFillCache: true}

// loadTombstones restores the hiding of dropped keys not yet swept.
func (s *Store) loadTombstones() error {
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixTombstone}), scanOpts)
	defer it.Release()
	byAt := map[int64][]string{}
	var guards int64
	for it.Next() {
		t, err := decodeTombstone(it.Value())
		if err != nil {
			return err
		}
		if t.reason == DropNotFound {
			guards++
		}
		if t.pending {
			var k rawKey
			copy(k[:], it.Key()[1:])
			byAt[t.atMs] = append(byAt[t.atMs], k.String())
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("read tombstones: %w", err)
	}
	for at, keys := range byAt {
		s.forget.hide(keys, at)
	}
	s.forget.guards.Store(guards)
	return nil
}

// Dropped is how many keys this process dropped for a reason.
func (s *Store) Dropped(r DropReason) uint64 {
	if int(r) >= len(s.forget.dropped) {
		return 0
	}
	return s.forget.dropped[r].Load()
}

// PendingDrops is how many dropped keys still have dep-index or identity
// entries for Sweep to delete.
func (s *Store) PendingDrops() int { return int(s.forget.npending.Load()) }

// drops accumulates one batch of drops. It is used under writeMu.
type drops struct {
	s      *Store
	reason DropReason
	atMs   int64
	batch  leveldb.Batch
	done   map[rawKey]bool
	keys   []string
}

func (s *Store) newDrops(reason DropReason) *drops {
	now := time.Now
	if s.forget.now != nil {
		now = s.forget.now
	}
	return &drops{s: s, reason: reason, atMs: now().UnixMilli(), done: map[rawKey]bool{}}
}

// add drops k if the store has it.
func (d *drops) add(k rawKey) (bool, error) {
	if d.done[k] {
		return false, nil
	}
	b, err := d.s.get(artifactKey(k))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	r, err := decodeArtifact(k, b)
	if err != nil {
		return false, err
	}
	d.drop(k, &r)
	return true, nil
}

func (d *drops) drop(k rawKey, r *record) {
	d.done[k] = true
	d.batch.Delete(artifactKey(k))
	if ck, err := crateKeyKey(r.CrateName, k); err == nil {
		d.batch.Delete(ck)
	}
	if p, err := crateIndexPrefix(r.CrateName); err == nil && r.builtAtMs != 0 {
		d.batch.Delete(appendRecent(p, r.builtAtMs, k))
	}
	d.batch.Delete(suspectKey(k))
	d.batch.Put(tombstoneKey(k), tombstone{atMs: d.atMs, reason: d.reason, pending: true}.encode())
	d.keys = append(d.keys, k.String())
}

// commit writes the batch. The dropped keys are hidden before the write and
// every cached list is cleared around it, so no read after it returns them.
func (d *drops) commit() (int, error) {
	s, n := d.s, len(d.keys)
	if d.batch.Len() == 0 {
		return 0, nil
	}
	if n == 0 {
		if err := s.db.Write(&d.batch, s.wo); err != nil {
			return 0, fmt.Errorf("write drop batch: %w", err)
		}
		s.forget.deletes.Add(uint64(d.batch.Len()))
		return 0, nil
	}
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], s.artifacts.Load()-uint64(n))
	d.batch.Put(keyArtifactCount, c[:])
	s.forget.hide(d.keys, d.atMs)
	s.lists.clear()
	err := s.db.Write(&d.batch, s.wo)
	s.lists.clear()
	if err != nil {
		undo := make(map[string]int64, n)
		for _, k := range d.keys {
			undo[k] = d.atMs
		}
		s.forget.unhide(undo)
		return 0, fmt.Errorf("write drops: %w", err)
	}
	s.artifacts.Add(^uint64(n - 1))
	s.forget.dropped[d.reason].Add(uint64(n))
	if d.reason == DropNotFound {
		s.forget.guards.Add(int64(n))
	}
	s.forget.deletes.Add(uint64(d.batch.Len()))
	s.generation.Add(1)
	return n, nil
}

// Drop drops cache keys for one reason in one synced batch; keys the store
// does not have are skipped. It returns how many it dropped.
func (s *Store) Drop(keys []string, reason DropReason) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return 0, ErrClosed
	}
	d := s.newDrops(reason)
	for _, key := range keys {
		k, err := parseCacheKey(key)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if _, err := d.add(k); err != nil {
			return 0, err
		}
	}
	return d.commit()
}

// ReportedMissing says whether and when a reported 404 dropped the key
// (within the retention period, after which tombstones are forgotten). A
// crawl does not re-add such a key from an entry manifest listed with an
// older modification time.
func (s *Store) ReportedMissing(cacheKey string) (int64, bool, error) {
	if s.forget.guards.Load() == 0 {
		return 0, false, nil
	}
	k, err := parseCacheKey(cacheKey)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, err := s.get(tombstoneKey(k))
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	t, err := decodeTombstone(b)
	if err != nil || t.reason != DropNotFound {
		return 0, false, err
	}
	return t.atMs, true, nil
}

// Crates calls fn with every crate that has known keys, in index order.
func (s *Store) Crates(fn func(crate string) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixCrateKey}), scanOpts)
	defer it.Release()
	for ok := it.First(); ok; {
		crate, _, err := readLP(it.Key()[1:])
		if err != nil {
			return err
		}
		if err := fn(crate); err != nil {
			return err
		}
		prefix, err := crateKeyPrefix(crate)
		if err != nil {
			return err
		}
		ok = it.Seek(util.BytesPrefix(prefix).Limit)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("list crates: %w", err)
	}
	return nil
}

// Unlisted returns the keys of a crate that an earlier listing of the
// bucket had (Variant.Listed) and that listed, what a listing has for the
// crate now, does not. listed must be sorted.
func (s *Store) Unlisted(crate string, listed []string) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	prefix, err := crateKeyPrefix(crate)
	if err != nil {
		return nil, nil
	}
	var absent []rawKey
	it := s.db.NewIterator(util.BytesPrefix(prefix), scanOpts)
	for it.Next() {
		var k rawKey
		copy(k[:], it.Key()[len(prefix):])
		if _, found := slices.BinarySearch(listed, k.String()); !found {
			absent = append(absent, k)
		}
	}
	err = it.Error()
	it.Release()
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", crate, err)
	}
	var out []string
	for _, k := range absent {
		b, err := s.get(artifactKey(k))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		r, err := decodeArtifact(k, b)
		if err != nil {
			return nil, err
		}
		if r.Listed {
			out = append(out, r.CacheKey)
		}
	}
	return out, nil
}

// ListingResult counts what one complete listing changed.
type ListingResult struct {
	// Marked keys were missing for the first time.
	Marked int
	// Dropped keys were missing from two complete listings in a row.
	Dropped int
	// Cleared keys were listed again after a listing had missed them.
	Cleared int
}

// ApplyListing applies a complete listing of the bucket's entry manifests,
// started at startMs, that did not have the keys in missing (see Unlisted).
// A key missing for the first time is marked; one a previous complete
// listing marked is dropped (DropDeleted), so a key leaves plans within two
// crawl intervals of leaving the bucket, and one missed by a listing that
// raced its upload is not dropped. Marks of keys listed again are cleared,
// unless partial says missing was cut short. Callers must not apply a
// listing that failed or was cut short: an absent key would be dropped.
func (s *Store) ApplyListing(startMs int64, missing []string, partial bool) (ListingResult, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return ListingResult{}, ErrClosed
	}
	marks, err := s.suspects()
	if err != nil {
		return ListingResult{}, err
	}
	var res ListingResult
	d := s.newDrops(DropDeleted)
	miss := make(map[rawKey]bool, len(missing))
	mark := binary.AppendUvarint(nil, uint64(startMs))
	for _, key := range missing {
		k, err := parseCacheKey(key)
		if err != nil {
			return ListingResult{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		miss[k] = true
		if marks[k] {
			dropped, err := d.add(k)
			if err != nil {
				return ListingResult{}, err
			}
			if dropped {
				res.Dropped++
			} else {
				d.batch.Delete(suspectKey(k))
			}
			continue
		}
		switch _, err := s.get(artifactKey(k)); {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return ListingResult{}, err
		default:
			d.batch.Put(suspectKey(k), mark)
			res.Marked++
		}
	}
	if !partial {
		for k := range marks {
			if !miss[k] {
				d.batch.Delete(suspectKey(k))
				res.Cleared++
			}
		}
	}
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(startMs))
	d.batch.Put(keyListing, t[:])
	if _, err := d.commit(); err != nil {
		return ListingResult{}, err
	}
	return res, nil
}

// suspects reads the keys marked missing by a listing.
func (s *Store) suspects() (map[rawKey]bool, error) {
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixSuspect}), nil)
	defer it.Release()
	m := map[rawKey]bool{}
	for it.Next() {
		var k rawKey
		copy(k[:], it.Key()[1:])
		m[k] = true
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read listing marks: %w", err)
	}
	return m, nil
}

// listingMs is the start of the last complete listing, or 0.
func (s *Store) listingMs() (int64, error) {
	b, err := s.get(keyListing)
	switch {
	case errors.Is(err, ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	case len(b) != 8:
		return 0, fmt.Errorf("%w: listing time of %d bytes", errKeyEncoding, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// ExpireResult counts what Expire removed.
type ExpireResult struct {
	Keys       int
	Identities int
	Tombstones int
}

// expireChunk bounds the work done under the write lock at once, so ingest
// is never held up for long by a sweep.
const expireChunk = 4096

// Expire applies the age policy with cutoffMs: it drops keys not built,
// used or listed since (DropExpired), removes identity builds older than it
// and forgets tombstones of drops before it. A key counts as listed since
// the cutoff when an earlier listing had it, the last complete listing
// started after the cutoff and no listing has missed it since.
func (s *Store) Expire(cutoffMs int64) (ExpireResult, error) {
	var res ExpireResult
	if s.closed.Load() {
		return res, ErrClosed
	}
	listed, err := s.listingMs()
	if err != nil {
		return res, err
	}
	expired := func(k rawKey, r *record, marks map[rawKey]bool) bool {
		if r.LastSeenMs >= cutoffMs {
			return false
		}
		return !r.Listed || listed < cutoffMs || marks[k]
	}
	marks, err := s.suspects()
	if err != nil {
		return res, err
	}
	var cands []rawKey
	flushKeys := func() error {
		n, err := s.expireKeys(cands, expired)
		res.Keys += n
		cands = cands[:0]
		return err
	}
	err = s.scan(prefixArtifact, func(key, value []byte) error {
		var k rawKey
		copy(k[:], key[1:])
		r, err := decodeArtifact(k, value)
		if err != nil {
			return err
		}
		if expired(k, &r, marks) {
			cands = append(cands, k)
		}
		if len(cands) >= expireChunk {
			return flushKeys()
		}
		return nil
	})
	if err == nil {
		err = flushKeys()
	}
	if err != nil {
		return res, fmt.Errorf("expire keys: %w", err)
	}
	n, err := s.deleteWhere(prefixIdentity, true, func(v []byte) bool {
		at, n := binary.Uvarint(v)
		return n > 0 && int64(at) < cutoffMs
	})
	res.Identities = n
	if err != nil {
		return res, fmt.Errorf("expire identities: %w", err)
	}
	n, err = s.deleteWhere(prefixTombstone, false, func(v []byte) bool {
		t, err := decodeTombstone(v)
		return err == nil && !t.pending && t.atMs < cutoffMs
	})
	res.Tombstones = n
	if err != nil {
		return res, fmt.Errorf("expire tombstones: %w", err)
	}
	return res, nil
}

// expireKeys drops the keys still expired under the write lock.
func (s *Store) expireKeys(keys []rawKey, expired func(rawKey, *record, map[rawKey]bool) bool) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return 0, ErrClosed
	}
	marks, err := s.suspects()
	if err != nil {
		return 0, err
	}
	d := s.newDrops(DropExpired)
	for _, k := range keys {
		b, err := s.get(artifactKey(k))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		r, err := decodeArtifact(k, b)
		if err != nil {
			return 0, err
		}
		// An ingest may have refreshed it since the scan.
		if expired(k, &r, marks) {
			d.drop(k, &r)
		}
	}
	return d.commit()
}

// scan calls fn for every entry under a one-byte prefix, outside the write
// lock and the block cache. key and value are only valid during the call.
func (s *Store) scan(prefix byte, fn func(key, value []byte) error) error {
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefix}), scanOpts)
	defer it.Release()
	for it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// deleteWhere deletes the entries under a prefix whose value matches, in
// chunks, re-checking each under the write lock. Deleting what plans read
// (visible) clears the cached lists and moves the generation, as a drop
// does.
func (s *Store) deleteWhere(prefix byte, visible bool, match func(value []byte) bool) (int, error) {
	var keys [][]byte
	total := 0
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if s.closed.Load() {
			return ErrClosed
		}
		var b leveldb.Batch
		for _, k := range keys {
			v, err := s.get(k)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if match(v) {
				b.Delete(k)
			}
		}
		keys = keys[:0]
		if b.Len() == 0 {
			return nil
		}
		if visible {
			s.lists.clear()
		}
		err := s.db.Write(&b, s.wo)
		if visible {
			s.lists.clear()
			s.generation.Add(1)
		}
		if err != nil {
			return fmt.Errorf("write deletions: %w", err)
		}
		total += b.Len()
		s.forget.deletes.Add(uint64(b.Len()))
		return nil
	}
	err := s.scan(prefix, func(key, value []byte) error {
		if !match(value) {
			return nil
		}
		keys = append(keys, slices.Clone(key))
		if len(keys) >= expireChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return total, err
}

// SweepResult counts what Sweep removed.
type SweepResult struct {
	// Keys are the dropped keys whose entries are all gone now.
	Keys       int
	DepEntries int
	// Identities counts identity builds rewritten without dropped keys
	// (or deleted when none were left).
	Identities int
}

// Sweep deletes the dep-index and identity entries of dropped keys, which
// reads hide until then.
func (s *Store) Sweep() (SweepResult, error) {
	var res SweepResult
	if s.closed.Load() {
		return res, ErrClosed
	}
	snap := s.forget.snapshot()
	if len(snap) == 0 {
		return res, nil
	}
	byKey := make(map[rawKey]int64, len(snap))
	for h, at := range snap {
		k, err := parseCacheKey(h)
		if err != nil {
			return res, err
		}
		byKey[k] = at
	}
	gone := func(k rawKey, atMs int64) bool {
		dropAt, ok := byKey[k]
		return ok && atMs <= dropAt
	}
	n, err := s.deleteKeysWhere(prefixDep, func(key []byte) bool {
		at, k, ok := parseRecent(key)
		return ok && gone(k, at)
	})
	res.DepEntries = n
	if err != nil {
		return res, fmt.Errorf("sweep dep index: %w", err)
	}
	if res.Identities, err = s.sweepIdentities(gone); err != nil {
		return res, fmt.Errorf("sweep identities: %w", err)
	}
	if err := s.markSwept(byKey); err != nil {
		return res, err
	}
	s.forget.unhide(snap)
	res.Keys = len(snap)
	return res, nil
}

// deleteKeysWhere deletes the entries under a prefix whose key matches.
func (s *Store) deleteKeysWhere(prefix byte, match func(key []byte) bool) (int, error) {
	var keys [][]byte
	total := 0
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if s.closed.Load() {
			return ErrClosed
		}
		var b leveldb.Batch
		for _, k := range keys {
			b.Delete(k)
		}
		keys = keys[:0]
		if err := s.db.Write(&b, s.wo); err != nil {
			return fmt.Errorf("write deletions: %w", err)
		}
		total += b.Len()
		s.forget.deletes.Add(uint64(b.Len()))
		return nil
	}
	err := s.scan(prefix, func(key, _ []byte) error {
		if match(key) {
			keys = append(keys, slices.Clone(key))
		}
		if len(keys) >= expireChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return total, err
}

// sweepIdentities rewrites identity builds without the keys gone says are
// dropped.
func (s *Store) sweepIdentities(gone func(rawKey, int64) bool) (int, error) {
	var keys [][]byte
	total := 0
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if s.closed.Load() {
			return ErrClosed
		}
		var b leveldb.Batch
		for _, k := range keys {
			v, err := s.get(k)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out, left, removed, err := identityWithout(v, gone)
			switch {
			case err != nil:
				return err
			case removed == 0:
			case left == 0:
				b.Delete(k)
			default:
				b.Put(k, out)
			}
		}
		keys = keys[:0]
		if b.Len() == 0 {
			return nil
		}
		if err := s.db.Write(&b, s.wo); err != nil {
			return fmt.Errorf("write identities: %w", err)
		}
		total += b.Len()
		s.forget.deletes.Add(uint64(b.Len()))
		return nil
	}
	err := s.scan(prefixIdentity, func(key, value []byte) error {
		_, _, removed, err := identityWithout(value, gone)
		if err != nil {
			return err
		}
		if removed > 0 {
			keys = append(keys, slices.Clone(key))
		}
		if len(keys) >= expireChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return total, err
}

// identityWithout returns an identity value (see decodeIdentity) without the
// keys gone reports, how many keys it keeps and how many it removed; out is
// nil when none are removed.
func identityWithout(v []byte, gone func(rawKey, int64) bool) (out []byte, left, removed int, err error) {
	d := decoder{b: v}
	at := int64(d.uvarint())
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		return nil, 0, 0, fmt.Errorf("%w: malformed identity", errKeyEncoding)
	}
	entries := d.b
	var kept []byte
	for range n {
		start := d.b
		var k rawKey
		if len(d.b) < len(k) {
			return nil, 0, 0, fmt.Errorf("%w: truncated identity", errKeyEncoding)
		}
		copy(k[:], d.b)
		d.b = d.b[len(k):]
		d.str()
		d.uvarint()
		d.uvarint()
		if d.err != nil {
			return nil, 0, 0, d.err
		}
		if gone(k, at) {
			if removed == 0 {
				// The entries before this one are all kept.
				kept = append(make([]byte, 0, len(entries)), entries[:len(entries)-len(start)]...)
			}
			removed++
			continue
		}
		left++
		if removed > 0 {
			kept = append(kept, start[:len(start)-len(d.b)]...)
		}
	}
	if removed == 0 {
		return nil, left, 0, nil
	}
	out = binary.AppendUvarint(make([]byte, 0, len(kept)+2*binary.MaxVarintLen64), uint64(at))
	out = binary.AppendUvarint(out, uint64(left))
	return append(out, kept...), left, removed, nil
}

// markSwept records that the dropped keys' entries are gone, for the drops
// Sweep started from (a later drop of a key stays pending). Only a reported
// 404's tombstone is kept after that, to keep the crawl from re-adding the
// key (see ReportedMissing), until Expire forgets it.
func (s *Store) markSwept(keys map[rawKey]int64) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	var b leveldb.Batch
	for k, at := range keys {
		v, err := s.get(tombstoneKey(k))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		t, err := decodeTombstone(v)
		if err != nil {
			return err
		}
		switch {
		case !t.pending || t.atMs != at:
		case t.reason == DropNotFound:
			t.pending = false
			b.Put(tombstoneKey(k), t.encode())
		default:
			b.Delete(tombstoneKey(k))
		}
	}
	if err := s.db.Write(&b, s.wo); err != nil {
		return fmt.Errorf("write tombstones: %w", err)
	}
	s.forget.deletes.Add(uint64(b.Len()))
	return nil
}

// DeletesSinceCompaction counts the entries drops, expiry and sweeps deleted
// since the last Compact.
func (s *Store) DeletesSinceCompaction() uint64 { return s.forget.deletes.Load() }

// Compact rewrites the database's tables: goleveldb frees a deleted
// entry's space only when a compaction rewrites its table, which, without
// new writes there, may be never. Drops, expiry and sweeps delete from most
// of the key space, so it compacts all of it.
func (s *Store) Compact() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.forget.deletes.Store(0)
	if err := s.db.CompactRange(util.Range{}); err != nil {
		return fmt.Errorf("compact database: %w", err)
	}
	return nil
}

// TableBytes is the approximate size of the database's tables on disk (its
// journal aside).
func (s *Store) TableBytes() (int64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	sizes, err := s.db.SizeOf([]util.Range{{Start: []byte{0x00}, Limit: []byte{0xff}}})
	if err != nil {
		return 0, fmt.Errorf("size database: %w", err)
	}
	return sizes.Sum(), nil
}

// clear empties the cache, as a writer that cannot tell which lists it
// changes: every shard's epoch moves, so no reader fills a list it read
// before.
func (c *listCache) clear() {
	if c.limit <= 0 {
		return
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.epoch++
		clear(sh.m)
		sh.bytes = 0
		sh.mu.Unlock()
	}
}
