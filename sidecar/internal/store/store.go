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
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	md5simd "github.com/minio/md5-simd"

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

// Valid reports whether r passes kache's crate-name and cache-key rules. A
// crate named "." is valid for kache but would name the kind's directory
// itself on disk, so the store refuses it.
func (r Ref) Valid() bool {
	return (r.Kind == Pack || r.Kind == EntryManifest) && layout.ValidCrateName(r.Crate) && r.Crate != "." &&
		layout.ValidCacheKey(r.CacheKey)
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
	// NoSync skips fsync before rename. A store on an emptyDir lives and
	// dies with its pod, so only a persistent store on a VM runner needs
	// the sync to survive a power loss; a process crash loses nothing
	// either way.
	NoSync bool
	Logger *slog.Logger
}

type entry struct {
	ref  Ref
	size int64
	elem *list.Element
	// stamped is when the file's mtime last recorded a use (unix seconds).
	stamped int64
}

// stampEvery bounds how often a read rewrites an object's mtime: recency
// across restarts only needs to be coarse, and on some disks a metadata
// write costs as much as reading a small object.
const stampEvery = int64(time.Hour / time.Second)

// Store holds objects on disk. It is safe for concurrent use; several
// processes may share a directory for reading, but only one should write.
type Store struct {
	cfg     Config
	objects string
	log     *slog.Logger
	// md5 hashes many concurrent downloads in SIMD lanes.
	md5 md5simd.Server
	// dirs are the shard directories known to exist.
	dirs sync.Map

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
		log:     cfg.Logger,
		lru:     list.New(),
		index:   map[Ref]*entry{},
		byCrate: map[string]map[string]struct{}{},
		md5:     md5simd.NewServer(),
	}
	for _, kind := range []Kind{Pack, EntryManifest} {
		for _, c := range "0123456789abcdef" {
			dir := filepath.Join(s.objects, kind.dir(), string(c))
			if err := s.mkdir(dir); err != nil {
				s.md5.Close()
				return nil, fmt.Errorf("store: create %s: %w", dir, err)
			}
		}
	}
	swept, err := s.scan()
	if err != nil {
		s.md5.Close()
		return nil, err
	}
	s.mu.Lock()
	evicted := s.evictLocked(0)
	s.mu.Unlock()
	s.log.Info("local store open", "dir", cfg.Dir, "objects", len(s.index), "bytes", s.used,
		"max_bytes", cfg.MaxBytes, "swept_temp_files", swept, "evicted", evicted)
	return s, nil
}

// Close releases the store's hashing lanes; writers must be finished.
func (s *Store) Close() error {
	s.md5.Close()
	return nil
}

// TempPrefix starts the name of every temp file. Temp files live in their
// object's own directory, so the rename never crosses directories and
// concurrent writers of different crates do not contend on one directory.
const TempPrefix = ".tmp-"

type scanned struct {
	ref   Ref
	size  int64
	mtime time.Time
}

// scan indexes objects/{packs,manifests}/{crate}/{key}{ext}, removing the
// temp files a crashed writer left (it says how many). Anything else (a
// stray file, a name that fails validation) is removed too: only this
// package writes there.
func (s *Store) scan() (swept int, err error) {
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
			if strings.HasPrefix(d.Name(), TempPrefix) {
				swept++
				return os.Remove(path)
			}
			ref, ok := parseName(kind, d.Name())
			info, ierr := d.Info()
			if !ok || filepath.Base(filepath.Dir(path)) != ref.CacheKey[:shardLen] || ierr != nil || !d.Type().IsRegular() {
				s.log.Warn("removing unexpected file from local store", "path", path)
				return os.Remove(path)
			}
			found = append(found, scanned{ref, info.Size(), info.ModTime()})
			return nil
		})
		if err != nil {
			return swept, fmt.Errorf("store: scan %s: %w", root, err)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].mtime.Before(found[j].mtime) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range found {
		s.insertLocked(f.ref, f.size, f.mtime.Unix())
	}
	return swept, nil
}

// Objects live in objects/{packs,manifests}/{key[0]}/{key}.{crate}{ext}:
// sixteen directories per kind, made at Open, so storing an object costs no
// mkdir (a metadata operation as dear as the file's creation on some
// disks) and writers spread over several directories.
const shardLen = 1

func (s *Store) path(r Ref) string {
	return filepath.Join(s.objects, r.Kind.dir(), r.CacheKey[:shardLen], r.CacheKey+"."+r.Crate+r.Kind.ext())
}

// parseName reads {key}.{crate}{ext}; a cache key is 64 hex characters, so
// the crate is whatever follows it, dots included.
func parseName(kind Kind, name string) (Ref, bool) {
	rest, ok := strings.CutSuffix(name, kind.ext())
	if !ok || len(rest) < layout.CacheKeyLen+2 || rest[layout.CacheKeyLen] != '.' {
		return Ref{}, false
	}
	r := Ref{Kind: kind, CacheKey: rest[:layout.CacheKeyLen], Crate: rest[layout.CacheKeyLen+1:]}
	return r, r.Valid()
}

func (s *Store) insertLocked(r Ref, size, stamped int64) {
	if old, ok := s.index[r]; ok {
		s.used -= old.size
		s.lru.Remove(old.elem)
	}
	e := &entry{ref: r, size: size, stamped: stamped}
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
	now := time.Now()
	s.mu.Lock()
	e, ok := s.index[r]
	stamp := false
	if ok {
		s.lru.MoveToFront(e.elem)
		if stamp = now.Unix()-e.stamped >= stampEvery; stamp {
			e.stamped = now.Unix()
		}
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
	if stamp {
		_ = os.Chtimes(f.Name(), now, now)
	}
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
// returns a Writer for r. etag is the object's ETag: when it is a plain
// single-part MD5 the content is checked against it. Exactly one of Commit
// or Abort must follow.
func (s *Store) Create(r Ref, size int64, etag string) (*Writer, error) {
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

	dir := filepath.Dir(s.path(r))
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		// Its directory was removed behind the store's back.
		s.dirs.Delete(dir)
		if err = s.mkdir(dir); err == nil {
			f, err = os.CreateTemp(dir, TempPrefix+"*")
		}
	}
	if err != nil {
		s.release(size)
		return nil, fmt.Errorf("store: temp file for %s: %w", r, diskErr(err))
	}
	w := &Writer{s: s, ref: r, size: size, f: f}
	// Multipart and encrypted uploads have ETags that are not the
	// content's MD5: hashing them would cost CPU for nothing.
	if want := strings.ToLower(strings.Trim(etag, `"`)); isMD5(want) {
		w.wantMD5 = want
		w.md5 = s.md5.NewHash()
	}
	return w, nil
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
	wantMD5 string
	md5     md5simd.Hasher // nil when there is no MD5 to check against
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
	if w.md5 != nil {
		w.md5.Write(p[:n])
	}
	if err != nil {
		return n, diskErr(err)
	}
	return n, nil
}

// Commit verifies the written bytes (size, and MD5 when the ETag given to
// Create is a plain single-part MD5), syncs and renames the file into place.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("store: writer already finished")
	}
	if w.written != w.size {
		w.Abort()
		return fmt.Errorf("%w: %s has %d of %d bytes", ErrCorrupt, w.ref, w.written, w.size)
	}
	if w.md5 != nil {
		if got := hex.EncodeToString(w.md5.Sum(nil)); got != w.wantMD5 {
			w.Abort()
			return fmt.Errorf("%w: %s has MD5 %s, ETag says %s", ErrCorrupt, w.ref, got, w.wantMD5)
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
	// Same directory: the rename is atomic and cannot fail for a missing
	// parent.
	err := os.Rename(w.f.Name(), w.s.path(w.ref))
	if err != nil {
		w.Abort()
		return fmt.Errorf("store: rename %s: %w", w.ref, err)
	}
	w.done = true
	w.release()
	w.s.mu.Lock()
	w.s.used -= w.size
	w.s.reserved -= w.size
	w.s.insertLocked(w.ref, w.size, time.Now().Unix())
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
	w.release()
	w.f.Close()
	os.Remove(w.f.Name())
	w.s.release(w.size)
}

// release returns the writer's hashing lane.
func (w *Writer) release() {
	if w.md5 != nil {
		w.md5.Close()
		w.md5 = nil
	}
}

// mkdir creates dir once per process; Create forgets and recreates a
// directory that was removed behind the store's back.
func (s *Store) mkdir(dir string) error {
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s.dirs.Store(dir, struct{}{})
	return nil
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
