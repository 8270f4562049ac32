package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/storage"
)

func hexKey(i int) string {
	return fmt.Sprintf("%064x", i+1)
}

func memStore(t *testing.T, o Options) *Store {
	t.Helper()
	s, err := OpenStorage(storage.NewMemStorage(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func variantKeys(vs []Variant) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.CacheKey
	}
	return out
}

func TestApplyKeepsNewestVariantsFirst(t *testing.T) {
	s := memStore(t, Options{VariantsPerCrate: 3})
	for i := range 5 {
		res, err := s.Apply(Observation{AtMs: int64(1000 + i), Artifacts: []Artifact{{CacheKey: hexKey(i), CrateName: "serde", CompileTimeMs: uint64(10 * i), SizeBytes: 100}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.New != 1 || res.Stored != 1 {
			t.Fatalf("result %+v", res)
		}
	}
	vs, err := s.Variants("serde")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := variantKeys(vs), []string{hexKey(4), hexKey(3), hexKey(2)}; !slices.Equal(got, want) {
		t.Fatalf("variants %v, want %v", got, want)
	}
	if vs[0].CompileTimeMs != 40 || vs[0].SizeBytes != 100 || !vs[0].Built || vs[0].Seen != 1 {
		t.Fatalf("metadata lost: %+v", vs[0])
	}
	// Seeing an old key again makes it the newest.
	if _, err := s.Apply(Observation{AtMs: 2000, Artifacts: []Artifact{{CacheKey: hexKey(0), CrateName: "serde"}}}); err != nil {
		t.Fatal(err)
	}
	vs, _ = s.Variants("serde")
	if vs[0].CacheKey != hexKey(0) || vs[0].Seen != 2 || vs[0].LastSeenMs != 2000 {
		t.Fatalf("re-seen key: %+v", vs[0])
	}
	if a, _ := s.Artifact(hexKey(0)); a.FirstSeenMs != 1000 {
		t.Fatalf("first seen %d", a.FirstSeenMs)
	}
	if vs[0].CompileTimeMs != 0 {
		// The first observation said 0 (unknown); nothing better arrived.
		t.Fatalf("cost %d", vs[0].CompileTimeMs)
	}
	if s.ArtifactCount() != 5 {
		t.Fatalf("count %d", s.ArtifactCount())
	}
	keys, err := s.CrateKeys("serde", 0)
	if err != nil || len(keys) != 5 {
		t.Fatalf("crate keys %v %v", keys, err)
	}
	if keys, _ := s.CrateKeys("serde", 2); len(keys) != 2 {
		t.Fatalf("limit ignored: %v", keys)
	}
}

func TestOlderObservationDoesNotOverrideNewerCost(t *testing.T) {
	s := memStore(t, Options{})
	k := hexKey(1)
	mustApply(t, s, Observation{AtMs: 2000, Artifacts: []Artifact{{CacheKey: k, CrateName: "a", CompileTimeMs: 200, SizeBytes: 20}}})
	mustApply(t, s, Observation{AtMs: 1000, Artifacts: []Artifact{{CacheKey: k, CrateName: "a", CompileTimeMs: 100, SizeBytes: 10}}})
	v, err := s.Artifact(k)
	if err != nil {
		t.Fatal(err)
	}
	if v.CompileTimeMs != 200 || v.SizeBytes != 20 || v.FirstSeenMs != 1000 || v.LastSeenMs != 2000 {
		t.Fatalf("%+v", v)
	}
}

func mustApply(t *testing.T, s *Store, obs Observation) ApplyResult {
	t.Helper()
	r, err := s.Apply(obs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestApplyIsAtomic(t *testing.T) {
	s := memStore(t, Options{})
	_, err := s.Apply(Observation{Artifacts: []Artifact{
		{CacheKey: hexKey(1), CrateName: "good"},
		{CacheKey: "not-a-key", CrateName: "bad"},
	}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if vs, _ := s.Variants("good"); len(vs) != 0 {
		t.Fatalf("partial write: %v", vs)
	}
	if _, err := s.Artifact(hexKey(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("artifact err = %v", err)
	}
	if s.ArtifactCount() != 0 {
		t.Fatal("count moved")
	}
}

func TestListedOnlyStaysOutOfHistory(t *testing.T) {
	s := memStore(t, Options{})
	mustApply(t, s, Observation{Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "tokio", ListedOnly: true}}})
	if vs, _ := s.Variants("tokio"); len(vs) != 0 {
		t.Fatalf("listed key in history: %v", vs)
	}
	if keys, _ := s.CrateKeys("tokio", 0); !slices.Equal(keys, []string{hexKey(1)}) {
		t.Fatalf("keys %v", keys)
	}
	mustApply(t, s, Observation{Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "tokio"}}})
	if vs, _ := s.Variants("tokio"); len(vs) != 1 || !vs[0].Built {
		t.Fatalf("built key missing from history: %v", vs)
	}
}

func TestDepLinks(t *testing.T) {
	s := memStore(t, Options{KeysPerDep: 2})
	for i := range 3 {
		mustApply(t, s, Observation{AtMs: int64(i + 1), Artifacts: []Artifact{{CacheKey: hexKey(i), CrateName: "serde"}},
			DepLinks: []DepLink{{Namespace: "ns", Dep: "serde@1.0.0", Artifact: 0}}})
	}
	vs, err := s.DepVariants("ns", "serde@1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if got := variantKeys(vs); !slices.Equal(got, []string{hexKey(2), hexKey(1)}) {
		t.Fatalf("dep variants %v", got)
	}
	if vs, _ := s.DepVariants("other", "serde@1.0.0"); len(vs) != 0 {
		t.Fatal("namespaces leak")
	}
	if _, err := s.Apply(Observation{Artifacts: []Artifact{{CacheKey: hexKey(9), CrateName: "x"}}, DepLinks: []DepLink{{Dep: "x@1", Artifact: 3}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("dangling link: %v", err)
	}
}

func TestConflictingCrateNameKeepsFirst(t *testing.T) {
	s := memStore(t, Options{})
	mustApply(t, s, Observation{Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "a"}}})
	mustApply(t, s, Observation{Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "b"}}})
	if vs, _ := s.Variants("b"); len(vs) != 0 {
		t.Fatalf("key split across crates: %v", vs)
	}
}

func TestTimelineOutcomes(t *testing.T) {
	s := memStore(t, Options{})
	obs := Observation{Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "a"}}}
	steps := []struct {
		units int
		body  string
		want  TimelineOutcome
	}{
		{2, "first", TimelineInserted},
		{1, "fewer", TimelineKept},
		{2, "same", TimelineReplaced},
		{5, "more", TimelineReplaced},
	}
	for _, st := range steps {
		got, err := s.PutTimeline("rec-1", st.units, []byte(st.body), obs)
		if err != nil {
			t.Fatal(err)
		}
		if got != st.want {
			t.Fatalf("%s: %s, want %s", st.body, got, st.want)
		}
	}
	units, body, err := s.Timeline("rec-1")
	if err != nil || units != 5 || string(body) != "more" {
		t.Fatalf("stored %d %q %v", units, body, err)
	}
	if _, err := s.PutTimeline(strings.Repeat("x", 300), 1, nil, Observation{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("long id: %v", err)
	}
}

func TestReopenKeepsStateAndSeedMarker(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, Observation{SeedDigest: "abc", Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "a"}, {CacheKey: hexKey(2), CrateName: "a"}}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ArtifactCount() != 2 {
		t.Fatalf("count %d after reopen", s.ArtifactCount())
	}
	if ok, err := s.SeedImported("abc"); !ok || err != nil {
		t.Fatalf("seed marker %v %v", ok, err)
	}
	if ok, _ := s.SeedImported("other"); ok {
		t.Fatal("unknown seed reported imported")
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	stor := storage.NewMemStorage()
	s, err := OpenStorage(stor, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], SchemaVersion+1)
	if err := s.db.Put(keySchemaVersion, b[:], nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenStorage(stor, Options{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("err = %v, want ErrSchema", err)
	}
}

// A database whose manifest was lost is recovered from its tables on open.
func TestOpenRecoversCorruption(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		mustApply(t, s, Observation{Artifacts: []Artifact{{CacheKey: hexKey(i), CrateName: "c" + fmt.Sprint(i%7), CompileTimeMs: 5}}})
	}
	if err := s.db.CompactRange(utilRangeAll()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	manifests, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no manifest file")
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, []byte("garbage that is not a manifest"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("open corrupted: %v", err)
	}
	defer s.Close()
	if !s.Recovered() {
		t.Fatal("Recovered() = false")
	}
	if v, err := s.Artifact(hexKey(1999)); err != nil || v.CrateName != "c"+fmt.Sprint(1999%7) {
		t.Fatalf("artifact after recovery: %+v %v", v, err)
	}
}

// Lists read back from the database equal the lists the cache served.
func TestCachedAndStoredListsAgree(t *testing.T) {
	stor := storage.NewMemStorage()
	s, err := OpenStorage(stor, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustApply(t, s, Observation{AtMs: int64(10 + i), Artifacts: []Artifact{{CacheKey: hexKey(i), CrateName: "a", Target: "t", Profile: []string{"debug", "release"}[i%2], CompileTimeMs: 9}},
			DepLinks: []DepLink{{Namespace: "n", Dep: "a@1", Artifact: 0}}})
	}
	cached, _ := s.Variants("a")
	cachedDep, _ := s.DepVariants("n", "a@1")
	s.Close()
	s, err = OpenStorage(stor, Options{ListCacheMB: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stored, _ := s.Variants("a")
	storedDep, _ := s.DepVariants("n", "a@1")
	if !slices.Equal(cached, stored) || !slices.Equal(cachedDep, storedDep) {
		t.Fatalf("cache and database differ:\n%+v\n%+v", cached, stored)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	vs := []Variant{
		{CacheKey: hexKey(1), CrateName: "serde", CompileTimeMs: 1 << 40, SizeBytes: 3, Seen: 7, Target: "x86_64-unknown-linux-gnu", Profile: "release", Toolchain: "1.82.0", Built: true},
		{CacheKey: hexKey(2), CrateName: "a"},
	}
	for _, v := range vs {
		for _, withCrate := range []bool{false, true} {
			got := Variant{CacheKey: v.CacheKey}
			if !withCrate {
				got.CrateName = v.CrateName
			}
			if err := decodeEntry(encodeEntry(&v, withCrate), &got, withCrate, nil); err != nil || got != v {
				t.Fatalf("entry round trip (crate %v): %+v %v", withCrate, got, err)
			}
		}
		k, _ := parseCacheKey(v.CacheKey)
		r := record{Variant: v, builtAtMs: 42}
		r.FirstSeenMs, r.LastSeenMs = 5, 6
		got, err := decodeArtifact(k, encodeArtifact(&r))
		if err != nil || got != r {
			t.Fatalf("artifact round trip: %+v %v", got, err)
		}
	}
	at, k, ok := parseRecent(appendRecent([]byte{prefixCrateIndex, 1, 'a'}, 1234, rawKey{7}))
	if !ok || at != 1234 || k != (rawKey{7}) {
		t.Fatalf("recent key: %d %v %v", at, k, ok)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(&Variant{CrateName: "serde", Target: "t", CompileTimeMs: 9}, true))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var v Variant
		if err := decodeEntry(b, &v, true, nil); err != nil {
			return
		}
		var again Variant
		if err := decodeEntry(encodeEntry(&v, true), &again, true, nil); err != nil || again != v {
			t.Fatalf("re-encoding changed the entry: %+v %+v %v", v, again, err)
		}
	})
}

func FuzzKeyCodecs(f *testing.F) {
	f.Add("ns", "serde@1.0.0")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, ns, dep string) {
		k, err := depIndexPrefix(ns, dep)
		if len(ns) > 255 || len(dep) > 255 {
			if err == nil {
				t.Fatal("over-long string accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		gotNS, rest, err := readLP(k[1:])
		if err != nil {
			t.Fatal(err)
		}
		gotDep, rest, err := readLP(rest)
		if err != nil || gotNS != ns || gotDep != dep || len(rest) != 0 {
			t.Fatalf("round trip (%q, %q) -> (%q, %q) rest %d err %v", ns, dep, gotNS, gotDep, len(rest), err)
		}
	})
}

// The key filter must never hide a known key: every re-seen key is merged,
// also after reopening (filter rebuilt) and after the filter grows.
func TestKeyFilterNeverHidesKnownKeys(t *testing.T) {
	stor := storage.NewMemStorage()
	s, err := OpenStorage(stor, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10_000 // over the initial capacity (4096), so the filter grows
	obs := Observation{AtMs: 1}
	for i := range n {
		obs.Artifacts = append(obs.Artifacts, Artifact{CacheKey: hexKey(i), CrateName: "c"})
	}
	if r := mustApply(t, s, obs); r.New != n {
		t.Fatalf("new %d", r.New)
	}
	obs.AtMs = 2
	if r := mustApply(t, s, obs); r.New != 0 {
		t.Fatalf("re-seen keys counted as new: %d", r.New)
	}
	s.Close()
	s, err = OpenStorage(stor, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	obs.AtMs = 3
	if r := mustApply(t, s, obs); r.New != 0 {
		t.Fatalf("after reopen: %d new", r.New)
	}
	if a, _ := s.Artifact(hexKey(n - 1)); a.Seen != 3 {
		t.Fatalf("seen %d", a.Seen)
	}
}
