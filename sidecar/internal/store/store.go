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
	"hash/maphash"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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
	// ErrLocked is returned by Open when another process has the store
	// directory open.
	ErrLocked = errors.New("store directory in use by another process")
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

// Meta is what the store keeps about an object besides its bytes, so a
// local copy can be served with the same headers as the bucket's.
type Meta struct {
	// ETag is the bucket's ETag, unquoted; empty when unknown.
	ETag string
	// LastModified is the bucket's Last-Modified; zero when unknown (the
	// file's mtime is served then).
	LastModified time.Time
	// Encrypted says the bucket encrypted the object with a KMS or
	// customer key: its ETag is then not the content's MD5 even when it
	// looks like one.
	Encrypted bool
}

// Info describes an opened object. Size is the opened file's own (fstat),
// so it always matches the bytes a reader gets.
type Info struct {
	Size int64
	Meta
}

type entry struct {
	ref  Ref
	size int64
	meta Meta
	// ino is the file's inode: Open checks it to pair the file it opened
	// with this entry's metadata.
	ino  uint64
	elem *list.Element
	// stamped is when the file's mtime last recorded a use (unix seconds).
	stamped int64
}

// stampEvery bounds how often a read rewrites an object's mtime: recency
// across restarts only needs to be coarse, and on some disks a metadata
// write costs as much as reading a small object.
const stampEvery = int64(time.Hour / time.Second)

// Store holds objects on disk. It is safe for concurrent use. One process
// owns a store directory at a time (Open takes an exclusive lock on it).
type Store struct {
	cfg     Config
	objects string
	log     *slog.Logger
	lock    *os.File
	closed  sync.Once
	// dirs are the shard directories known to exist.
	dirs sync.Map
	// commits orders the writers of one ref: a rename and its index
	// insert happen under the ref's stripe, and eviction never unlinks a
	// ref whose stripe is held, so a file renamed into place is never
	// removed as its predecessor and index and disk always agree.
	commits [64]sync.Mutex
	seed    maphash.Seed
	// afterRename, when set by a test, runs between a commit's rename and
	// its index insert.
	afterRename func()

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
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", cfg.Dir, err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:     cfg,
		objects: filepath.Join(cfg.Dir, "objects"),
		log:     cfg.Logger,
		lock:    lock,
		lru:     list.New(),
		index:   map[Ref]*entry{},
		byCrate: map[string]map[string]struct{}{},
		seed:    maphash.MakeSeed(),
	}
	fail := func(err error) (*Store, error) {
		lock.Close()
		return nil, err
	}
	for _, kind := range []Kind{Pack, EntryManifest} {
		for _, c := range "0123456789abcdef" {
			dir := filepath.Join(s.objects, kind.dir(), string(c))
			if err := s.mkdir(dir); err != nil {
				return fail(fmt.Errorf("store: create %s: %w", dir, err))
			}
		}
	}
	swept, err := s.scan()
	if err != nil {
		return fail(err)
	}
	s.mu.Lock()
	evicted := s.evictLocked(0)
	s.mu.Unlock()
	s.log.Info("local store open", "dir", cfg.Dir, "objects", len(s.index), "bytes", s.used,
		"max_bytes", cfg.MaxBytes, "swept_temp_files", swept, "evicted", evicted)
	return s, nil
}

// lockDir takes an exclusive, non-blocking lock on dir/LOCK. The kernel
// drops it when the process dies, so a crash never leaves the directory
// locked; a live owner makes a second Open fail with ErrLocked instead of
// sweeping the owner's temp files and evicting under its index.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	return f, nil
}

// Close releases the store's directory lock; writers must be finished.
func (s *Store) Close() error {
	var err error
	s.closed.Do(func() {
		err = s.lock.Close()
	})
	return err
}

// TempPrefix starts the name of every temp file. Temp files live in their
// object's own directory, so the rename never crosses directories and
// concurrent writers of different crates do not contend on one directory.
const TempPrefix = ".tmp-"

type scanned struct {
	ref   Ref
	size  int64
	ino   uint64
	meta  Meta
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
			found = append(found, scanned{ref, info.Size(), inode(info), readMeta(path), info.ModTime()})
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
		s.insertLocked(&entry{ref: f.ref, size: f.size, ino: f.ino, meta: f.meta, stamped: f.mtime.Unix()})
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

func (s *Store) insertLocked(e *entry) {
	r := e.ref
	if old, ok := s.index[r]; ok {
		s.used -= old.size
		s.lru.Remove(old.elem)
	}
	e.elem = s.lru.PushFront(e)
	s.index[r] = e
	s.used += e.size
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

// stripe is the commit lock of r.
func (s *Store) stripe(r Ref) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteByte(byte(r.Kind))
	h.WriteString(r.CacheKey)
	h.WriteString(r.Crate)
	return &s.commits[h.Sum64()%uint64(len(s.commits))]
}

// evictLocked removes least-recently-used objects until need more bytes fit
// the budget, and says how many it removed. An object whose ref is being
// committed right now is passed over: its file may already be the new one.
// Unlinking a file another goroutine is reading is safe: the open
// descriptor keeps its data.
func (s *Store) evictLocked(need int64) int {
	if s.cfg.MaxBytes <= 0 {
		return 0
	}
	n := 0
	for el := s.lru.Back(); el != nil && s.used+need > s.cfg.MaxBytes; {
		e := el.Value.(*entry)
		el = el.Prev()
		mu := s.stripe(e.ref)
		if !mu.TryLock() {
			continue
		}
		s.removeLocked(e)
		if err := os.Remove(s.path(e.ref)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("evict", "object", e.ref.String(), "error", err)
		}
		mu.Unlock()
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

// Open opens a stored object for reading and marks it recently used. The
// Info returned describes exactly the opened file, even when a writer
// replaces the object meanwhile.
func (s *Store) Open(r Ref) (*os.File, Info, error) {
	if !r.Valid() {
		return nil, Info{}, fmt.Errorf("%w: %s", ErrInvalidRef, r)
	}
	// A commit of r between the index lookup and the open pairs the new
	// file with the old entry; the inode tells, and a second look finds
	// the new entry.
	for range 3 {
		f, info, retry, err := s.open(r)
		if !retry {
			return f, info, err
		}
	}
	return nil, Info{}, fmt.Errorf("%w: %s is being replaced", ErrNotFound, r)
}

func (s *Store) open(r Ref) (f *os.File, info Info, retry bool, err error) {
	now := time.Now()
	s.mu.Lock()
	e, ok := s.index[r]
	stamp := false
	var meta Meta
	var ino uint64
	if ok {
		s.lru.MoveToFront(e.elem)
		if stamp = now.Unix()-e.stamped >= stampEvery; stamp {
			e.stamped = now.Unix()
		}
		meta, ino = e.meta, e.ino
	}
	s.mu.Unlock()
	if !ok {
		return nil, Info{}, false, fmt.Errorf("%w: %s", ErrNotFound, r)
	}
	f, err = os.Open(s.path(r))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back (an operator, or a concurrent eviction).
			s.mu.Lock()
			if cur, ok := s.index[r]; ok && cur == e {
				s.removeLocked(e)
			}
			s.mu.Unlock()
			return nil, Info{}, false, fmt.Errorf("%w: %s", ErrNotFound, r)
		}
		return nil, Info{}, false, fmt.Errorf("open %s: %w", r, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, false, fmt.Errorf("stat %s: %w", r, err)
	}
	if ino != 0 && inode(st) != ino {
		f.Close()
		return nil, Info{}, true, nil
	}
	if meta.LastModified.IsZero() {
		meta.LastModified = st.ModTime()
	}
	// The mtime carries recency across restarts; failing to set it only
	// makes eviction order less exact.
	if stamp {
		_ = os.Chtimes(f.Name(), now, now)
	}
	return f, Info{Size: st.Size(), Meta: meta}, false, nil
}

// Remove drops r from the store (a DELETE through the S3 surface). It is
// not an error when r is absent.
func (s *Store) Remove(r Ref) error {
	if !r.Valid() {
		return fmt.Errorf("%w: %s", ErrInvalidRef, r)
	}
	mu := s.stripe(r)
	mu.Lock()
	defer mu.Unlock()
	s.mu.Lock()
	e, ok := s.index[r]
	if ok {
		s.removeLocked(e)
	}
	s.mu.Unlock()
	if err := os.Remove(s.path(r)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", r, err)
	}
	return nil
}

// inode is a file's inode number (0 where the platform has none).
func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
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
// returns a Writer for r. When m.ETag is a plain single-part MD5 of an
// object not encrypted with a KMS or customer key, the content is checked
// against it. Exactly one of Commit or Abort must follow.
func (s *Store) Create(r Ref, size int64, m Meta) (*Writer, error) {
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
	// Only committed objects can be evicted: when the writes in progress
	// leave no room even with none of them, evicting would empty the cache
	// for nothing.
	if s.cfg.MaxBytes > 0 && s.reserved+size > s.cfg.MaxBytes {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d bytes reserved by writes in progress", ErrNoSpace, s.reserved)
	}
	s.evictLocked(size)
	if s.cfg.MaxBytes > 0 && s.used+size > s.cfg.MaxBytes {
		// What is left is being committed right now (eviction passes it
		// over); the next Create will find it evictable.
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: objects being replaced hold the budget", ErrNoSpace)
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
	m.ETag = strings.Trim(m.ETag, `"`)
	w := &Writer{s: s, ref: r, size: size, f: f, meta: m}
	// Multipart uploads and objects under KMS or customer keys have ETags
	// that are not the content's MD5: hashing them would cost CPU for
	// nothing and reject good objects.
	//
	// Each writer hashes in its own goroutine as it writes. (A shared
	// md5-simd server measured no cheaper per byte in prefetching, where
	// objects are mostly small and few of its lanes fill, and slower on
	// demand, where its one goroutine hashed the few downloads in turn.)
	if want := strings.ToLower(m.ETag); !m.Encrypted && isMD5(want) {
		w.wantMD5 = want
		w.md5 = md5.New()
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
	meta    Meta
	wantMD5 string
	md5     hash.Hash // nil when there is no MD5 to check against
	done    bool

	// sections, when the object is written by Section, hold the ranges
	// handed out, by offset; written counts their bytes and hashed is how
	// far the MD5 has read the file back. Guarded by smu.
	smu      sync.Mutex
	sections []*Section
	hashed   int64
	hashErr  error
}

// Write appends to the temp file; writing past the reserved size fails, so a
// store that sends more than it announced cannot overrun the budget.
func (w *Writer) Write(p []byte) (int, error) {
	if w.sectioned() {
		return 0, fmt.Errorf("store: %s is written by sections", w.ref)
	}
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

// SetMeta replaces the metadata given to Create (a PUT learns the bucket's
// ETag only after its body was sent). Verification still follows Create's.
func (w *Writer) SetMeta(m Meta) {
	m.ETag = strings.Trim(m.ETag, `"`)
	w.meta = m
}

// Commit verifies the written bytes (size, and MD5 when the ETag given to
// Create is a plain single-part MD5), syncs and renames the file into place.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("store: writer already finished")
	}
	if w.sectioned() {
		if err := w.finishSections(); err != nil {
			w.Abort()
			return err
		}
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
	// Metadata rides with the file (an extended attribute), so it is
	// renamed with it and survives a restart; a filesystem without them
	// only loses the ETag after a restart.
	writeMeta(w.f, w.meta)
	st, err := w.f.Stat()
	if err != nil {
		w.Abort()
		return fmt.Errorf("store: stat %s: %w", w.ref, err)
	}
	if err := w.f.Close(); err != nil {
		w.Abort()
		return fmt.Errorf("store: close %s: %w", w.ref, diskErr(err))
	}
	s := w.s
	mu := s.stripe(w.ref)
	mu.Lock()
	defer mu.Unlock()
	// Same directory: the rename is atomic and cannot fail for a missing
	// parent.
	if err := os.Rename(w.f.Name(), s.path(w.ref)); err != nil {
		w.Abort()
		return fmt.Errorf("store: rename %s: %w", w.ref, err)
	}
	w.done = true
	w.release()
	if s.afterRename != nil {
		s.afterRename()
	}
	s.mu.Lock()
	s.used -= w.size
	s.reserved -= w.size
	s.insertLocked(&entry{ref: w.ref, size: w.size, ino: inode(st), meta: w.meta, stamped: time.Now().Unix()})
	s.mu.Unlock()
	return nil
}

// metaAttr names the extended attribute holding an object's Meta.
const metaAttr = "user.kache.meta"

// writeMeta stores m as "etag\nlast-modified-unix-nanos\nencrypted".
func writeMeta(f *os.File, m Meta) {
	if m.ETag == "" && m.LastModified.IsZero() {
		return
	}
	var lm int64
	if !m.LastModified.IsZero() {
		lm = m.LastModified.UnixNano()
	}
	v := m.ETag + "\n" + strconv.FormatInt(lm, 10) + "\n" + strconv.FormatBool(m.Encrypted)
	_ = fsetxattr(f, metaAttr, []byte(v))
}

// readMeta reads what writeMeta stored; anything unreadable is unknown.
func readMeta(path string) Meta {
	v, err := getxattr(path, metaAttr)
	if err != nil {
		return Meta{}
	}
	parts := strings.Split(string(v), "\n")
	if len(parts) != 3 || len(parts[0]) > 128 {
		return Meta{}
	}
	m := Meta{ETag: parts[0]}
	if ns, err := strconv.ParseInt(parts[1], 10, 64); err == nil && ns != 0 {
		m.LastModified = time.Unix(0, ns)
	}
	m.Encrypted = parts[2] == "true"
	return m
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

// release drops the writer's hash.
func (w *Writer) release() {
	w.md5 = nil
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
