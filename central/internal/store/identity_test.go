package store

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
)

func TestIdentityDigest(t *testing.T) {
	base := BuildIdentity{Namespace: "ns", Target: "t", Profile: "debug", Toolchain: "1.82.0", LockDeps: []string{"a@1", "b@2"}}
	tests := []struct {
		name string
		edit func(*BuildIdentity)
		same bool
	}{
		{"unchanged", func(*BuildIdentity) {}, true},
		{"deps in another order", func(id *BuildIdentity) { id.LockDeps = []string{"b@2", "a@1"} }, true},
		{"a dep bumped", func(id *BuildIdentity) { id.LockDeps = []string{"a@1", "b@3"} }, false},
		{"another namespace", func(id *BuildIdentity) { id.Namespace = "ns2" }, false},
		{"another target", func(id *BuildIdentity) { id.Target = "u" }, false},
		{"another profile", func(id *BuildIdentity) { id.Profile = "release" }, false},
		{"another toolchain", func(id *BuildIdentity) { id.Toolchain = "1.83.0" }, false},
		// Fields are separated: moving text between them changes the digest.
		{"shifted fields", func(id *BuildIdentity) { id.Namespace, id.Target = "ns\nt", "" }, false},
	}
	want := base.Digest()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := base
			id.LockDeps = slices.Clone(base.LockDeps)
			tt.edit(&id)
			if got := id.Digest(); (got == want) != tt.same {
				t.Errorf("digest equal = %v, want %v", got == want, tt.same)
			}
		})
	}
	// Digest must not reorder the caller's slice.
	id := BuildIdentity{LockDeps: []string{"b@2", "a@1"}}
	id.Digest()
	if !slices.Equal(id.LockDeps, []string{"b@2", "a@1"}) {
		t.Errorf("Digest sorted the caller's deps: %v", id.LockDeps)
	}
}

func TestIdentityKeepsLatestBuild(t *testing.T) {
	s := memStore(t, Options{})
	id := (&BuildIdentity{Namespace: "ns", LockDeps: []string{"a@1"}}).Digest()
	build := func(at int64, keys ...int) Observation {
		obs := Observation{AtMs: at, Identity: &IdentityBuild{Digest: id}}
		for i, k := range keys {
			obs.Artifacts = append(obs.Artifacts, Artifact{CacheKey: hexKey(k), CrateName: "c" + string(rune('a'+k)), CompileTimeMs: uint64(10 * k), SizeBytes: uint64(k)})
			obs.Identity.Artifacts = append(obs.Identity.Artifacts, i)
		}
		return obs
	}
	tests := []struct {
		name string
		obs  Observation
		want []string
	}{
		{"first build", build(10, 1, 2), []string{hexKey(1), hexKey(2)}},
		{"newer build replaces it", build(20, 3, 2), []string{hexKey(3), hexKey(2)}},
		// A crawl can ingest an older manifest after a newer one.
		{"older build is ignored", build(15, 4), []string{hexKey(3), hexKey(2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustApply(t, s, tt.obs)
			vs, err := s.Identity(id)
			if err != nil {
				t.Fatal(err)
			}
			if got := variantKeys(vs); !slices.Equal(got, tt.want) {
				t.Fatalf("identity keys %v, want %v", got, tt.want)
			}
		})
	}
	vs, _ := s.Identity(id)
	if v := vs[0]; v.CrateName != "cd" || v.CompileTimeMs != 30 || v.SizeBytes != 3 || v.LastSeenMs != 20 || !v.Built {
		t.Errorf("identity entry %+v", v)
	}
	if vs, err := s.Identity([32]byte{1}); err != nil || vs != nil {
		t.Errorf("unknown identity: %v, %v", vs, err)
	}
	bad := build(30, 5)
	bad.Identity.Artifacts = []int{1}
	if _, err := s.Apply(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("identity naming a missing entry: %v", err)
	}
}

func FuzzDecodeIdentity(f *testing.F) {
	f.Add([]byte{1, 1})
	f.Add(append([]byte{5, 1}, make([]byte, 32)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, vs, err := decodeIdentity(b, nil)
		if err == nil && len(vs) > len(b) {
			t.Fatalf("%d entries from %d bytes", len(vs), len(b))
		}
	})
}

// A schema 1 database (no toolchain in values) opens as schema 2: its
// values read with an unknown toolchain, and new writes carry one.
func TestOpenUpgradesSchema1(t *testing.T) {
	stor := storage.NewMemStorage()
	s, err := OpenStorage(stor, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, Observation{AtMs: 1, Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "serde", CompileTimeMs: 7, Target: "t", Profile: "debug"}},
		DepLinks: []DepLink{{Namespace: "ns", Dep: "serde@1.0.0", Artifact: 0}}})
	// Rewrite every value as schema 1 wrote it: without the trailing
	// lp(toolchain), which is one zero byte for an unknown toolchain.
	for _, prefix := range []byte{prefixArtifact, prefixCrateIndex, prefixDep} {
		it := s.db.NewIterator(util.BytesPrefix([]byte{prefix}), nil)
		for it.Next() {
			v := it.Value()
			if len(v) == 0 || v[len(v)-1] != 0 {
				t.Fatalf("value %x does not end with an empty toolchain", v)
			}
			if err := s.db.Put(slices.Clone(it.Key()), slices.Clone(v[:len(v)-1]), nil); err != nil {
				t.Fatal(err)
			}
		}
		it.Release()
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 1)
	if err := s.db.Put(keySchemaVersion, b[:], nil); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenStorage(stor, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.db.Get(keySchemaVersion, nil); err != nil || binary.BigEndian.Uint32(v) != SchemaVersion {
		t.Fatalf("schema version %x, %v", v, err)
	}
	a, err := s.Artifact(hexKey(1))
	if err != nil || a.CompileTimeMs != 7 || a.Profile != "debug" || a.Toolchain != "" {
		t.Fatalf("schema 1 artifact: %+v, %v", a, err)
	}
	mustApply(t, s, Observation{AtMs: 2, Artifacts: []Artifact{{CacheKey: hexKey(1), CrateName: "serde", Toolchain: "1.82.0"}},
		DepLinks: []DepLink{{Namespace: "ns", Dep: "serde@1.0.0", Artifact: 0}}})
	for name, read := range map[string]func() ([]Variant, error){
		"crate": func() ([]Variant, error) { return s.Variants("serde") },
		"dep":   func() ([]Variant, error) { return s.DepVariants("ns", "serde@1.0.0") },
	} {
		vs, err := read()
		if err != nil || len(vs) != 1 || vs[0].Toolchain != "1.82.0" || vs[0].Target != "t" {
			t.Errorf("%s index after upgrade: %+v, %v", name, vs, err)
		}
	}
}
