package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Regression tests for the store defects of issue 14 (items 1-5).

// A Create that cannot fit even with every committed object gone must not
// empty the cache on its way to ErrNoSpace.
func TestCreateThatCannotFitEvictsNothing(t *testing.T) {
	s := open(t, t.TempDir(), 100)
	a, b := Ref{Pack, "a", key('a')}, Ref{Pack, "b", key('b')}
	put(t, s, a, strings.Repeat("a", 20))
	put(t, s, b, strings.Repeat("b", 20))
	inflight, err := s.Create(Ref{Pack, "c", key('c')}, 60, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.Abort()
	if _, err := s.Create(Ref{Pack, "d", key('d')}, 50, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Create over the reservations: %v, want ErrNoSpace", err)
	}
	if !s.Has(a) || !s.Has(b) {
		t.Fatalf("cache emptied by a Create that could not fit: a=%v b=%v", s.Has(a), s.Has(b))
	}
	// One that fits once a is evicted still evicts only what it needs.
	w, err := s.Create(Ref{Pack, "e", key('e')}, 20, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if s.Has(a) || !s.Has(b) {
		t.Fatalf("want only the oldest evicted: a=%v b=%v", s.Has(a), s.Has(b))
	}
}

// A second process opening a live store directory must not sweep the first
// one's temp files; it is refused.
func TestSecondOpenerIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	r := Ref{Pack, "serde", key('a')}
	w, err := s.Create(r, 4, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "data")
	if _, err := Open(Config{Dir: dir, NoSync: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("the owner's commit after a refused second Open: %v", err)
	}
	if got := read(t, s, r); got != "data" {
		t.Fatalf("read %q", got)
	}
	s.Close()
	s2 := open(t, dir, 0)
	if !s2.Has(r) {
		t.Fatal("object lost across a clean handover")
	}
}

// An eviction of the old copy between a replacing commit's rename and its
// index insert must not unlink the new file.
func TestReplacingCommitSurvivesEviction(t *testing.T) {
	s := open(t, t.TempDir(), 10)
	r := Ref{Pack, "serde", key('a')}
	put(t, s, r, "old-1")
	w, err := s.Create(r, 5, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "new-2")
	s.afterRename = func() {
		s.afterRename = nil
		// Needs the old copy's 5 bytes: eviction would pick it.
		if w2, err := s.Create(Ref{Pack, "other", key('b')}, 5, Meta{}); err == nil {
			w2.Abort()
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, r); got != "new-2" {
		t.Fatalf("read %q after a replacing commit", got)
	}
	checkConsistent(t, s)
}

// Two writers of one ref must leave index and disk agreeing, and Open's size
// must be the opened file's.
func TestWritersOfOneRefAreOrdered(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	r := Ref{Pack, "serde", key('a')}
	a, err := s.Create(r, 3, Meta{ETag: "etag-a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(r, 7, Meta{ETag: "etag-b"})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(a, "aaa")
	io.WriteString(b, "bbbbbbb")
	bDone := make(chan error, 1)
	s.afterRename = func() {
		s.afterRename = nil
		go func() { bDone <- b.Commit() }()
		// Give b every chance to overtake a between rename and insert.
		time.Sleep(50 * time.Millisecond)
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	f, info, err := s.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if info.Size != int64(len(data)) || string(data) != "bbbbbbb" || info.ETag != "etag-b" {
		t.Fatalf("Open = %q with %+v; want the last commit's bytes, size and ETag", data, info)
	}
	checkConsistent(t, s)
}

// A file replaced behind the store's back is served with its own size.
func TestOpenSizeIsTheFilesSize(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	r := Ref{Pack, "serde", key('a')}
	put(t, s, r, "short")
	path := filepath.Join(dir, "objects", "packs", "a", key('a')+".serde.tar.zst")
	if err := os.WriteFile(path+".x", []byte("much longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Same inode, new length: what an in-place rewrite looks like.
	if err := os.WriteFile(path, []byte("much longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, info, err := s.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	if info.Size != int64(len(data)) {
		t.Fatalf("Open says %d bytes, the file has %d", info.Size, len(data))
	}
}

// An ETag of an SSE-KMS or SSE-C object looks like an MD5 and is not one.
func TestEncryptedObjectETagIsNotVerified(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	r := Ref{Pack, "serde", key('a')}
	notMD5 := strings.Repeat("7", 32)
	w, err := s.Create(r, 4, Meta{ETag: `"` + notMD5 + `"`, Encrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "data")
	if err := w.Commit(); err != nil {
		t.Fatalf("encrypted object rejected: %v", err)
	}
	// The same ETag on a plain object is a mismatch.
	w, err = s.Create(Ref{Pack, "serde", key('b')}, 4, Meta{ETag: notMD5})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "data")
	if err := w.Commit(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("plain object with a wrong MD5 ETag: %v, want ErrCorrupt", err)
	}
}

// ETag and Last-Modified survive a restart with the file.
func TestMetaSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	r := Ref{Pack, "serde", key('a')}
	sum := md5.Sum([]byte("data"))
	lm := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	w, err := s.Create(r, 4, Meta{ETag: hex.EncodeToString(sum[:]), LastModified: lm})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "data")
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := open(t, dir, 0)
	f, info, err := s2.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if info.ETag != hex.EncodeToString(sum[:]) || !info.LastModified.Equal(lm) {
		t.Fatalf("meta after reopen %+v", info)
	}
}

// checkConsistent asserts every indexed object has a file of its size.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum int64
	for r, e := range s.index {
		st, err := os.Stat(s.path(r))
		if err != nil {
			t.Errorf("%s indexed without a file: %v", r, err)
			continue
		}
		if st.Size() != e.size {
			t.Errorf("%s indexed as %d bytes, file has %d", r, e.size, st.Size())
		}
		sum += e.size
	}
	if sum != s.used-s.reserved {
		t.Errorf("index sums to %d bytes, accounting says %d", sum, s.used-s.reserved)
	}
}
