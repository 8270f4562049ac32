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

func key(c byte) string { return strings.Repeat(string(c), 64) }

func put(t *testing.T, s *Store, r Ref, data string) {
	t.Helper()
	sum := md5.Sum([]byte(data))
	w, err := s.Create(r, int64(len(data)), Meta{ETag: hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatalf("create %s: %v", r, err)
	}
	if _, err := io.WriteString(w, data); err != nil {
		t.Fatalf("write %s: %v", r, err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit %s: %v", r, err)
	}
}

func read(t *testing.T, s *Store, r Ref) string {
	t.Helper()
	f, _, err := s.Open(r)
	if err != nil {
		t.Fatalf("open %s: %v", r, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func open(t *testing.T, dir string, max int64) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, MaxBytes: max, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestWriteReadReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	pack := Ref{Pack, "serde", key('a')}
	man := Ref{EntryManifest, "serde", key('a')}
	put(t, s, pack, "pack-bytes")
	put(t, s, man, `{"version":3}`)
	if got := read(t, s, pack); got != "pack-bytes" {
		t.Fatalf("read %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "objects", "packs", "a", key('a')+".serde.tar.zst")); err != nil {
		t.Fatalf("pack not at its path: %v", err)
	}
	if got := s.PackKeys("serde"); len(got) != 1 || got[0] != key('a') {
		t.Fatalf("PackKeys = %v", got)
	}
	s.Close()
	s2 := open(t, dir, 0)
	if st := s2.Stats(); st.Objects != 2 || st.Bytes != int64(len("pack-bytes")+len(`{"version":3}`)) {
		t.Fatalf("reopened stats %+v", st)
	}
	if got := read(t, s2, man); got != `{"version":3}` {
		t.Fatalf("manifest after reopen %q", got)
	}
}

func TestVerificationFailuresLeaveNothing(t *testing.T) {
	cases := []struct {
		name  string
		size  int64
		data  string
		etag  string
		write error
		err   error
	}{
		{name: "short body", size: 10, data: "12345", err: ErrCorrupt},
		{name: "long body", size: 3, data: "12345", write: ErrCorrupt},
		{name: "md5 mismatch", size: 5, data: "12345", etag: `"` + strings.Repeat("0", 32) + `"`, err: ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, 100)
			r := Ref{Pack, "serde", key('b')}
			w, err := s.Create(r, tc.size, Meta{ETag: tc.etag})
			if err != nil {
				t.Fatal(err)
			}
			_, werr := io.WriteString(w, tc.data)
			if !errors.Is(werr, tc.write) {
				t.Fatalf("write error %v, want %v", werr, tc.write)
			}
			if werr != nil {
				w.Abort()
			} else if err := w.Commit(); !errors.Is(err, tc.err) {
				t.Fatalf("commit error %v, want %v", err, tc.err)
			}
			if s.Has(r) {
				t.Fatal("object visible after failed verification")
			}
			if n := tempFiles(t, dir); n != 0 {
				t.Fatalf("temp files left: %d", n)
			}
			if st := s.Stats(); st.Bytes != 0 || st.ReservedBytes != 0 {
				t.Fatalf("budget not released: %+v", st)
			}
		})
	}
}

func TestInvalidRefsNeverTouchDisk(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	bad := []Ref{
		{Pack, "../evil", key('a')},
		{Pack, "a/b", key('a')},
		{Pack, ".", key('a')},
		{Pack, "serde", "../../../../etc/passwd"},
		{Pack, "serde", strings.ToUpper(key('a'))},
		{EntryManifest, "..", key('a')},
		{Kind(7), "serde", key('a')},
	}
	for _, r := range bad {
		if _, err := s.Create(r, 1, Meta{}); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("Create(%v) = %v, want ErrInvalidRef", r, err)
		}
		if _, _, err := s.Open(r); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("Open(%v) = %v, want ErrInvalidRef", r, err)
		}
	}
	var files []string
	filepath.WalkDir(filepath.Dir(dir), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && p != filepath.Join(dir, "LOCK") {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files written: %v", files)
	}
}

func TestLRUEviction(t *testing.T) {
	s := open(t, t.TempDir(), 30)
	a, b, c := Ref{Pack, "a", key('a')}, Ref{Pack, "b", key('b')}, Ref{Pack, "c", key('c')}
	put(t, s, a, strings.Repeat("a", 10))
	put(t, s, b, strings.Repeat("b", 10))
	read(t, s, a) // a is now more recent than b
	put(t, s, c, strings.Repeat("c", 15))
	if s.Has(b) || !s.Has(a) || !s.Has(c) {
		t.Fatalf("want b evicted: a=%v b=%v c=%v", s.Has(a), s.Has(b), s.Has(c))
	}
	if _, err := s.Create(Ref{Pack, "d", key('d')}, 31, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("object over the whole budget: %v", err)
	}
	if st := s.Stats(); st.Bytes > 30 {
		t.Fatalf("over budget: %+v", st)
	}
}

func TestOpenSweepsLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	put(t, s, Ref{Pack, "serde", key('a')}, "ok")
	// A crashed writer's temp file and a stray file among objects.
	os.WriteFile(filepath.Join(dir, "objects", "packs", "c", TempPrefix+"123"), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(dir, "objects", "packs", "a", "junk.txt"), []byte("x"), 0o644)
	// A valid name in the wrong shard directory is not the store's either.
	os.WriteFile(filepath.Join(dir, "objects", "packs", "b", key('a')+".serde.tar.zst"), []byte("x"), 0o644)
	s.Close()
	s2 := open(t, dir, 0)
	if n := tempFiles(t, dir); n != 0 {
		t.Fatalf("temp leftovers not swept: %d", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "objects", "packs", "a", "junk.txt")); !os.IsNotExist(err) {
		t.Fatalf("stray file kept: %v", err)
	}
	if st := s2.Stats(); st.Objects != 1 {
		t.Fatalf("objects after reopen: %+v", st)
	}
}

func TestReopenEvictsOldestToBudget(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	for _, c := range "abcd" {
		put(t, s, Ref{Pack, "x", key(byte(c))}, strings.Repeat("z", 10))
	}
	s.Close()
	s2 := open(t, dir, 25)
	if st := s2.Stats(); st.Objects != 2 || st.Bytes != 20 {
		t.Fatalf("stats after reopen with a smaller budget: %+v", st)
	}
}

func TestCreateRecreatesARemovedDirectory(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	put(t, s, Ref{Pack, "serde", key('a')}, "one")
	if err := os.RemoveAll(filepath.Join(dir, "objects", "packs", "b")); err != nil {
		t.Fatal(err)
	}
	put(t, s, Ref{Pack, "serde", key('b')}, "two")
	if got := read(t, s, Ref{Pack, "serde", key('b')}); got != "two" {
		t.Fatalf("read %q", got)
	}
}

func TestMultipartETagIsNotHashed(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	w, err := s.Create(Ref{Pack, "serde", key('a')}, 3, Meta{ETag: `"0123456789abcdef0123456789abcdef-2"`})
	if err != nil {
		t.Fatal(err)
	}
	if w.md5 != nil {
		t.Fatal("a multipart ETag cannot be checked, so nothing should be hashed")
	}
	io.WriteString(w, "abc")
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func tempFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), TempPrefix) {
			n++
		}
		return nil
	})
	return n
}

func TestParseName(t *testing.T) {
	cases := []struct {
		kind Kind
		name string
		want Ref
		ok   bool
	}{
		{Pack, key('a') + ".serde.tar.zst", Ref{Pack, "serde", key('a')}, true},
		{Pack, key('a') + ".a.out.tar.zst", Ref{Pack, "a.out", key('a')}, true},
		{EntryManifest, key('b') + ".tokio_stream.json", Ref{EntryManifest, "tokio_stream", key('b')}, true},
		{Pack, key('a') + ".serde.json", Ref{}, false},
		{Pack, key('a') + "..tar.zst", Ref{}, false},
		{Pack, key('a') + "...tar.zst", Ref{}, false},
		{Pack, key('a')[:63] + ".serde.tar.zst", Ref{}, false},
		{Pack, strings.ToUpper(key('a')) + ".serde.tar.zst", Ref{}, false},
	}
	for _, tc := range cases {
		got, ok := parseName(tc.kind, tc.name)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseName(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// Reads record recency in the file's mtime at most once an hour per object.
func TestOpenStampsRecencyCoarsely(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	r := Ref{Pack, "serde", key('a')}
	put(t, s, r, "data")
	path := filepath.Join(dir, "objects", "packs", "a", key('a')+".serde.tar.zst")
	old := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	read(t, s, r) // stored just now: no stamp
	if st, _ := os.Stat(path); !st.ModTime().Equal(old) {
		t.Fatalf("a fresh object's read rewrote its mtime: %v", st.ModTime())
	}
	s.Close()
	s2 := open(t, dir, 0) // reopened: recency comes from the 3-hour-old mtime
	read(t, s2, r)
	if st, _ := os.Stat(path); !st.ModTime().After(old.Add(2 * time.Hour)) {
		t.Fatalf("a stale object's read did not stamp it: %v", st.ModTime())
	}
}
