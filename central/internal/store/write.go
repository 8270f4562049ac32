package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
)

// Artifact observations and their links, applied atomically by Apply.
type (
	// Observation is everything one ingest learned.
	Observation struct {
		// AtMs is when the artifacts were seen (the manifest's creation time).
		AtMs      int64
		Artifacts []Artifact
		DepLinks  []DepLink
		// Identity, when set, makes these artifacts the latest build of
		// an identity.
		Identity *IdentityBuild
		// Demand, when set, is what a build timeline taught about when
		// its family asks for each crate.
		Demand *DemandObservation
		// SeedDigest, when set, marks a seed file as imported in the same batch.
		SeedDigest string
		// Objects marks bucket objects (key -> ETag) as crawled in the same
		// batch, so a crash never records an object whose data was lost.
		Objects map[string]string
		// NoSync writes without waiting for the disk: for what the bucket
		// still holds (a crawl), where a crash loses the observation and
		// its Objects marks together and the next crawl reads it again.
		NoSync bool
	}
	// Artifact is one cache key seen.
	Artifact struct {
		CacheKey      string
		CrateName     string
		CompileTimeMs uint64
		SizeBytes     uint64
		Target        string
		Profile       string
		Toolchain     string
		// SeenAtMs overrides the observation's AtMs (0 = use AtMs).
		SeenAtMs int64
		// ListedOnly: known to exist, not known to have been built.
		ListedOnly bool
		// Listed: seen in a listing of the bucket's entry manifests.
		Listed bool
	}
	// DepLink says an artifact was built with a lock dep in a namespace.
	DepLink struct {
		Namespace string
		Dep       string
		Artifact  int
	}
	// ApplyResult counts what an Apply stored.
	ApplyResult struct {
		Stored int
		New    int
	}
)

// writeSet accumulates one batch and what it changes.
type writeSet struct {
	batch   leveldb.Batch
	result  ApplyResult
	records map[rawKey]*record
	// prevBuilt is each record's index time before this batch; dep entries
	// written then move from there.
	prevBuilt map[rawKey]int64
	newKeys   []rawKey
	// crates and deps hold the index entries written, by index prefix, to
	// update cached lists after the write.
	crates map[string][]Variant
	deps   map[string][]Variant
	// idents are the identities written, with their build times; keyCrates
	// the crates that got new keys. Their cached lists are dropped after
	// the write.
	idents    map[[32]byte]int64
	keyCrates map[string]struct{}
	// demands are the demand rows written, by family.
	demands map[[32]byte][]CrateDemand
	// noSync: no observation in the batch needs a synced write.
	noSync bool
	// merged, key and val are scratch space reused across observations.
	merged []*record
	key    []byte
	val    []byte
}

func newWriteSet() *writeSet {
	return &writeSet{
		records:   make(map[rawKey]*record),
		prevBuilt: make(map[rawKey]int64),
		crates:    make(map[string][]Variant),
		deps:      make(map[string][]Variant),
		idents:    make(map[[32]byte]int64),
		keyCrates: make(map[string]struct{}),
		demands:   make(map[[32]byte][]CrateDemand),
	}
}

// reset empties w for the next batch, keeping its allocations.
func (w *writeSet) reset() {
	w.batch.Reset()
	w.result = ApplyResult{}
	clear(w.records)
	clear(w.prevBuilt)
	w.newKeys = w.newKeys[:0]
	clear(w.crates)
	clear(w.deps)
	clear(w.idents)
	clear(w.keyCrates)
	clear(w.demands)
	clear(w.merged)
}

// prepare returns the batch writing one observation.
func (s *Store) prepare(obs Observation) (*writeSet, error) {
	w := newWriteSet()
	if _, err := s.add(w, &obs); err != nil {
		return nil, err
	}
	s.finish(w)
	return w, nil
}

// add merges one observation into w, which may hold earlier ones: each
// sees the records as the ones before it left them, as if they had been
// applied one by one. On error w is unusable.
func (s *Store) add(w *writeSet, obs *Observation) (ApplyResult, error) {
	before := w.result
	// Dep entries move from where the previous observation left a key.
	clear(w.prevBuilt)
	at := obs.AtMs
	if at <= 0 {
		at = time.Now().UnixMilli()
	}
	merged := slices.Grow(w.merged[:0], len(obs.Artifacts))[:len(obs.Artifacts)]
	w.merged = merged
	for i, a := range obs.Artifacts {
		r, err := s.mergeArtifact(w, a, at)
		if err != nil {
			return ApplyResult{}, fmt.Errorf("%w: entry %d: %w", ErrInvalid, i, err)
		}
		merged[i] = r
	}
	for _, l := range obs.DepLinks {
		if l.Artifact < 0 || l.Artifact >= len(merged) {
			return ApplyResult{}, fmt.Errorf("%w: dep link to entry %d of %d", ErrInvalid, l.Artifact, len(merged))
		}
		if err := s.linkDep(w, l, merged[l.Artifact]); err != nil {
			return ApplyResult{}, err
		}
	}
	if obs.Identity != nil {
		if err := s.putIdentity(w, *obs.Identity, merged, at); err != nil {
			return ApplyResult{}, err
		}
	}
	if obs.Demand != nil {
		if err := s.putDemand(w, obs.Demand, at); err != nil {
			return ApplyResult{}, err
		}
	}
	for key, etag := range obs.Objects {
		w.batch.Put(objectKey(key), []byte(etag))
	}
	if obs.SeedDigest != "" {
		var t [8]byte
		binary.BigEndian.PutUint64(t[:], uint64(at))
		w.batch.Put(seedKey(obs.SeedDigest), t[:])
	}
	return ApplyResult{Stored: w.result.Stored - before.Stored, New: w.result.New - before.New}, nil
}

// finish adds what every observation of w changed to its batch: the
// artifact records and the artifact count.
func (s *Store) finish(w *writeSet) {
	for k, r := range w.records {
		w.key = append(append(w.key[:0], prefixArtifact), k[:]...)
		w.batch.Put(w.key, appendArtifact(w.scratch(), r))
	}
	if w.result.New > 0 {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], s.artifacts.Load()+uint64(w.result.New))
		w.batch.Put(keyArtifactCount, c[:])
	}
}

func (s *Store) loadRecord(w *writeSet, k rawKey, a *Artifact, seen int64) (*record, error) {
	if r, ok := w.records[k]; ok {
		if _, ok := w.prevBuilt[k]; !ok {
			w.prevBuilt[k] = r.builtAtMs // first touched by this observation
		}
		return r, nil
	}
	err := ErrNotFound
	var b []byte
	if s.known.mayContain(&k) {
		b, err = s.get(artifactKey(k))
	}
	var r record
	switch {
	case errors.Is(err, ErrNotFound):
		r = record{Variant: Variant{CacheKey: a.CacheKey, CrateName: s.names.intern([]byte(a.CrateName)), FirstSeenMs: seen}}
		w.result.New++
		w.newKeys = append(w.newKeys, k)
		ck, _ := crateKeyKey(a.CrateName, k)
		w.batch.Put(ck, nil)
		w.keyCrates[r.CrateName] = struct{}{}
	case err != nil:
		return nil, err
	default:
		if r, err = decodeArtifact(k, b); err != nil {
			return nil, err
		}
	}
	w.records[k] = &r
	w.prevBuilt[k] = r.builtAtMs
	return &r, nil
}

func (s *Store) mergeArtifact(w *writeSet, a Artifact, at int64) (*record, error) {
	k, err := parseCacheKey(a.CacheKey)
	if err != nil {
		return nil, err
	}
	for _, str := range []string{a.CrateName, a.Target, a.Profile, a.Toolchain} {
		if len(str) > 255 {
			return nil, fmt.Errorf("%w: name of %d bytes", errKeyEncoding, len(str))
		}
	}
	if a.CrateName == "" {
		return nil, fmt.Errorf("%w: empty crate name", errKeyEncoding)
	}
	seen := a.SeenAtMs
	if seen <= 0 {
		seen = at
	}
	r, err := s.loadRecord(w, k, &a, seen)
	if err != nil {
		return nil, err
	}
	w.result.Stored++
	if r.CrateName != a.CrateName {
		// A key names one crate; a conflicting observation keeps the first
		// name rather than splitting the key across two crates.
		return r, nil
	}
	// The newest known cost and size win: builds change, and the latest
	// figure is the best estimate of the next one.
	if a.CompileTimeMs != 0 && (seen >= r.LastSeenMs || r.CompileTimeMs == 0) {
		r.CompileTimeMs = a.CompileTimeMs
	}
	if a.SizeBytes != 0 && (seen >= r.LastSeenMs || r.SizeBytes == 0) {
		r.SizeBytes = a.SizeBytes
	}
	if a.Target != "" {
		r.Target = s.names.intern([]byte(a.Target))
	}
	if a.Profile != "" {
		r.Profile = s.names.intern([]byte(a.Profile))
	}
	if a.Toolchain != "" {
		r.Toolchain = s.names.intern([]byte(a.Toolchain))
	}
	r.LastSeenMs = max(r.LastSeenMs, seen)
	r.FirstSeenMs = min(r.FirstSeenMs, seen)
	r.Listed = r.Listed || a.Listed
	if a.ListedOnly {
		return r, nil
	}
	r.Built = true
	r.Seen++
	prefix, err := crateIndexPrefix(r.CrateName)
	if err != nil {
		return nil, err
	}
	if r.builtAtMs != 0 && r.builtAtMs != r.LastSeenMs {
		w.batch.Delete(w.recent(prefix, r.builtAtMs, k))
	}
	w.batch.Put(w.recent(prefix, r.LastSeenMs, k), appendEntry(w.scratch(), &r.Variant, false))
	r.builtAtMs = r.LastSeenMs
	w.crates[string(prefix)] = append(w.crates[string(prefix)], listEntry(r))
	return r, nil
}

func (s *Store) linkDep(w *writeSet, l DepLink, r *record) error {
	prefix, err := depIndexPrefix(l.Namespace, l.Dep)
	if err != nil {
		return fmt.Errorf("%w: dep %q: %w", ErrInvalid, l.Dep, err)
	}
	k, _ := parseCacheKey(r.CacheKey)
	if prev := w.prevBuilt[k]; prev != 0 && prev != r.LastSeenMs {
		w.batch.Delete(w.recent(prefix, prev, k))
	}
	w.batch.Put(w.recent(prefix, r.LastSeenMs, k), appendEntry(w.scratch(), &r.Variant, true))
	w.deps[string(prefix)] = append(w.deps[string(prefix)], listEntry(r))
	return nil
}

// listEntry is a record as an index read returns it.
func listEntry(r *record) Variant {
	v := r.Variant
	v.FirstSeenMs = 0 // index entries do not store it; cached and read lists must agree
	v.Listed = false
	return v
}

func (s *Store) commit(w *writeSet) error {
	if w.batch.Len() == 0 {
		return nil
	}
	type change struct {
		prefix  string
		written []Variant
		old     []Variant
		cached  bool
		limit   int
	}
	changes := make([]change, 0, len(w.crates)+len(w.deps))
	for p, vs := range w.crates {
		changes = append(changes, change{prefix: p, written: vs, limit: s.opts.VariantsPerCrate})
	}
	for p, vs := range w.deps {
		changes = append(changes, change{prefix: p, written: vs, limit: s.opts.KeysPerDep})
	}
	// Readers keep the lists as they were until the write is done; then
	// each becomes what the database now holds.
	for i := range changes {
		changes[i].old, changes[i].cached = s.lists.peek(changes[i].prefix)
	}
	err := s.db.Write(&w.batch, s.writeOptions(w))
	for _, c := range changes {
		var updated []Variant
		if err == nil && c.cached {
			updated = append(make([]Variant, 0, len(c.old)+len(c.written)), c.old...)
			for _, v := range c.written {
				updated = upsertRecent(updated, v, c.limit)
			}
			updated = slices.Clip(updated)
		}
		s.lists.settle(c.prefix, updated)
	}
	for d := range w.idents {
		s.lists.settle(string(identityKey(d)), nil)
	}
	for f := range w.demands {
		s.lists.settle(string(demandKey(f)), nil)
	}
	for c := range w.keyCrates {
		s.crateKeyLists(c, func(key string) { s.lists.settle(key, nil) })
	}
	if err != nil {
		return fmt.Errorf("write batch: %w", err)
	}
	for i := range w.newKeys {
		s.known.add(&w.newKeys[i])
	}
	s.artifacts.Add(uint64(w.result.New))
	s.generation.Add(1)
	if s.known.full() {
		return s.rebuildFilter(4 * int(s.artifacts.Load()))
	}
	return nil
}

// upsertRecent replaces or inserts v, keeps the list newest first (ties by
// key, the index order) and caps it.
func upsertRecent(vs []Variant, v Variant, limit int) []Variant {
	vs = slices.DeleteFunc(vs, func(o Variant) bool { return o.CacheKey == v.CacheKey })
	i, _ := slices.BinarySearchFunc(vs, v, cmpRecent)
	vs = slices.Insert(vs, i, v)
	if len(vs) > limit {
		vs = vs[:limit]
	}
	return vs
}

func cmpRecent(a, b Variant) int {
	if a.LastSeenMs != b.LastSeenMs {
		if a.LastSeenMs > b.LastSeenMs {
			return -1
		}
		return 1
	}
	return bytes.Compare([]byte(a.CacheKey), []byte(b.CacheKey))
}
