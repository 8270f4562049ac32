package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"
)

// build stores one build of keys (crate "c<i>", linked to dep "c<i>@1" in
// namespace "ns") at atMs, as the identity ident.
func build(t testing.TB, s *Store, atMs int64, ident [32]byte, keys ...int) {
	t.Helper()
	obs := Observation{AtMs: atMs, Identity: &IdentityBuild{Digest: ident}}
	for i, k := range keys {
		crate := "c" + string(rune('a'+k%26))
		obs.Artifacts = append(obs.Artifacts, Artifact{CacheKey: hexKey(k), CrateName: crate, CompileTimeMs: 10, SizeBytes: 100})
		obs.DepLinks = append(obs.DepLinks, DepLink{Namespace: "ns", Dep: crate + "@1", Artifact: i})
		obs.Identity.Artifacts = append(obs.Identity.Artifacts, i)
	}
	if _, err := s.Apply(obs); err != nil {
		t.Fatal(err)
	}
}

func crateOf(k int) string { return "c" + string(rune('a'+k%26)) }

// planned returns every key a plan can reach for key k: its crate's
// variants and keys, its dep list, and the identity.
func planned(t testing.TB, s *Store, ident [32]byte, k int) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	vs, err := s.Variants(crateOf(k))
	must(t, err)
	for _, v := range vs {
		out["variants/"+v.CacheKey] = true
	}
	ks, err := s.CrateKeys(crateOf(k), 8)
	must(t, err)
	for _, key := range ks {
		out["keys/"+key] = true
	}
	dv, err := s.DepVariants("ns", crateOf(k)+"@1")
	must(t, err)
	for _, v := range dv {
		out["deps/"+v.CacheKey] = true
	}
	iv, err := s.Identity(ident)
	must(t, err)
	for _, v := range iv {
		out["identity/"+v.CacheKey] = true
	}
	return out
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func reachable(m map[string]bool, key string) []string {
	var where []string
	for _, idx := range []string{"variants", "keys", "deps", "identity"} {
		if m[idx+"/"+key] {
			where = append(where, idx)
		}
	}
	return where
}

// TestDropLeavesEveryIndex: a dropped key is gone from everything a plan
// reads at once, before and after Sweep and across a reopen; the other keys
// stay.
func TestDropLeavesEveryIndex(t *testing.T) {
	stor := storage.NewMemStorage()
	s, err := OpenStorage(stor, Options{})
	must(t, err)
	ident := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"ca@1", "cb@1"}}).Digest()
	build(t, s, 1000, ident, 0, 1, 26) // 0 and 26 are both crate "ca"
	gen := s.Generation()
	// Read through the list cache first, so a stale cached list would show.
	before := planned(t, s, ident, 0)
	if len(reachable(before, hexKey(0))) != 4 {
		t.Fatalf("before the drop: %v", before)
	}
	// What a cached plan read of key 0 and of another crate.
	var readDropped, readOther Reads
	tr := s.Tracked(&readDropped)
	if _, err := tr.Variants(crateOf(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Identity(ident); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tracked(&readOther).Variants(crateOf(1)); err != nil {
		t.Fatal(err)
	}

	n, err := s.Drop([]string{hexKey(0), hexKey(99)}, DropNotFound)
	must(t, err)
	if n != 1 || s.ArtifactCount() != 2 || s.Dropped(DropNotFound) != 1 || s.Generation() == gen || s.PendingDrops() != 1 {
		t.Fatalf("dropped %d, count %d, metric %d, pending %d", n, s.ArtifactCount(), s.Dropped(DropNotFound), s.PendingDrops())
	}
	if _, err := s.Artifact(hexKey(0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("artifact after drop: %v", err)
	}
	// A drop cannot tell which lists named the key: every cached plan is
	// stale.
	if s.Current(&readDropped) || s.Current(&readOther) {
		t.Fatal("a plan read before the drop is still current")
	}
	check := func(stage string, s *Store) {
		t.Helper()
		m := planned(t, s, ident, 0)
		if where := reachable(m, hexKey(0)); len(where) > 0 {
			t.Fatalf("%s: dropped key still in %v", stage, where)
		}
		if where := reachable(m, hexKey(26)); len(where) != 4 {
			t.Fatalf("%s: kept key only in %v", stage, where)
		}
		if where := reachable(planned(t, s, ident, 1), hexKey(1)); len(where) != 4 {
			t.Fatalf("%s: other crate's key only in %v", stage, where)
		}
	}
	check("after drop", s)
	must(t, s.Close())

	s, err = OpenStorage(stor, Options{})
	must(t, err)
	defer s.Close()
	if s.PendingDrops() != 1 || s.ArtifactCount() != 2 {
		t.Fatalf("reopened: pending %d, count %d", s.PendingDrops(), s.ArtifactCount())
	}
	check("reopened", s)
	if at, ok, err := s.ReportedMissing(hexKey(0)); err != nil || !ok || at <= 0 {
		t.Fatalf("reported missing: %d %v %v", at, ok, err)
	}

	res, err := s.Sweep()
	must(t, err)
	if res != (SweepResult{Keys: 1, DepEntries: 1, Identities: 1}) || s.PendingDrops() != 0 {
		t.Fatalf("sweep %+v, pending %d", res, s.PendingDrops())
	}
	check("swept", s)
	if res, err := s.Sweep(); err != nil || res != (SweepResult{}) {
		t.Fatalf("second sweep %+v %v", res, err)
	}
}

// TestRebuiltKeyAfterDrop: a key built again after its drop is planned
// again, through every index, even before the sweep.
func TestRebuiltKeyAfterDrop(t *testing.T) {
	s := memStore(t, Options{})
	now := time.UnixMilli(5000)
	s.forget.now = func() time.Time { return now }
	ident := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"ca@1"}}).Digest()
	build(t, s, 1000, ident, 0, 1)
	if _, err := s.Drop([]string{hexKey(0)}, DropDeleted); err != nil {
		t.Fatal(err)
	}
	build(t, s, 6000, ident, 0, 1)
	for _, stage := range []string{"pending", "swept"} {
		if where := reachable(planned(t, s, ident, 0), hexKey(0)); len(where) != 4 {
			t.Fatalf("%s: rebuilt key only in %v", stage, where)
		}
		if _, err := s.Sweep(); err != nil {
			t.Fatal(err)
		}
	}
}

// listedBuild stores keys as built at atMs and then seen in a listing.
func listedBuild(t testing.TB, s *Store, atMs int64, keys ...int) {
	t.Helper()
	var obs Observation
	for _, k := range keys {
		obs.Artifacts = append(obs.Artifacts, Artifact{CacheKey: hexKey(k), CrateName: "serde", SeenAtMs: atMs})
	}
	_, err := s.Apply(obs)
	must(t, err)
	for i := range obs.Artifacts {
		obs.Artifacts[i].ListedOnly, obs.Artifacts[i].Listed = true, true
	}
	_, err = s.Apply(obs)
	must(t, err)
}

func TestUnlistedOnlyKeysListedBefore(t *testing.T) {
	s := memStore(t, Options{})
	listedBuild(t, s, 1000, 0, 1, 2)
	if _, err := s.Apply(Observation{AtMs: 1000, Artifacts: []Artifact{{CacheKey: hexKey(3), CrateName: "serde"}}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Artifact(hexKey(0)); !v.Listed || !v.Built {
		t.Fatalf("listed build: %+v", v)
	}
	got, err := s.Unlisted("serde", []string{hexKey(1)})
	must(t, err)
	// Key 3 was built but no listing ever had it: a wrong prefix or a
	// listing racing its upload must not drop it.
	if want := []string{hexKey(0), hexKey(2)}; !slices.Equal(got, want) {
		t.Fatalf("unlisted %v, want %v", got, want)
	}
	if got, _ := s.Unlisted("tokio", nil); len(got) != 0 {
		t.Fatalf("unknown crate: %v", got)
	}
	var crates []string
	must(t, s.Crates(func(c string) error { crates = append(crates, c); return nil }))
	if !slices.Equal(crates, []string{"serde"}) {
		t.Fatalf("crates %v", crates)
	}
}

// TestApplyListingTwoStrikes: a key leaves after two complete listings in
// a row without it; one listed again in between is cleared.
func TestApplyListingTwoStrikes(t *testing.T) {
	s := memStore(t, Options{})
	listedBuild(t, s, 1000, 0, 1, 2)
	steps := []struct {
		name    string
		missing []string
		partial bool
		want    ListingResult
		present []int
	}{
		{"first miss", []string{hexKey(0), hexKey(1)}, false, ListingResult{Marked: 2}, []int{0, 1, 2}},
		{"1 back, a partial listing keeps 0's mark", []string{hexKey(2)}, true, ListingResult{Marked: 1}, []int{0, 1, 2}},
		{"second miss of 0 and 2", []string{hexKey(0), hexKey(2)}, false, ListingResult{Dropped: 2, Marked: 0, Cleared: 1}, []int{1}},
		{"all listed", nil, false, ListingResult{}, []int{1}},
	}
	for i, st := range steps {
		res, err := s.ApplyListing(int64(2000+i), st.missing, st.partial)
		must(t, err)
		if res != st.want {
			t.Fatalf("%s: %+v, want %+v", st.name, res, st.want)
		}
		keys, _ := s.CrateKeys("serde", 0)
		var want []string
		for _, k := range st.present {
			want = append(want, hexKey(k))
		}
		if !slices.Equal(keys, want) {
			t.Fatalf("%s: keys %v, want %v", st.name, keys, want)
		}
	}
	if s.Dropped(DropDeleted) != 2 {
		t.Fatalf("dropped metric %d", s.Dropped(DropDeleted))
	}
	if l, _ := s.listingMs(); l != 2003 {
		t.Fatalf("listing time %d", l)
	}
}

func TestExpire(t *testing.T) {
	const day = int64(24 * time.Hour / time.Millisecond)
	s := memStore(t, Options{})
	s.forget.now = func() time.Time { return time.UnixMilli(40 * day) }
	oldID := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"old@1"}}).Digest()
	newID := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"new@1"}}).Digest()
	build(t, s, 1*day, oldID, 0)                 // built long ago, never listed
	build(t, s, 39*day+day/2, newID, 1)          // built recently
	listedBuild(t, s, 2*day, 2, 3)               // built long ago, still in the bucket
	_, err := s.ApplyListing(39*day, nil, false) // a listing after the cutoff had 2 and 3
	must(t, err)
	_, err = s.ApplyListing(39*day, []string{hexKey(3)}, false) // ... but the last one missed 3
	must(t, err)
	if vs, _ := s.Identity(oldID); len(vs) != 1 { // cached now
		t.Fatalf("old identity before: %v", vs)
	}

	res, err := s.Expire(10 * day)
	must(t, err)
	if res.Keys != 2 || res.Identities != 1 || s.Dropped(DropExpired) != 2 {
		t.Fatalf("expire %+v, metric %d", res, s.Dropped(DropExpired))
	}
	for k, want := range map[int]bool{0: false, 1: true, 2: true, 3: false} {
		if _, err := s.Artifact(hexKey(k)); (err == nil) != want {
			t.Errorf("key %d: kept=%v, want %v", k, err == nil, want)
		}
	}
	if vs, _ := s.Identity(oldID); len(vs) != 0 {
		t.Fatalf("old identity: %v", vs)
	}
	if vs, _ := s.Identity(newID); len(vs) != 1 {
		t.Fatalf("new identity: %v", vs)
	}
	// An old identity of kept keys goes too, cached or not.
	staleID := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"stale@1"}}).Digest()
	must(t, func() error {
		_, err := s.Apply(Observation{AtMs: 2 * day, Artifacts: []Artifact{{CacheKey: hexKey(2), CrateName: "serde"}},
			Identity: &IdentityBuild{Digest: staleID, Artifacts: []int{0}}})
		return err
	}())
	if vs, _ := s.Identity(staleID); len(vs) != 1 {
		t.Fatalf("stale identity before: %v", vs)
	}
	if res, err := s.Expire(10 * day); err != nil || res.Keys != 0 || res.Identities != 1 {
		t.Fatalf("expire stale identity: %+v %v", res, err)
	}
	if vs, _ := s.Identity(staleID); len(vs) != 0 {
		t.Fatalf("stale identity after: %v", vs)
	}

	// Without a listing since the cutoff, listed keys age like the rest.
	res, err = s.Expire(39*day + 1)
	must(t, err)
	if res.Keys != 1 {
		t.Fatalf("stale listing: %+v", res)
	}
	if _, err := s.Artifact(hexKey(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key 2: %v", err)
	}

	// Tombstones go once swept, but a reported 404's only once older than
	// the cutoff.
	if _, err := s.Drop([]string{hexKey(1)}, DropNotFound); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	res, err = s.Expire(40 * day)
	must(t, err)
	if _, ok, _ := s.ReportedMissing(hexKey(1)); res.Tombstones != 0 || !ok {
		t.Fatalf("tombstones: %+v, 404 remembered %v", res, ok)
	}
	res, err = s.Expire(41 * day)
	must(t, err)
	if _, ok, _ := s.ReportedMissing(hexKey(1)); res.Tombstones != 1 || ok {
		t.Fatalf("tombstones: %+v, 404 remembered %v", res, ok)
	}
	n := 0
	must(t, s.scan(prefixTombstone, func(_, _ []byte) error { n++; return nil }))
	if n != 0 {
		t.Fatalf("%d tombstones left", n)
	}
}

func TestReportedMissingOnlyFor404(t *testing.T) {
	s := memStore(t, Options{})
	listedBuild(t, s, 1000, 0, 1)
	if _, ok, _ := s.ReportedMissing(hexKey(0)); ok {
		t.Fatal("not dropped yet")
	}
	if _, err := s.Drop([]string{hexKey(0)}, DropExpired); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Drop([]string{hexKey(1)}, DropNotFound); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.ReportedMissing(hexKey(0)); ok {
		t.Fatal("an expired key is not a reported 404")
	}
	if _, ok, _ := s.ReportedMissing(hexKey(1)); !ok {
		t.Fatal("reported 404 not remembered")
	}
}

func TestIdentityWithout(t *testing.T) {
	s := memStore(t, Options{})
	ident := (&BuildIdentity{Namespace: "ns"}).Digest()
	build(t, s, 1000, ident, 0, 1, 2, 3)
	v, err := s.get(identityKey(ident))
	must(t, err)
	for _, tc := range []struct {
		name string
		gone []int
		want []int
	}{
		{"none", nil, []int{0, 1, 2, 3}},
		{"first", []int{0}, []int{1, 2, 3}},
		{"middle", []int{1, 2}, []int{0, 3}},
		{"last", []int{3}, []int{0, 1, 2}},
		{"all", []int{0, 1, 2, 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, left, removed, err := identityWithout(v, func(k rawKey, at int64) bool {
				return at == 1000 && slices.ContainsFunc(tc.gone, func(i int) bool { return k.String() == hexKey(i) })
			})
			must(t, err)
			if removed != len(tc.gone) || left != len(tc.want) {
				t.Fatalf("left %d removed %d", left, removed)
			}
			if removed == 0 {
				return
			}
			at, vs, err := decodeIdentity(out, nil)
			must(t, err)
			var got []int
			for _, x := range vs {
				for i := range 4 {
					if x.CacheKey == hexKey(i) {
						got = append(got, i)
					}
				}
			}
			if at != 1000 || !slices.Equal(got, tc.want) {
				t.Fatalf("at %d keys %v, want %v", at, got, tc.want)
			}
		})
	}
}

// TestCompactFreesSpace: expiring most of a database and compacting gives
// the disk space back.
func TestCompactFreesSpace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s, err := Open(dir, Options{NoSync: true})
	must(t, err)
	defer s.Close()
	for b := range 60 {
		ident := (&BuildIdentity{Namespace: "ns", LockDeps: []string{string(rune('a' + b%26))}}).Digest()
		keys := make([]int, 100)
		for i := range keys {
			keys[i] = b*100 + i
		}
		build(t, s, int64(1000+b), ident, keys...)
	}
	must(t, s.Compact())
	full, err := s.TableBytes()
	must(t, err)
	if _, err := s.Expire(1000 + 54); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if s.DeletesSinceCompaction() == 0 {
		t.Fatal("no deletes counted")
	}
	before, err := s.TableBytes()
	must(t, err)
	must(t, s.Compact())
	after, err := s.TableBytes()
	must(t, err)
	t.Logf("tables: %d KiB with 6000 keys, %d KiB after deleting 5400 and before compacting, %d KiB after", full>>10, before>>10, after>>10)
	if after > full/5 || s.DeletesSinceCompaction() != 0 {
		t.Fatalf("tables of %d bytes after expiring 90%%, was %d", after, full)
	}
	// goleveldb deletes the tables a compaction replaced once nothing
	// reads them any more, a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for dirBytes(t, dir) > 2*after+(64<<10) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := dirBytes(t, dir); n > 2*after+(64<<10) {
		t.Fatalf("directory of %d bytes, tables of %d", n, after)
	}
}

func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	entries, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !fi.IsDir() { // err: deleted meanwhile
			n += fi.Size()
		}
	}
	return n
}
