package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Errors callers can match.
var (
	ErrNotFound = errors.New("not found")
	// ErrInvalid marks an observation the store cannot encode (bad cache key,
	// over-long name). Ingest validates first, so it signals a caller bug.
	ErrInvalid = errors.New("invalid observation")
	// ErrSchema marks a database written by a newer schema.
	ErrSchema = errors.New("unsupported schema version")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store closed")
)

// Options tunes the store. Zero values take the defaults.
type Options struct {
	// VariantsPerCrate is how many most recent variants a crate summary keeps.
	VariantsPerCrate int
	// KeysPerDep is how many most recent keys a lock dep keeps.
	KeysPerDep int
	// CacheMB is goleveldb's block cache.
	CacheMB int
	// ListCacheMB bounds the decoded-list cache that plans read from; a
	// negative value disables it.
	ListCacheMB int
	// NoSync skips fsync on acknowledged writes (benchmarks and tests only).
	NoSync bool
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.VariantsPerCrate <= 0 {
		o.VariantsPerCrate = 8
	}
	if o.KeysPerDep <= 0 {
		o.KeysPerDep = 4
	}
	if o.CacheMB <= 0 {
		o.CacheMB = 8
	}
	if o.ListCacheMB == 0 {
		o.ListCacheMB = 16
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Store is the ranking index. Reads are concurrent; writes are serialised by
// one mutex because each is a read-modify-write of summaries.
type Store struct {
	db        *leveldb.DB
	opts      Options
	wo        *opt.WriteOptions
	writeMu   sync.Mutex
	artifacts atomic.Uint64
	// generation counts committed writes; caches of derived answers key on it.
	generation atomic.Uint64
	lists      *listCache
	names      *interner
	known      *keyFilter // guarded by writeMu
	recovered  bool
	closed     atomic.Bool
}

func levelOptions(o Options) *opt.Options {
	return &opt.Options{
		BlockCacheCapacity: o.CacheMB * opt.MiB,
		WriteBuffer:        4 * opt.MiB,
		Filter:             filter.NewBloomFilter(10),
		// Keys and lists are mostly random hash bytes: compression costs
		// compaction CPU and saves little.
		Compression:            opt.NoCompression,
		OpenFilesCacheCapacity: 256,
		CompactionTableSize:    4 * opt.MiB,
	}
}

// Open opens or creates the database in dir, recovering it when its manifest
// is corrupted.
func Open(dir string, o Options) (*Store, error) {
	o = o.withDefaults()
	lo := levelOptions(o)
	db, err := leveldb.OpenFile(dir, lo)
	recovered := false
	if lerrors.IsCorrupted(err) {
		o.Logger.Warn("database corrupted, recovering", "path", dir, "error", err)
		db, err = leveldb.RecoverFile(dir, lo)
		recovered = true
	}
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", dir, err)
	}
	return newStore(db, o, recovered)
}

// OpenStorage opens a database on a goleveldb storage (tests use
// storage.NewMemStorage).
func OpenStorage(stor storage.Storage, o Options) (*Store, error) {
	o = o.withDefaults()
	db, err := leveldb.Open(stor, levelOptions(o))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return newStore(db, o, false)
}

func newStore(db *leveldb.DB, o Options, recovered bool) (*Store, error) {
	s := &Store{db: db, opts: o, wo: &opt.WriteOptions{Sync: !o.NoSync}, recovered: recovered,
		lists: newListCache(int64(o.ListCacheMB) << 20), names: &interner{m: make(map[string]string)}}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate() error {
	v, err := s.db.Get(keySchemaVersion, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], SchemaVersion)
		if err := s.db.Put(keySchemaVersion, b[:], s.wo); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	case len(v) != 4:
		return fmt.Errorf("%w: malformed schema key", ErrSchema)
	case binary.BigEndian.Uint32(v) > SchemaVersion:
		return fmt.Errorf("%w: database has %d, this binary knows %d", ErrSchema, binary.BigEndian.Uint32(v), SchemaVersion)
	}
	c, err := s.db.Get(keyArtifactCount, nil)
	if err == nil && len(c) == 8 {
		s.artifacts.Store(binary.BigEndian.Uint64(c))
	} else if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
		return fmt.Errorf("read artifact count: %w", err)
	}
	return s.rebuildFilter(2 * int(s.artifacts.Load()))
}

// rebuildFilter fills a new key filter from the artifact records.
func (s *Store) rebuildFilter(capacity int) error {
	f := newKeyFilter(capacity)
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixArtifact}), nil)
	defer it.Release()
	for it.Next() {
		var k rawKey
		copy(k[:], it.Key()[1:])
		f.add(&k)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("scan artifact keys: %w", err)
	}
	s.known = f
	return nil
}

// Recovered reports whether Open had to repair the database.
func (s *Store) Recovered() bool { return s.recovered }

// Close closes the database. It is safe to call twice.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	return nil
}

// Generation changes after every committed write.
func (s *Store) Generation() uint64 { return s.generation.Load() }

// ArtifactCount is the number of distinct cache keys known.
func (s *Store) ArtifactCount() uint64 { return s.artifacts.Load() }

func (s *Store) get(key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	v, err := s.db.Get(key, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %x: %w", key[:1], err)
	}
	return v, nil
}

// Artifact returns what is known about one cache key.
func (s *Store) Artifact(cacheKey string) (Variant, error) {
	k, err := parseCacheKey(cacheKey)
	if err != nil {
		return Variant{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, err := s.get(artifactKey(k))
	if err != nil {
		return Variant{}, err
	}
	return decodeArtifact(k, b)
}

// Variants returns the crate's most recent built variants, newest first. An
// unknown crate yields no variants and no error. The slice is shared with the
// store's cache: callers must not modify it.
func (s *Store) Variants(crate string) ([]Variant, error) {
	key, err := summaryKey(crate)
	if err != nil {
		return nil, nil
	}
	return s.readList(key)
}

// DepVariants returns the keys most recently built with a lock dep
// ("name@version") in a namespace, newest first. The slice is shared: callers
// must not modify it.
func (s *Store) DepVariants(namespace, dep string) ([]Variant, error) {
	key, err := depKey(namespace, dep)
	if err != nil {
		return nil, nil
	}
	return s.readList(key)
}

// readList reads a variant list through the cache; an absent list is cached
// as empty too, since most misses repeat.
func (s *Store) readList(key []byte) ([]Variant, error) {
	if vs, ok := s.lists.get(key); ok {
		return vs, nil
	}
	b, err := s.get(key)
	var vs []Variant
	switch {
	case errors.Is(err, ErrNotFound):
		vs = []Variant{}
	case err != nil:
		return nil, err
	default:
		if vs, err = decodeList(b, s.names); err != nil {
			return nil, err
		}
	}
	s.lists.put(string(key), vs, true)
	return vs, nil
}

// CrateKeys returns up to limit known cache keys of a crate (built or only
// listed), in key order. limit <= 0 means all.
func (s *Store) CrateKeys(crate string, limit int) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	prefix, err := crateKeyPrefix(crate)
	if err != nil {
		return nil, nil
	}
	it := s.db.NewIterator(util.BytesPrefix(prefix), nil)
	defer it.Release()
	var keys []string
	for it.Next() {
		var k rawKey
		copy(k[:], it.Key()[len(prefix):])
		keys = append(keys, k.String())
		if limit > 0 && len(keys) >= limit {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", crate, err)
	}
	return keys, nil
}

// SeedImported reports whether a seed file with this digest was imported.
func (s *Store) SeedImported(digest string) (bool, error) {
	_, err := s.get(seedKey(digest))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Artifact observations and their links, applied atomically by Apply.
type (
	// Observation is everything one ingest learned.
	Observation struct {
		// AtMs is when the artifacts were seen (the manifest's creation time).
		AtMs      int64
		Artifacts []Artifact
		DepLinks  []DepLink
		// SeedDigest, when set, marks a seed file as imported in the same batch.
		SeedDigest string
	}
	// Artifact is one cache key seen.
	Artifact struct {
		CacheKey      string
		CrateName     string
		CompileTimeMs uint64
		SizeBytes     uint64
		Target        string
		Profile       string
		// SeenAtMs overrides the observation's AtMs (0 = use AtMs).
		SeenAtMs int64
		// ListedOnly: known to exist, not known to have been built.
		ListedOnly bool
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

// Apply writes an observation in one synced batch: all of it or none.
func (s *Store) Apply(obs Observation) (ApplyResult, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return ApplyResult{}, ErrClosed
	}
	w, err := s.prepare(obs)
	if err != nil {
		return ApplyResult{}, err
	}
	if err := s.commit(w); err != nil {
		return ApplyResult{}, err
	}
	return w.result, nil
}

// writeSet accumulates one batch and the state it changes.
type writeSet struct {
	batch   leveldb.Batch
	result  ApplyResult
	records map[rawKey]*Variant
	newKeys []rawKey
	// lists are the summaries and dep lists this batch rewrites, by DB key.
	lists map[string][]Variant
}

func (s *Store) prepare(obs Observation) (*writeSet, error) {
	w := &writeSet{
		records: make(map[rawKey]*Variant, len(obs.Artifacts)),
		lists:   make(map[string][]Variant),
	}
	at := obs.AtMs
	if at <= 0 {
		at = time.Now().UnixMilli()
	}
	merged := make([]*Variant, len(obs.Artifacts))
	for i, a := range obs.Artifacts {
		v, err := s.mergeArtifact(w, a, at)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrInvalid, i, err)
		}
		merged[i] = v
	}
	for _, l := range obs.DepLinks {
		if l.Artifact < 0 || l.Artifact >= len(merged) {
			return nil, fmt.Errorf("%w: dep link to entry %d of %d", ErrInvalid, l.Artifact, len(merged))
		}
		if err := s.linkDep(w, l, merged[l.Artifact]); err != nil {
			return nil, err
		}
	}
	for k, v := range w.records {
		w.batch.Put(artifactKey(k), encodeArtifact(v))
	}
	for key, vs := range w.lists {
		w.batch.Put([]byte(key), encodeList(vs))
	}
	if w.result.New > 0 {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], s.artifacts.Load()+uint64(w.result.New))
		w.batch.Put(keyArtifactCount, c[:])
	}
	if obs.SeedDigest != "" {
		var t [8]byte
		binary.BigEndian.PutUint64(t[:], uint64(at))
		w.batch.Put(seedKey(obs.SeedDigest), t[:])
	}
	return w, nil
}

func (s *Store) commit(w *writeSet) error {
	if w.batch.Len() == 0 {
		return nil
	}
	for key := range w.lists {
		s.lists.delete(key)
	}
	if err := s.db.Write(&w.batch, s.wo); err != nil {
		return fmt.Errorf("write batch: %w", err)
	}
	for key, vs := range w.lists {
		if cap(vs) > len(vs) {
			vs = slices.Clone(vs) // cached lists live long; drop the spare capacity
		}
		s.lists.put(key, vs, false)
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

func (s *Store) mergeArtifact(w *writeSet, a Artifact, at int64) (*Variant, error) {
	k, err := parseCacheKey(a.CacheKey)
	if err != nil {
		return nil, err
	}
	for _, str := range []string{a.CrateName, a.Target, a.Profile} {
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
	v, ok := w.records[k]
	if !ok {
		var b []byte
		err := ErrNotFound
		if s.known.mayContain(&k) {
			b, err = s.get(artifactKey(k))
		}
		switch {
		case errors.Is(err, ErrNotFound):
			v = &Variant{CacheKey: a.CacheKey, CrateName: s.names.intern([]byte(a.CrateName)), FirstSeenMs: seen}
			w.result.New++
			w.newKeys = append(w.newKeys, k)
			ck, _ := crateKeyKey(a.CrateName, k)
			w.batch.Put(ck, nil)
		case err != nil:
			return nil, err
		default:
			old, err := decodeArtifact(k, b)
			if err != nil {
				return nil, err
			}
			v = &old
		}
		w.records[k] = v
	}
	w.result.Stored++
	if v.CrateName != a.CrateName {
		// A key names one crate; a conflicting observation keeps the first name
		// rather than splitting the key across two summaries.
		return v, nil
	}
	// Latest known cost and size win: builds change, and the newest figure is
	// the best estimate of the next one.
	if a.CompileTimeMs != 0 && seen >= v.LastSeenMs {
		v.CompileTimeMs = a.CompileTimeMs
	} else if v.CompileTimeMs == 0 {
		v.CompileTimeMs = a.CompileTimeMs
	}
	if a.SizeBytes != 0 && (seen >= v.LastSeenMs || v.SizeBytes == 0) {
		v.SizeBytes = a.SizeBytes
	}
	if a.Target != "" {
		v.Target = s.names.intern([]byte(a.Target))
	}
	if a.Profile != "" {
		v.Profile = s.names.intern([]byte(a.Profile))
	}
	if seen > v.LastSeenMs {
		v.LastSeenMs = seen
	}
	if seen < v.FirstSeenMs {
		v.FirstSeenMs = seen
	}
	if a.ListedOnly {
		return v, nil
	}
	v.Built = true
	v.Seen++
	return v, s.upsertSummary(w, v)
}

func (s *Store) upsertSummary(w *writeSet, v *Variant) error {
	key, err := summaryKey(v.CrateName)
	if err != nil {
		return err
	}
	return s.upsertList(w, key, v, s.opts.VariantsPerCrate)
}

func (s *Store) linkDep(w *writeSet, l DepLink, v *Variant) error {
	key, err := depKey(l.Namespace, l.Dep)
	if err != nil {
		return fmt.Errorf("%w: dep %q: %w", ErrInvalid, l.Dep, err)
	}
	return s.upsertList(w, key, v, s.opts.KeysPerDep)
}

// upsertList updates a list of this batch, starting from a private copy of
// the stored one (cached lists are shared).
func (s *Store) upsertList(w *writeSet, key []byte, v *Variant, limit int) error {
	vs, ok := w.lists[string(key)]
	if !ok {
		stored, err := s.readList(key)
		if err != nil {
			return err
		}
		vs = append(make([]Variant, 0, limit+1), stored...)
	}
	entry := *v
	entry.FirstSeenMs = 0 // lists do not store it; cached and decoded lists must agree
	w.lists[string(key)] = upsertRecent(vs, entry, limit)
	return nil
}

// upsertRecent replaces or inserts v, keeps the list newest first (ties by
// key for determinism) and caps it.
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
