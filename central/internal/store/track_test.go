package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// dump is every key and value of the database, for comparing two stores.
func dump(t *testing.T, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	it := s.db.NewIterator(&util.Range{}, nil)
	defer it.Release()
	for it.Next() {
		out[string(it.Key())] = string(it.Value())
	}
	must(t, it.Error())
	return out
}

// groupObs is build b of a history in which builds share keys, crates, deps
// and identities, so that observations of one group touch the same records.
func groupObs(b int) Observation {
	id := (&BuildIdentity{Namespace: "ns", LockDeps: []string{fmt.Sprint(b % 3)}}).Digest()
	obs := Observation{AtMs: int64(1000 + (b*7)%20), Identity: &IdentityBuild{Digest: id}}
	for i := range 6 {
		k := (b + i) % 9
		obs.Artifacts = append(obs.Artifacts, Artifact{CacheKey: hexKey(k), CrateName: crateOf(k), CompileTimeMs: uint64(b + 1), SizeBytes: 10, Target: "t"})
		obs.DepLinks = append(obs.DepLinks, DepLink{Namespace: "ns", Dep: fmt.Sprintf("%s@%d", crateOf(k), b%2), Artifact: i})
		obs.Identity.Artifacts = append(obs.Identity.Artifacts, i)
	}
	return obs
}

// Observations written as one group leave the database exactly as written
// one by one, and each gets its own result.
func TestGroupEqualsSequential(t *testing.T) {
	const n = 24
	seq := memStore(t, Options{NoSync: true})
	var want []ApplyResult
	for b := range n {
		want = append(want, mustApply(t, seq, groupObs(b)))
	}
	grp := memStore(t, Options{NoSync: true})
	grp.writeMu.Lock() // queue them all, then let one Apply lead
	results := make([]ApplyResult, n)
	var wg sync.WaitGroup
	for b := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := grp.Apply(groupObs(b))
			if err != nil {
				t.Error(err)
			}
			results[b] = r
		}()
		// Queued in build order, so the group applies them in that order.
		for queued(grp) != b+1 {
		}
	}
	grp.writeMu.Unlock()
	wg.Wait()
	if !slices.Equal(results, want) {
		t.Errorf("results %v, one by one %v", results, want)
	}
	got, exp := dump(t, grp), dump(t, seq)
	for k, v := range exp {
		if got[k] != v {
			t.Errorf("key %x: %x, one by one %x", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := exp[k]; !ok {
			t.Errorf("extra key %x", k)
		}
	}
	for _, read := range []func(*Store) ([]Variant, error){
		func(s *Store) ([]Variant, error) { return s.Variants(crateOf(1)) },
		func(s *Store) ([]Variant, error) { return s.DepVariants("ns", crateOf(1)+"@1") },
	} {
		a, _ := read(grp)
		b, _ := read(seq)
		if !slices.Equal(a, b) {
			t.Errorf("cached lists differ: %v, %v", a, b)
		}
	}
}

func queued(s *Store) int {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	return len(s.queue)
}

// An invalid observation fails alone; the rest of its group is written.
func TestGroupInvalidFailsAlone(t *testing.T) {
	s := memStore(t, Options{NoSync: true})
	s.writeMu.Lock()
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		obs := Observation{AtMs: 5, Artifacts: []Artifact{{CacheKey: hexKey(i), CrateName: "a"}}}
		if i == 1 {
			obs.Artifacts = append(obs.Artifacts, Artifact{CacheKey: "bad", CrateName: "a"})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Apply(obs)
		}()
		for queued(s) != i+1 {
		}
	}
	s.writeMu.Unlock()
	wg.Wait()
	if errs[0] != nil || !errors.Is(errs[1], ErrInvalid) || errs[2] != nil {
		t.Fatalf("errors %v", errs)
	}
	for i, want := range []bool{true, false, true} {
		if _, err := s.Artifact(hexKey(i)); (err == nil) != want {
			t.Errorf("key %d stored %v, want %v", i, err == nil, want)
		}
	}
}

// A plan's reads stay current while others' lists change and stop being
// current when one of its own does.
func TestTrackedReads(t *testing.T) {
	obs := func(at int64, key int, crate, dep string) Observation {
		return Observation{AtMs: at, Artifacts: []Artifact{{CacheKey: hexKey(key), CrateName: crate}},
			DepLinks: []DepLink{{Namespace: "ns", Dep: dep, Artifact: 0}}}
	}
	tests := []struct {
		name    string
		write   func(t *testing.T, s *Store, id [32]byte)
		current bool
	}{
		{"nothing written", func(*testing.T, *Store, [32]byte) {}, true},
		{"another crate and dep", func(t *testing.T, s *Store, _ [32]byte) { mustApply(t, s, obs(20, 50, "other", "other@1")) }, true},
		{"a dep it read", func(t *testing.T, s *Store, _ [32]byte) { mustApply(t, s, obs(20, 51, "other", "a@1")) }, false},
		{"a crate it read", func(t *testing.T, s *Store, _ [32]byte) { mustApply(t, s, obs(20, 52, "b", "other@1")) }, false},
		{"a new key of a crate whose keys it read", func(t *testing.T, s *Store, _ [32]byte) {
			mustApply(t, s, Observation{AtMs: 20, Artifacts: []Artifact{{CacheKey: hexKey(53), CrateName: "c", ListedOnly: true}}})
		}, false},
		{"the identity it read", func(t *testing.T, s *Store, id [32]byte) {
			mustApply(t, s, Observation{AtMs: 20, Artifacts: []Artifact{{CacheKey: hexKey(54), CrateName: "other"}}, Identity: &IdentityBuild{Digest: id, Artifacts: []int{0}}})
		}, false},
		{"a drop", func(t *testing.T, s *Store, _ [32]byte) {
			if _, err := s.Drop([]string{hexKey(50)}, DropDeleted); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := memStore(t, Options{NoSync: true})
			mustApply(t, s, obs(10, 1, "a", "a@1"))
			mustApply(t, s, obs(10, 2, "b", "b@1"))
			mustApply(t, s, obs(10, 50, "other", "other@1"))
			mustApply(t, s, Observation{AtMs: 10, Artifacts: []Artifact{{CacheKey: hexKey(3), CrateName: "c", ListedOnly: true}}})
			id := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"a@1"}}).Digest()
			var r Reads
			rd := s.Tracked(&r)
			for _, read := range []func() error{
				func() error { _, err := rd.DepVariants("ns", "a@1"); return err },
				func() error { _, err := rd.Variants("b"); return err },
				func() error { _, err := rd.CrateKeys("c", 4); return err },
				func() error { _, err := rd.Identity(id); return err },
			} {
				must(t, read())
			}
			if r.untracked || len(r.lists) != 4 {
				t.Fatalf("recorded %d lists, untracked %v", len(r.lists), r.untracked)
			}
			tt.write(t, s, id)
			if got := s.Current(&r); got != tt.current {
				t.Fatalf("current %v, want %v", got, tt.current)
			}
		})
	}
}

// Reads served after a write see it, through the cache or not.
func TestCacheSeesWrites(t *testing.T) {
	s := memStore(t, Options{NoSync: true})
	id := (&BuildIdentity{Namespace: "ns"}).Digest()
	if vs, err := s.Identity(id); err != nil || vs != nil {
		t.Fatalf("unknown identity: %v %v", vs, err)
	}
	if keys, _ := s.CrateKeys("c", 2); len(keys) != 0 {
		t.Fatalf("keys %v", keys)
	}
	mustApply(t, s, Observation{AtMs: 5, Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "c"}}, Identity: &IdentityBuild{Digest: id, Artifacts: []int{0}}})
	if vs, _ := s.Identity(id); len(vs) != 1 || vs[0].CacheKey != hexKey(1) || vs[0].LastSeenMs != 5 {
		t.Fatalf("identity after write: %+v", vs)
	}
	if keys, _ := s.CrateKeys("c", 2); !slices.Equal(keys, []string{hexKey(1)}) {
		t.Fatalf("keys after write: %v", keys)
	}
}

// A fill of a list read before a writer changed it is refused; other lists
// still fill meanwhile.
func TestFillAfterWriteRefused(t *testing.T) {
	c := newListCache(1 << 20)
	_, _, before := c.get([]byte("k"))
	_, _, other := c.get([]byte("other"))
	c.settle("k", []Variant{{CacheKey: "new"}})
	if c.fill("k", []Variant{{CacheKey: "old"}}, before) != 0 {
		t.Fatal("stale fill accepted")
	}
	if e, ok, _ := c.get([]byte("k")); !ok || e.vs[0].CacheKey != "new" {
		t.Fatalf("cached %+v", e)
	}
	if c.stripe("k") != c.stripe("other") && c.fill("other", []Variant{{CacheKey: "x"}}, other) == 0 {
		t.Fatal("fill of an untouched list refused")
	}
}

func TestTrackedUntracked(t *testing.T) {
	s, err := OpenStorage(storage.NewMemStorage(), Options{NoSync: true, ListCacheMB: -1})
	must(t, err)
	defer s.Close()
	mustApply(t, s, Observation{AtMs: 1, Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "a"}}})
	var r Reads
	if _, err := s.Tracked(&r).Variants("a"); err != nil {
		t.Fatal(err)
	}
	if !r.untracked || !s.Current(&r) {
		t.Fatalf("untracked %v", r.untracked)
	}
	mustApply(t, s, Observation{AtMs: 2, Artifacts: []Artifact{{CacheKey: hexKey(2), CrateName: "z"}}})
	if s.Current(&r) {
		t.Fatal("an untracked read stayed current after a write")
	}
}
