package hints

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func ptr[T any](v T) *T { return &v }

func baseIntent() *wire.BuildIntent {
	return &wire.BuildIntent{
		CrateNames:    []string{"syn", "serde", "app"},
		Namespace:     ptr("ci-main"),
		CargoLockDeps: []wire.LockDep{{Name: "serde", Version: "1.0.210"}, {Name: "syn", Version: "2.0.0"}},
		Target:        "x86_64-unknown-linux-gnu",
		Runner:        &wire.RunnerContext{Repository: "acme/app", Commit: "aaa", GitRef: "refs/heads/main", RunID: "1"},
	}
}

func TestKeyOf(t *testing.T) {
	base := KeyOf(baseIntent())
	tests := []struct {
		name   string
		modify func(*wire.BuildIntent)
		same   bool
	}{
		{name: "identical", modify: func(*wire.BuildIntent) {}, same: true},
		{name: "new commit", modify: func(in *wire.BuildIntent) { in.Runner.Commit = "bbb" }, same: true},
		{name: "other ref, run and labels", modify: func(in *wire.BuildIntent) {
			in.Runner.GitRef, in.Runner.RunID, in.Runner.Labels = "refs/heads/dev", "2", map[string]string{"a": "b"}
		}, same: true},
		{name: "lock deps reordered", modify: func(in *wire.BuildIntent) {
			in.CargoLockDeps[0], in.CargoLockDeps[1] = in.CargoLockDeps[1], in.CargoLockDeps[0]
		}, same: true},
		{name: "features reordered", modify: func(in *wire.BuildIntent) { in.Features = []string{"b", "a"} }, same: false},
		{name: "crate order", modify: func(in *wire.BuildIntent) { in.CrateNames[0], in.CrateNames[1] = "serde", "syn" }},
		{name: "namespace null", modify: func(in *wire.BuildIntent) { in.Namespace = nil }},
		{name: "namespace empty", modify: func(in *wire.BuildIntent) { in.Namespace = ptr("") }},
		{name: "dep bumped", modify: func(in *wire.BuildIntent) { in.CargoLockDeps[0].Version = "1.0.211" }},
		{name: "target", modify: func(in *wire.BuildIntent) { in.Target = "aarch64-apple-darwin" }},
		{name: "profile", modify: func(in *wire.BuildIntent) { in.Profile = "release" }},
		{name: "toolchain", modify: func(in *wire.BuildIntent) { in.Toolchain = "1.82.0" }},
		{name: "budget", modify: func(in *wire.BuildIntent) { in.Budget = &wire.Budget{MaxKeys: 10} }},
		{name: "repository", modify: func(in *wire.BuildIntent) { in.Runner.Repository = "acme/other" }},
		{name: "no runner", modify: func(in *wire.BuildIntent) { in.Runner = nil }},
		// Length prefixes keep concatenations apart.
		{name: "crate names split differently", modify: func(in *wire.BuildIntent) { in.CrateNames = []string{"synserde", "", "app"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseIntent()
			tt.modify(in)
			if got := KeyOf(in) == base; got != tt.same {
				t.Errorf("KeyOf equal to base = %v, want %v", got, tt.same)
			}
		})
	}
	t.Run("features reordered twice agree", func(t *testing.T) {
		a, b := baseIntent(), baseIntent()
		a.Features, b.Features = []string{"x", "y"}, []string{"y", "x"}
		if KeyOf(a) != KeyOf(b) {
			t.Error("feature order changed the key")
		}
	})
	t.Run("does not modify the intent", func(t *testing.T) {
		in := baseIntent()
		in.CargoLockDeps[0], in.CargoLockDeps[1] = in.CargoLockDeps[1], in.CargoLockDeps[0]
		first := in.CargoLockDeps[0].Name
		KeyOf(in)
		if in.CargoLockDeps[0].Name != first {
			t.Error("KeyOf sorted the caller's deps")
		}
	})
}

func TestValueRoundTrip(t *testing.T) {
	tests := []Hint{
		{Plan: []byte(`{"disposition":"execute","candidates":[]}`), StoredAt: time.Unix(1767225600, 123), Source: "central"},
		{Plan: nil, StoredAt: time.Unix(0, 0), Source: ""},
		{Plan: []byte("x"), StoredAt: time.Unix(1, 0), Source: strings.Repeat("s", 255)},
	}
	for _, h := range tests {
		t.Run(h.Source, func(t *testing.T) {
			got, err := decodeValue(encodeValue(h))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Plan, h.Plan) || !got.StoredAt.Equal(h.StoredAt) || got.Source != h.Source {
				t.Errorf("round trip = %+v, want %+v", got, h)
			}
		})
	}
}

func TestDecodeValueRejects(t *testing.T) {
	tests := map[string][]byte{
		"empty":           nil,
		"short":           {valueFormat, 0, 0},
		"unknown format":  append([]byte{9}, make([]byte, 12)...),
		"source overruns": {valueFormat, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 'a'},
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeValue(b); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeValue error = %v, want errCorrupt", err)
			}
		})
	}
}

func FuzzValueRoundTrip(f *testing.F) {
	f.Add([]byte(`{"disposition":"use_fallback"}`), int64(1767225600000000000), "central")
	f.Fuzz(func(t *testing.T, plan []byte, at int64, source string) {
		if len(source) > maxSourceLen {
			return
		}
		h := Hint{Plan: plan, StoredAt: time.Unix(0, at), Source: source}
		got, err := decodeValue(encodeValue(h))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Plan, plan) || got.StoredAt.UnixNano() != at || got.Source != source {
			t.Fatalf("round trip = %+v, want %+v", got, h)
		}
	})
}

func openMem(t *testing.T, o Options) *Store {
	t.Helper()
	s, err := OpenStorage(storage.NewMemStorage(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func keyN(n byte) Key { return Key{n} }

func TestPutGet(t *testing.T) {
	s := openMem(t, Options{})
	if _, err := s.Get(keyN(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on empty store = %v, want ErrNotFound", err)
	}
	t0 := time.Unix(1000, 0)
	if err := s.Put(keyN(1), Hint{Plan: []byte("p1"), StoredAt: t0, Source: "central"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(keyN(1), Hint{Plan: []byte("p1-new"), StoredAt: t0.Add(time.Minute), Source: "central"}); err != nil {
		t.Fatal(err)
	}
	h, err := s.Get(keyN(1))
	if err != nil {
		t.Fatal(err)
	}
	if string(h.Plan) != "p1-new" || !h.StoredAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("Get = %+v, want the replacement", h)
	}
	if n, _ := s.Stats(); n != 1 {
		t.Errorf("entries = %d after replacing, want 1", n)
	}
}

func TestEviction(t *testing.T) {
	t0 := time.Unix(1000, 0)
	plan := bytes.Repeat([]byte("x"), 100)
	tests := []struct {
		name string
		opts Options
		// puts are stored in order with StoredAt = t0 + i minutes, except
		// that key 1 is written again last with the newest time.
		puts     int
		wantKept []byte
		wantGone []byte
	}{
		{name: "entry bound keeps the newest", opts: Options{MaxEntries: 3}, puts: 5, wantKept: []byte{1, 4, 5}, wantGone: []byte{0, 2, 3}},
		{name: "byte bound keeps the newest", opts: Options{MaxBytes: 3 * 160}, puts: 5, wantKept: []byte{1, 5}, wantGone: []byte{0, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openMem(t, tt.opts)
			for i := 0; i <= tt.puts; i++ {
				if err := s.Put(keyN(byte(i)), Hint{Plan: plan, StoredAt: t0.Add(time.Duration(i) * time.Minute), Source: "central"}); err != nil {
					t.Fatal(err)
				}
				if i == 2 {
					// Refreshing key 1 makes it the newest so far.
					if err := s.Put(keyN(1), Hint{Plan: plan, StoredAt: t0.Add(time.Hour), Source: "central"}); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, k := range tt.wantKept {
				if _, err := s.Get(keyN(k)); err != nil {
					t.Errorf("key %d: %v, want kept", k, err)
				}
			}
			for _, k := range tt.wantGone {
				if _, err := s.Get(keyN(k)); !errors.Is(err, ErrNotFound) {
					t.Errorf("key %d: %v, want evicted", k, err)
				}
			}
			n, b := s.Stats()
			if tt.opts.MaxEntries > 0 && n > tt.opts.MaxEntries || tt.opts.MaxBytes > 0 && b > tt.opts.MaxBytes {
				t.Errorf("Stats = %d entries, %d bytes over the bounds %+v", n, b, tt.opts)
			}
		})
	}
}

func TestOversizedHintIsNotStored(t *testing.T) {
	s := openMem(t, Options{MaxBytes: 64})
	if err := s.Put(keyN(1), Hint{Plan: bytes.Repeat([]byte("x"), 100), StoredAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(keyN(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound for a hint over MaxBytes", err)
	}
}

func TestReopenKeepsHintsAndCounts(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Put(keyN(byte(i)), Hint{Plan: []byte("plan"), StoredAt: time.Unix(int64(i), 0), Source: "central"}); err != nil {
			t.Fatal(err)
		}
	}
	_, wantBytes := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, b := s.Stats(); n != 3 || b != wantBytes {
		t.Errorf("Stats after reopen = %d, %d, want 3, %d", n, b, wantBytes)
	}
	// The next write applies the new, smaller bound.
	if err := s.Put(keyN(9), Hint{Plan: []byte("plan"), StoredAt: time.Unix(9, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(keyN(0)); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest hint after reopen with a lower bound: %v, want evicted", err)
	}
}

func TestOpenRecoversCorruptedManifest(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(keyN(1), Hint{Plan: []byte("plan"), StoredAt: time.Unix(1, 0), Source: "central"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	manifests, err := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no MANIFEST file in %s: %v", dir, err)
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, bytes.Repeat([]byte{0xff}, 64), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open of a corrupted database: %v", err)
	}
	defer s.Close()
	if !s.Recovered() {
		t.Error("Recovered() = false after opening a corrupted database")
	}
	h, err := s.Get(keyN(1))
	if err != nil {
		t.Fatalf("hint after recovery: %v", err)
	}
	if string(h.Plan) != "plan" {
		t.Errorf("plan after recovery = %q", h.Plan)
	}
}

func TestUnknownSchemaIsCleared(t *testing.T) {
	stor := storage.NewMemStorage()
	s, err := OpenStorage(stor, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(keyN(1), Hint{Plan: []byte("plan"), StoredAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Put(schemaKey, []byte{0, 0, 0, 99}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStorage(stor, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(keyN(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("hint under an unknown schema: %v, want cleared", err)
	}
	if n, _ := s.Stats(); n != 0 {
		t.Errorf("entries = %d, want 0", n)
	}
}

// countHints counts the hint records actually in the database.
func countHints(t *testing.T, s *Store) (n int, bytes int64) {
	t.Helper()
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixHint}), nil)
	defer it.Release()
	for it.Next() {
		n++
		bytes += int64(len(it.Key()) + len(it.Value()))
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return n, bytes
}

// An orphaned time record (one that no longer matches its hint's StoredAt)
// is dropped by eviction without evicting the hint it names or touching
// the counters.
func TestEvictionSkipsOrphanedTimeRecords(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		max  int
		// key 1 is stored at first, key 2 at second; then an orphaned record
		// for key 1 at t0 is written and key 3 is stored as the newest.
		first, second time.Duration
		wantKept      []byte
		wantGone      []byte
	}{
		{name: "orphan of the newest hint", max: 2, first: time.Hour, second: time.Minute,
			wantKept: []byte{1, 3}, wantGone: []byte{2}},
		{name: "orphan and record of one hint in one pass", max: 1, first: 10 * time.Second, second: time.Minute,
			wantKept: []byte{3}, wantGone: []byte{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openMem(t, Options{})
			if err := s.Put(keyN(1), Hint{Plan: []byte("one"), StoredAt: t0.Add(tt.first)}); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(keyN(2), Hint{Plan: []byte("two"), StoredAt: t0.Add(tt.second)}); err != nil {
				t.Fatal(err)
			}
			if err := s.db.Put(timeKey(t0, keyN(1)), nil, nil); err != nil {
				t.Fatal(err)
			}
			s.opts.MaxEntries = tt.max // as a restart with a lower bound would
			if err := s.Put(keyN(3), Hint{Plan: []byte("three"), StoredAt: t0.Add(2 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			for _, k := range tt.wantKept {
				if _, err := s.Get(keyN(k)); err != nil {
					t.Errorf("key %d: %v, want kept", k, err)
				}
			}
			for _, k := range tt.wantGone {
				if _, err := s.Get(keyN(k)); !errors.Is(err, ErrNotFound) {
					t.Errorf("key %d: %v, want evicted", k, err)
				}
			}
			n, b := s.Stats()
			if wn, wb := countHints(t, s); n != wn || b != wb {
				t.Errorf("Stats = %d entries, %d bytes; database holds %d, %d", n, b, wn, wb)
			}
			if _, err := s.db.Get(timeKey(t0, keyN(1)), nil); err == nil {
				t.Error("orphaned time record kept")
			}
		})
	}
}

// A hint too big to store replaces the previous one by deleting it, so a
// stale plan is not served for the key.
func TestOversizedHintDeletesPrevious(t *testing.T) {
	s := openMem(t, Options{MaxBytes: 64})
	if err := s.Put(keyN(1), Hint{Plan: []byte("small"), StoredAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(keyN(1), Hint{Plan: bytes.Repeat([]byte("x"), 100), StoredAt: time.Unix(2, 0)}); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Get(keyN(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get = %+v, %v; want the previous hint deleted", h, err)
	}
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats = %d entries, %d bytes, want 0, 0", n, b)
	}
	if _, err := s.db.Get(timeKey(time.Unix(1, 0), keyN(1)), nil); err == nil {
		t.Error("time record of the deleted hint kept")
	}
}

// TestVersions: a key's version changes with every write of its hint (the
// same StoredAt too), goes with the hint, and matches what Get read, so a
// caller holding a decoded plan can tell it is still current.
func TestVersions(t *testing.T) {
	t0 := time.Unix(1000, 0)
	plan := bytes.Repeat([]byte("x"), 400)
	type step struct {
		put  byte // key to put (0: none)
		size int  // plan bytes; over the bound removes the hint
		// want: per key, whether it has a version after the step and
		// whether the version changed in it.
		present map[byte]bool
		changed map[byte]bool
	}
	tests := []struct {
		name  string
		opts  Options
		steps []step
	}{
		{name: "new hint, replaced at the same time, another key", steps: []step{
			{put: 1, size: 10, present: map[byte]bool{1: true, 2: false}, changed: map[byte]bool{1: true}},
			{put: 1, size: 10, present: map[byte]bool{1: true}, changed: map[byte]bool{1: true}},
			{put: 2, size: 10, present: map[byte]bool{1: true, 2: true}, changed: map[byte]bool{1: false, 2: true}},
		}},
		{name: "oversized replacement removes it", opts: Options{MaxBytes: 200}, steps: []step{
			{put: 1, size: 10, present: map[byte]bool{1: true}, changed: map[byte]bool{1: true}},
			{put: 1, size: 300, present: map[byte]bool{1: false}, changed: map[byte]bool{1: true}},
			{put: 1, size: 10, present: map[byte]bool{1: true}, changed: map[byte]bool{1: true}},
		}},
		{name: "eviction removes it", opts: Options{MaxEntries: 1}, steps: []step{
			{put: 1, size: 10, present: map[byte]bool{1: true}},
			{put: 2, size: 10, present: map[byte]bool{1: false, 2: true}, changed: map[byte]bool{1: true, 2: true}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openMem(t, tt.opts)
			last := map[byte]uint64{}
			for i, st := range tt.steps {
				if err := s.Put(keyN(st.put), Hint{Plan: plan[:st.size], StoredAt: t0}); err != nil {
					t.Fatal(err)
				}
				for k, want := range st.present {
					v, ok := s.Version(keyN(k))
					if ok != want || ok && v == 0 {
						t.Errorf("step %d: Version(%d) = %d, %v, want present %v", i, k, v, ok, want)
					}
					if changed, check := st.changed[k]; check && (v != last[k]) != changed {
						t.Errorf("step %d: key %d version %d after %d, want changed %v", i, k, v, last[k], changed)
					}
					if ok {
						h, err := s.Get(keyN(k))
						if err != nil || h.Version != v {
							t.Errorf("step %d: Get(%d) version %d, %v; Version says %d", i, k, h.Version, err, v)
						}
					}
					last[k] = v
				}
			}
		})
	}
}

func TestVersionsAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Put(keyN(byte(i)), Hint{Plan: []byte("plan"), StoredAt: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen := map[uint64]bool{}
	for i := range 3 {
		v, ok := s.Version(keyN(byte(i)))
		if !ok || v == 0 || seen[v] {
			t.Errorf("Version(%d) after reopen = %d, %v; want a distinct version", i, v, ok)
		}
		seen[v] = true
	}
	if _, ok := s.Version(keyN(7)); ok {
		t.Error("Version of a key never stored is present")
	}
}
