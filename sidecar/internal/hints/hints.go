// Package hints is the sidecar's cache of plans, in a local goleveldb
// database: the last good plan for each intent, served fresh while young,
// refreshed in the background and served stale when central is down. It is
// the only sidecar package that imports goleveldb.
package hints

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	lverrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// ErrNotFound is returned by Get when no hint is stored for a key.
var ErrNotFound = errors.New("hint not found")

// Hint is one stored plan.
type Hint struct {
	// Plan is the encoded plan as served (wire.PrefetchPlan JSON).
	Plan []byte
	// StoredAt is when the plan was obtained.
	StoredAt time.Time
	// Source names where the plan came from, e.g. "central".
	Source string
	// Version is set by Get: the version of the key's hint it read (see
	// Store.Version). Put ignores it.
	Version uint64
}

// Options bound and tune the cache.
type Options struct {
	// MaxEntries and MaxBytes bound the cache; the oldest hints (by StoredAt)
	// are evicted first. 0 means the default (4096 entries, 256 MiB).
	MaxEntries int
	MaxBytes   int64
	// Sync makes every Put durable before it returns. Hints are rebuilt by
	// the next plan request, so the default is off.
	Sync   bool
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4096
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// maxSourceLen bounds Hint.Source, which is stored with a u16 length.
const maxSourceLen = 255

// Store is the hint cache. It is safe for concurrent use.
type Store struct {
	db   *leveldb.DB
	opts Options
	log  *slog.Logger

	// mu serializes writes so the counters and the eviction order stay
	// consistent with the database.
	mu      sync.Mutex
	entries int
	bytes   int64
	// recovered is set when the database was repaired at open.
	recovered bool

	// versions holds the version of every stored hint, so that what a
	// caller derived from a hint (a decoded plan) can be checked without
	// reading the hint again. vmu is held for reading across Get, and for
	// writing across every write of hints and the update of versions, so
	// that Get returns a value with its own version.
	vmu         sync.RWMutex
	versions    map[Key]uint64
	lastVersion uint64
}

// leveldbOptions are used both to open and to recover, as goleveldb requires.
func leveldbOptions() *opt.Options {
	return &opt.Options{
		// Hints are small and few; a small cache and write buffer keep the
		// sidecar's footprint on a CI runner low.
		BlockCacheCapacity: 4 << 20,
		WriteBuffer:        2 << 20,
	}
}

// Open opens (creating if needed) the database in dir. A corrupted database
// is recovered with leveldb.RecoverFile; hints are a cache, so what cannot be
// recovered is simply lost.
func Open(dir string, o Options) (*Store, error) {
	o = o.withDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create hint directory: %w", err)
	}
	lo := leveldbOptions()
	db, err := leveldb.OpenFile(filepath.Clean(dir), lo)
	recovered := false
	if lverrors.IsCorrupted(err) {
		o.Logger.Warn("hint database corrupted, recovering", "dir", dir, "error", err)
		db, err = leveldb.RecoverFile(dir, lo)
		recovered = true
	}
	if err != nil {
		return nil, fmt.Errorf("open hint database: %w", err)
	}
	return newStore(db, o, recovered)
}

// OpenStorage opens the cache on any goleveldb storage; tests pass
// storage.NewMemStorage().
func OpenStorage(stor storage.Storage, o Options) (*Store, error) {
	o = o.withDefaults()
	lo := leveldbOptions()
	db, err := leveldb.Open(stor, lo)
	recovered := false
	if lverrors.IsCorrupted(err) {
		o.Logger.Warn("hint database corrupted, recovering", "error", err)
		db, err = leveldb.Recover(stor, lo)
		recovered = true
	}
	if err != nil {
		return nil, fmt.Errorf("open hint database: %w", err)
	}
	return newStore(db, o, recovered)
}

func newStore(db *leveldb.DB, o Options, recovered bool) (*Store, error) {
	s := &Store{db: db, opts: o, log: o.Logger, recovered: recovered, versions: map[Key]uint64{}}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// init checks the schema and counts what is stored. An unknown schema means
// a newer sidecar wrote this directory: its hints are dropped, not misread.
func (s *Store) init() error {
	v, err := s.db.Get(schemaKey, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read hint schema: %w", err)
	case len(v) != 4 || v[0] != 0 || v[1] != 0 || v[2] != 0 || v[3] != schemaVersion:
		s.log.Warn("hint database has an unknown schema, clearing it")
		if err := s.clear(); err != nil {
			return err
		}
	}
	if err := s.db.Put(schemaKey, []byte{0, 0, 0, schemaVersion}, nil); err != nil {
		return fmt.Errorf("write hint schema: %w", err)
	}
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixHint}), nil)
	defer it.Release()
	for it.Next() {
		s.entries++
		s.bytes += int64(len(it.Key()) + len(it.Value()))
		if k, ok := keyOfHintKey(it.Key()); ok {
			s.lastVersion++
			s.versions[k] = s.lastVersion
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("count hints: %w", err)
	}
	return nil
}

func (s *Store) clear() error {
	it := s.db.NewIterator(nil, nil)
	defer it.Release()
	var batch leveldb.Batch
	for it.Next() {
		batch.Delete(it.Key()) // Delete copies the key into the batch.
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("clear hints: %w", err)
	}
	if err := s.db.Write(&batch, nil); err != nil {
		return fmt.Errorf("clear hints: %w", err)
	}
	return nil
}

// Recovered reports whether the database had to be repaired at open, for a
// log line or a metric.
func (s *Store) Recovered() bool { return s.recovered }

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close hint database: %w", err)
	}
	return nil
}

// Get returns the hint stored for k, with its version, or ErrNotFound.
func (s *Store) Get(k Key) (Hint, error) {
	s.vmu.RLock()
	defer s.vmu.RUnlock()
	v, err := s.db.Get(hintKey(k), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return Hint{}, ErrNotFound
	}
	if err != nil {
		return Hint{}, fmt.Errorf("read hint: %w", err)
	}
	h, err := decodeValue(v)
	h.Version = s.versions[k]
	return h, err
}

// Version returns the version of the hint stored for k without reading it,
// or false when none is stored. A version is never 0 and changes whenever
// k's hint is replaced (or removed and stored again): while it is the one
// a caller saw with Get, the hint is the one Get returned. It costs a map
// lookup, so a caller may keep the decoded plan and check it on every use.
func (s *Store) Version(k Key) (uint64, bool) {
	s.vmu.RLock()
	defer s.vmu.RUnlock()
	v, ok := s.versions[k]
	return v, ok
}

// write applies batch and then, under the same lock, updates versions:
// stored gets a new version (unless it is nil) and removed lose theirs.
func (s *Store) write(batch *leveldb.Batch, wo *opt.WriteOptions, stored *Key, removed []Key) error {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	if err := s.db.Write(batch, wo); err != nil {
		return err
	}
	for _, k := range removed {
		delete(s.versions, k)
	}
	if stored != nil {
		s.lastVersion++
		s.versions[*stored] = s.lastVersion
	}
	return nil
}

// Put stores h for k, replacing any older hint, and evicts the oldest hints
// beyond the bounds. A hint larger than MaxBytes alone is not stored, and
// the older hint for k is deleted all the same: it is no longer k's plan.
func (s *Store) Put(k Key, h Hint) error {
	if len(h.Source) > maxSourceLen {
		h.Source = h.Source[:maxSourceLen]
	}
	hk := hintKey(k)
	v := encodeValue(h)
	size := int64(len(hk) + len(v))

	s.mu.Lock()
	defer s.mu.Unlock()
	var batch leveldb.Batch
	var stored *Key
	removed := []Key{k}
	entries, used := s.entries, s.bytes
	old, err := s.db.Get(hk, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read hint: %w", err)
	default:
		batch.Delete(hk)
		entries--
		used -= int64(len(hk) + len(old))
		if oh, err := decodeValue(old); err == nil {
			batch.Delete(timeKey(oh.StoredAt, k))
		}
	}
	if size <= s.opts.MaxBytes {
		batch.Put(hk, v) // after the Delete above, so it wins
		batch.Put(timeKey(h.StoredAt, k), nil)
		entries++
		used += size
		stored, removed = &k, nil
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := s.write(&batch, &opt.WriteOptions{Sync: s.opts.Sync}, stored, removed); err != nil {
		return fmt.Errorf("write hint: %w", err)
	}
	s.entries, s.bytes = entries, used
	return s.evictLocked()
}

// evictLocked deletes the oldest hints until both bounds hold. The 't'
// records iterate in StoredAt order, oldest first. A record that does not
// match its hint's StoredAt is an orphan (left by a value that could not be
// decoded, or a repair): it is deleted and the hint left alone.
func (s *Store) evictLocked() error {
	if s.entries <= s.opts.MaxEntries && s.bytes <= s.opts.MaxBytes {
		return nil
	}
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixTime}), nil)
	defer it.Release()
	var batch leveldb.Batch
	entries, used := s.entries, s.bytes
	// Deletes wait in the batch, so a hint evicted here is still readable.
	evicted := map[Key]bool{}
	var removed []Key
	for (entries > s.opts.MaxEntries || used > s.opts.MaxBytes) && it.Next() {
		batch.Delete(it.Key())
		k, ok := keyOfTimeKey(it.Key())
		if !ok {
			continue
		}
		hk := hintKey(k)
		v, err := s.db.Get(hk, nil)
		if errors.Is(err, leveldb.ErrNotFound) || evicted[k] {
			continue
		}
		if err != nil {
			return fmt.Errorf("evict hints: %w", err)
		}
		// An undecodable hint goes with the first record naming it.
		if h, err := decodeValue(v); err == nil && !bytes.Equal(timeKey(h.StoredAt, k), it.Key()) {
			continue
		}
		evicted[k] = true
		removed = append(removed, k)
		batch.Delete(hk)
		entries--
		used -= int64(len(hk) + len(v))
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("evict hints: %w", err)
	}
	if err := s.write(&batch, nil, nil, removed); err != nil {
		return fmt.Errorf("evict hints: %w", err)
	}
	s.entries, s.bytes = entries, used
	return nil
}

// Stats returns the number of hints and their stored bytes.
func (s *Store) Stats() (entries int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries, s.bytes
}
