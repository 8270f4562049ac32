// Package store is the sidecar's local object store: packs and entry
// manifests fetched from the bucket, kept on the runner's disk under a byte
// budget with least-recently-used eviction.
//
// Objects are addressed by Ref (kind, crate, cache key), never by a path, and
// a Ref is validated by kache's rules (kache-protocol.md 3.4) before it
// touches the filesystem, so no key from central or the bucket can name a
// file outside the store. Every object is written to a temp file, checked
// against its expected size and MD5, synced and renamed into place: a reader
// never sees a partial file, and temp files left by a crash are swept at Open.
package store

import (
	"container/list"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
)

var (
	// ErrNotFound is returned for an object the store does not hold.
	ErrNotFound = errors.New("not in local store")
	// ErrInvalidRef is returned for a crate name or cache key that fails
	// kache's validation.
	ErrInvalidRef = errors.New("invalid object reference")
	// ErrNoSpace is returned when an object does not fit the disk budget
	// (or the disk itself is full).
	ErrNoSpace = errors.New("local store full")
	// ErrCorrupt is returned when written bytes do not match the object's
	// size or checksum.
	ErrCorrupt = errors.New("object failed verification")
)

// Kind is the kind of a stored object.
type Kind uint8

const (
	// Pack is `{prefix}/v3/packs/{crate}/{key}.tar.zst`.
	Pack Kind = iota
	// EntryManifest is `{prefix}/v3/manifests/{crate}/{key}.json`.
	EntryManifest
)

func (k Kind) dir() string {
	if k == EntryManifest {
		return "manifests"
	}
	return "packs"
}

func (k Kind) ext() string {
	if k == EntryManifest {
		return ".json"
	}
	return ".tar.zst"
}

// Ref names one object.
type Ref struct {
	Kind     Kind
	Crate    string
	CacheKey string
}

// Valid reports whether r passes kache's crate-name and cache-key rules.
func (r Ref) Valid() bool {
	return (r.Kind == Pack || r.Kind == EntryManifest) && layout.ValidCrateName(r.Crate) && layout.ValidCacheKey(r.CacheKey)
}

// ObjectKey is r's key in the bucket under prefix.
func (r Ref) ObjectKey(prefix string) string {
	if r.Kind == EntryManifest {
		return layout.EntryManifestKey(prefix, r.Crate, r.CacheKey)
	}
	return layout.PackKey(prefix, r.Crate, r.CacheKey)
}

func (r Ref) String() string { return r.Kind.dir() + "/" + r.Crate + "/" + r.CacheKey }

// Config configures a Store.
type Config struct {
	Dir string
	// MaxBytes is the disk budget for stored objects; 0 means no limit.
	MaxBytes int64
	// NoSync skips fsync before rename (tests and benchmarks on tmpfs).
	NoSync bool
	Logger *slog.Logger
}

type entry struct {
	ref  Ref
	size int64
	elem *list.Element
}

// Store holds objects on disk. It is safe for concurrent use; several
// processes may share a directory for reading, but only one should write.
type Store struct {
	cfg     Config
	objects string
	tmp     string
	log     *slog.Logger

	mu       sync.Mutex
	lru      *list.List // front = most recently used; values are *entry
	index    map[Ref]*entry
	byCrate  map[string]map[string]struct{} // crate -> cache keys of packs
	used     int64                          // committed bytes plus reservations
	reserved int64
}

// Stats describe the store.
type Stats struct {
	Objects       int
	Bytes         int64
	ReservedBytes int64
	MaxBytes      int64
}

// Open opens (creating) the store in cfg.Dir, removes temp files left by an
// earlier process and indexes what is there, oldest first, evicting down to
// the budget.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("store: no directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cfg:     cfg,
		objects: filepath.Join(cfg.Dir, "objects"),
		tmp:     filepath.Join(cfg.Dir, "tmp"),
		log:     cfg.Logger,
		lru:     list.New(),
		index:   map[Ref]*entry{},
		byCrate: map[string]map[string]struct{}{},
	}
	swept, err := s.sweep()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.objects, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", s.objects, err)
	}
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	evicted := s.evictLocked(0)
	s.mu.Unlock()
	s.log.Info("local store open", "dir", cfg.Dir, "objects", len(s.index), "bytes", s.used,
		"max_bytes", cfg.MaxBytes, "swept_temp_files", swept, "evicted", evicted)
	return s, nil
}

// sweep removes the temp directory a crashed writer may have left and
// recreates it empty.
func (s *Store) sweep() (int, error) {
	n := 0
	ents, err := os.ReadDir(s.tmp)
	if err == nil {
		n = len(ents)
	}
	if err := os.RemoveAll(s.tmp); err != nil {
		return 0, fmt.Errorf("store: sweep %s: %w", s.tmp, err)
	}
	if err := os.MkdirAll(s.tmp, 0o755); err != nil {
		return 0, fmt.Errorf("store: create %s: %w", s.tmp, err)
	}
	return n, nil
}

type scanned struct {
	ref   Ref
	size  int64
	mtime time.Time
}

// scan indexes objects/{packs,manifests}/{crate}/{key}{ext}. Anything else
// (a stray file, a name that fails validation) is removed: only this package
// writes there.
func (s *Store) scan() error {
	var found []scanned
	for _, kind := range []Kind{Pack, EntryManifest} {
		root := filepath.Join(s.objects, kind.dir())
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(root, path)
			crate, name, ok := strings.Cut(filepath.ToSlash(rel), "/")
			ref := Ref{Kind: kind, Crate: crate, CacheKey: strings.TrimSuffix(name, kind.ext())}
			info, ierr := d.Info()
			if !ok || !strings.HasSuffix(name, kind.ext()) || !ref.Valid() || ierr != nil || !d.Type().IsRegular() {
				s.log.Warn("removing unexpected file from local store", "path", path)
				return os.Remove(path)
			}
			found = append(found, scanned{ref, info.Size(), info.ModTime()})
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: scan %s: %w", root, err)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].mtime.Before(found[j].mtime) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range found {
		s.insertLocked(f.ref, f.size)
	}
	return nil
}

func (s *Store) path(r Ref) string {
	return filepath.Join(s.objects, r.Kind.dir(), r.Crate, r.CacheKey+r.Kind.ext())
}

func (s *Store) insertLocked(r Ref, size int64) {
	if old, ok := s.index[r]; ok {
		s.used -= old.size
		s.lru.Remove(old.elem)
	}
	e := &entry{ref: r, size: size}
	e.elem = s.lru.PushFront(e)
	s.index[r] = e
	s.used += size
	if r.Kind == Pack {
		keys := s.byCrate[r.Crate]
		if keys == nil {
			keys = map[string]struct{}{}
			s.byCrate[r.Crate] = keys
		}
		keys[r.CacheKey] = struct{}{}
	}
}

func (s *Store) removeLocked(e *entry) {
	s.lru.Remove(e.elem)
	delete(s.index, e.ref)
	s.used -= e.size
	if e.ref.Kind == Pack {
		if keys := s.byCrate[e.ref.Crate]; keys != nil {
			delete(keys, e.ref.CacheKey)
			if len(keys) == 0 {
				delete(s.byCrate, e.ref.Crate)
			}
		}
	}
}

// evictLocked removes least-recently-used objects until need more bytes fit
// the budget, and says how many it removed. Unlinking a file another
// goroutine is reading is safe: the open descriptor keeps its data.
func (s *Store) evictLocked(need int64) int {
	if s.cfg.MaxBytes <= 0 {
		return 0
	}
	n := 0
	for s.used+need > s.cfg.MaxBytes {
		back := s.lru.Back()
		if back == nil {
			break
		}
		e := back.Value.(*entry)
		s.removeLocked(e)
		if err := os.Remove(s.path(e.ref)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("evict", "object", e.ref.String(), "error", err)
		}
		n++
	}
	return n
}

// Has reports whether the store holds r.
func (s *Store) Has(r Ref) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[r]
	return ok
}

// Open opens a stored object for reading and marks it recently used.
func (s *Store) Open(r Ref) (*os.File, int64, error) {
	if !r.Valid() {
		return nil, 0, fmt.Errorf("%w: %s", ErrInvalidRef, r)
	}
	s.mu.Lock()
	e, ok := s.index[r]
	if ok {
		s.lru.MoveToFront(e.elem)
	}
	s.mu.Unlock()
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, r)
	}
	f, err := os.Open(s.path(r))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back (an operator, or a concurrent eviction).
			s.mu.Lock()
			if cur, ok := s.index[r]; ok && cur == e {
				s.removeLocked(e)
			}
			s.mu.Unlock()
			return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, r)
		}
		return nil, 0, fmt.Errorf("open %s: %w", r, err)
	}
	// The mtime carries recency across restarts; failing to set it only
	// makes eviction order less exact.
	now := time.Now()
	_ = os.Chtimes(f.Name(), now, now)
	return f, e.size, nil
}

// PackKeys lists the cache keys of packs held for crate (the sidecar's
// "history" for planning without central).
func (s *Store) PackKeys(crate string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.byCrate[crate]))
	for k := range s.byCrate[crate] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Stats reports the store's size.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Objects: len(s.index), Bytes: s.used - s.reserved, ReservedBytes: s.reserved, MaxBytes: s.cfg.MaxBytes}
}

// Create reserves size bytes of the budget (evicting older objects) and
// returns a Writer for r. Exactly one of Commit or Abort must follow.
func (s *Store) Create(r Ref, size int64) (*Writer, error) {
	if !r.Valid() {
		return nil, fmt.Errorf("%w: %s", ErrInvalidRef, r)
	}
	if size < 0 {
		return nil, fmt.Errorf("store: negative size %d for %s", size, r)
	}
	s.mu.Lock()
	if s.cfg.MaxBytes > 0 && size > s.cfg.MaxBytes {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s is %d bytes, budget %d", ErrNoSpace, r, size, s.cfg.MaxBytes)
	}
	s.evictLocked(size)
	if s.cfg.MaxBytes > 0 && s.used+size > s.cfg.MaxBytes {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d bytes reserved by writes in progress", ErrNoSpace, s.reserved)
	}
	s.used += size
	s.reserved += size
	s.mu.Unlock()

	f, err := os.CreateTemp(s.tmp, r.CacheKey+"-*")
	if err != nil {
		s.release(size)
		return nil, fmt.Errorf("store: temp file for %s: %w", r, diskErr(err))
	}
	return &Writer{s: s, ref: r, size: size, f: f, md5: md5.New()}, nil
}

func (s *Store) release(size int64) {
	s.mu.Lock()
	s.used -= size
	s.reserved -= size
	s.mu.Unlock()
}

// diskErr maps a full disk to ErrNoSpace so callers stop filling it.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// Writer writes one object to a temp file.
type Writer struct {
	s       *Store
	ref     Ref
	size    int64
	written int64
	f       *os.File
	md5     hash.Hash
	done    bool
}

// Write appends to the temp file; writing past the reserved size fails, so a
// store that sends more than it announced cannot overrun the budget.
func (w *Writer) Write(p []byte) (int, error) {
	if w.written+int64(len(p)) > w.size {
		return 0, fmt.Errorf("%w: %s is longer than its %d bytes", ErrCorrupt, w.ref, w.size)
	}
	n, err := w.f.Write(p)
	w.written += int64(n)
	w.md5.Write(p[:n])
	if err != nil {
		return n, diskErr(err)
	}
	return n, nil
}

// Commit verifies the written bytes (size, and MD5 when etag is a plain
// single-part MD5 ETag), syncs and renames the file into place.
func (w *Writer) Commit(etag string) error {
	if w.done {
		return errors.New("store: writer already finished")
	}
	if w.written != w.size {
		w.Abort()
		return fmt.Errorf("%w: %s has %d of %d bytes", ErrCorrupt, w.ref, w.written, w.size)
	}
	if want := strings.ToLower(strings.Trim(etag, `"`)); isMD5(want) {
		if got := hex.EncodeToString(w.md5.Sum(nil)); got != want {
			w.Abort()
			return fmt.Errorf("%w: %s has MD5 %s, ETag says %s", ErrCorrupt, w.ref, got, want)
		}
	}
	if !w.s.cfg.NoSync {
		if err := w.f.Sync(); err != nil {
			w.Abort()
			return fmt.Errorf("store: sync %s: %w", w.ref, diskErr(err))
		}
	}
	if err := w.f.Close(); err != nil {
		w.Abort()
		return fmt.Errorf("store: close %s: %w", w.ref, diskErr(err))
	}
	dst := w.s.path(w.ref)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		w.Abort()
		return fmt.Errorf("store: create directory for %s: %w", w.ref, diskErr(err))
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		w.Abort()
		return fmt.Errorf("store: rename %s: %w", w.ref, err)
	}
	w.done = true
	w.s.mu.Lock()
	w.s.used -= w.size
	w.s.reserved -= w.size
	w.s.insertLocked(w.ref, w.size)
	w.s.mu.Unlock()
	return nil
}

// Abort removes the temp file and releases the reservation. It is safe to
// call after Commit (it does nothing then).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
	w.s.release(w.size)
}

// isMD5 reports whether an ETag is a plain MD5 (multipart and encrypted
// uploads have ETags that are not the content's MD5).
func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	for i := 0; i < len(etag); i++ {
		c := etag[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
