package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

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
	forget     forgetting
	recovered  bool
	closed     atomic.Bool

	// queue holds the Applies waiting for writeMu (group.go); ws is the
	// batch they are written with, reused, guarded by writeMu.
	queueMu sync.Mutex
	queue   []*pendingApply
	ws      *writeSet
	// keyLimits has a bit for each CrateKeys limit answered from lists.
	keyLimits atomic.Uint64
}

func levelOptions(o Options) *opt.Options {
	return &opt.Options{
		BlockCacheCapacity: o.CacheMB * opt.MiB,
		WriteBuffer:        4 * opt.MiB,
		Filter:             filter.NewBloomFilter(10),
		// Reads must not trigger compactions: ingest reads records of keys it
		// may know, and goleveldb's seek compaction turns those into writes.
		DisableSeeksCompaction: true,
		// Keys and lists are mostly random hash bytes: compression costs
		// compaction CPU and saves little.
		Compression:            opt.NoCompression,
		OpenFilesCacheCapacity: 256,
		CompactionTableSize:    4 * opt.MiB,
		// Ingest is write-heavy: a larger level 1 (and so two levels
		// instead of three for a million keys) and a later level-0 trigger
		// cut how often each byte is rewritten by compaction, without
		// growing the memtables that count against the pod's memory.
		CompactionTotalSize:    64 * opt.MiB,
		CompactionL0Trigger:    8,
		WriteL0SlowdownTrigger: 16,
		WriteL0PauseTrigger:    24,

		// goleveldb reads blocks into, and preallocates each compaction
		// output's table-size buffer from, one pool whose largest class
		// is over 4 blocks: with 4 KiB blocks, index and filter blocks
		// (40-50 KiB) land in that class too, and a filter read reusing a
		// 4 MiB writer buffer pins it in the block cache. 16 KiB blocks
		// keep those under the class; measured: 36 MiB of pooled buffers
		// in use during ingest at 4 KiB, see README.
		BlockSize: 16 * opt.KiB,
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
	if err := s.loadTombstones(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate() error {
	v, err := s.db.Get(keySchemaVersion, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
		if err := s.putSchemaVersion(); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	case len(v) != 4:
		return fmt.Errorf("%w: malformed schema key", ErrSchema)
	case binary.BigEndian.Uint32(v) > SchemaVersion:
		return fmt.Errorf("%w: database has %d, this binary knows %d", ErrSchema, binary.BigEndian.Uint32(v), SchemaVersion)
	case binary.BigEndian.Uint32(v) < SchemaVersion:
		// 1 -> 2 rewrites nothing: version 1 values decode with an unknown
		// toolchain, and the identity table fills as builds are ingested.
		// The bump keeps a version 1 binary, which would not maintain the
		// identity table, from opening the database again.
		if err := s.putSchemaVersion(); err != nil {
			return err
		}
		s.opts.Logger.Info("database schema upgraded", "from", binary.BigEndian.Uint32(v), "to", SchemaVersion)
	}
	c, err := s.db.Get(keyArtifactCount, nil)
	if err == nil && len(c) == 8 {
		s.artifacts.Store(binary.BigEndian.Uint64(c))
	} else if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
		return fmt.Errorf("read artifact count: %w", err)
	}
	return s.rebuildFilter(2 * int(s.artifacts.Load()))
}

func (s *Store) putSchemaVersion() error {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], SchemaVersion)
	if err := s.db.Put(keySchemaVersion, b[:], s.wo); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	return nil
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
	r, err := decodeArtifact(k, b)
	return r.Variant, err
}

// CrateKeys returns up to limit known cache keys of a crate (built or only
// listed), in key order. limit <= 0 means all.
func (s *Store) CrateKeys(crate string, limit int) ([]string, error) {
	return s.crateKeys(crate, limit, nil)
}

// scanCrateKeys reads CrateKeys' answer from the database.
func (s *Store) scanCrateKeys(prefix []byte, crate string, limit int) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
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
