package ingest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func key(i int) string { return fmt.Sprintf("%064x", i) }

var now = time.UnixMilli(1_800_000_000_000)

func TestManifestLinksLockDepsByCrateName(t *testing.T) {
	ns := "ci"
	m := &wire.BuildManifest{
		Created:   "2026-01-01T00:00:00.123456789+00:00",
		Namespace: &ns,
		Target:    "x86_64-unknown-linux-gnu",
		Profile:   "debug",
		Entries: []wire.ManifestEntry{
			{CacheKey: key(1), CrateName: "proc_macro2", CompileTimeMs: 10, ArtifactSize: 20},
			{CacheKey: key(2), CrateName: "syn", CompileTimeMs: 30, ArtifactSize: 40},
			{CacheKey: key(3), CrateName: "syn", CompileTimeMs: 50, ArtifactSize: 60},
		},
		CargoLockDeps: []wire.LockDep{{Name: "proc-macro2", Version: "1.0.86"}, {Name: "syn", Version: "1.0.109"}, {Name: "syn", Version: "2.0.0"}, {Name: "serde", Version: "1.0.0"}},
	}
	obs, err := Manifest(m, now)
	if err != nil {
		t.Fatal(err)
	}
	if obs.AtMs != time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC).UnixMilli() {
		t.Fatalf("created time not used: %d", obs.AtMs)
	}
	got := map[string][]int{}
	for _, l := range obs.DepLinks {
		if l.Namespace != "ci" {
			t.Fatalf("namespace %q", l.Namespace)
		}
		got[l.Dep] = append(got[l.Dep], l.Artifact)
	}
	want := map[string][]int{"proc-macro2@1.0.86": {0}, "syn@1.0.109": {1, 2}, "syn@2.0.0": {1, 2}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("links %v, want %v", got, want)
	}
	if a := obs.Artifacts[2]; a.Target != m.Target || a.Profile != "debug" || a.CompileTimeMs != 50 || a.SizeBytes != 60 {
		t.Fatalf("artifact %+v", a)
	}
	if obs, _ := Manifest(&wire.BuildManifest{Created: "yesterday"}, now); obs.AtMs != now.UnixMilli() {
		t.Fatal("unparseable created time should mean now")
	}
}

func TestManifestIdentity(t *testing.T) {
	ns := "ci"
	entries := []wire.ManifestEntry{{CacheKey: key(1), CrateName: "serde"}, {CacheKey: key(2), CrateName: "app"}}
	deps := []wire.LockDep{{Name: "serde", Version: "1.0.0"}, {Name: "app", Version: "0.1.0"}}
	want := (&store.BuildIdentity{Namespace: ns, Target: "t", Profile: "debug", Toolchain: "1.82.0", LockDeps: []string{"app@0.1.0", "serde@1.0.0"}}).Digest()
	tests := []struct {
		name string
		m    wire.BuildManifest
		// want nil: no identity without a namespace or lock deps, since
		// it would mix every job of the repository.
		want *[32]byte
	}{
		{"namespaced with lock", wire.BuildManifest{Namespace: &ns, CargoLockDeps: deps, Target: "t", Profile: "debug", Toolchain: "1.82.0", Entries: entries}, &want},
		{"no namespace", wire.BuildManifest{CargoLockDeps: deps, Target: "t", Profile: "debug", Toolchain: "1.82.0", Entries: entries}, nil},
		{"no lock deps", wire.BuildManifest{Namespace: &ns, Target: "t", Profile: "debug", Toolchain: "1.82.0", Entries: entries}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs, err := Manifest(&tt.m, now)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range obs.Artifacts {
				if a.Toolchain != "1.82.0" {
					t.Errorf("artifact %s toolchain %q", a.CrateName, a.Toolchain)
				}
			}
			switch {
			case tt.want == nil && obs.Identity != nil:
				t.Errorf("identity %x, want none", obs.Identity.Digest[:4])
			case tt.want != nil && (obs.Identity == nil || obs.Identity.Digest != *tt.want || len(obs.Identity.Artifacts) != len(entries)):
				t.Errorf("identity %+v, want digest %x over every entry", obs.Identity, (*tt.want)[:4])
			}
		})
	}
}

func TestManifestRejections(t *testing.T) {
	long := strings.Repeat("n", 256)
	tests := []struct {
		name    string
		m       wire.BuildManifest
		details int
	}{
		{"bad key", wire.BuildManifest{Entries: []wire.ManifestEntry{{CacheKey: "ABC", CrateName: "a"}}}, 1},
		{"traversal crate", wire.BuildManifest{Entries: []wire.ManifestEntry{{CacheKey: key(1), CrateName: "a/../b"}}}, 1},
		{"long namespace", wire.BuildManifest{Namespace: &long}, 0},
		{"dep without version", wire.BuildManifest{CargoLockDeps: []wire.LockDep{{Name: "a"}}}, 0},
		{"long toolchain", wire.BuildManifest{Toolchain: long}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Manifest(&tt.m, now)
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) || len(ve.Details) != tt.details {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestSeedDeterministicWithMetadata(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.json")
	body := `{"namespaces":{"linux/hash/debug":{"deps":{"serde@1.0.0":[{"cache_key":"` + key(1) + `","crate_name":"serde","compile_time_ms":7}]}}},
	"history":{"tokio":[{"cache_key":"` + key(2) + `","crate_name":"other","size_bytes":9},{"cache_key":"` + key(3) + `","crate_name":"tokio"},{"cache_key":"serde-key","crate_name":"serde"}]},
	"key_cache":{"b":["` + key(5) + `"],"a":["` + key(4) + `"]}}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := ReadSeedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obs, skipped := Seed(f, now)
	if skipped != 1 {
		t.Fatalf("skipped %d, want the fake key", skipped)
	}
	var order []string
	for _, a := range obs.Artifacts {
		order = append(order, a.CrateName+":"+a.CacheKey[63:])
	}
	if got := strings.Join(order, " "); got != "serde:1 tokio:2 tokio:3 a:4 b:5" {
		t.Fatalf("order %s", got)
	}
	if obs.Artifacts[0].CompileTimeMs != 7 || obs.Artifacts[1].SizeBytes != 9 || !obs.Artifacts[3].ListedOnly {
		t.Fatalf("metadata lost: %+v", obs.Artifacts)
	}
	if obs.Artifacts[1].SeenAtMs <= obs.Artifacts[2].SeenAtMs {
		t.Fatal("earlier candidates must be newer")
	}
	if len(obs.DepLinks) != 1 || obs.DepLinks[0].Dep != "serde@1.0.0" || obs.SeedDigest != f.Digest {
		t.Fatalf("links %+v", obs.DepLinks)
	}
	if _, err := ReadSeedFile(filepath.Join(t.TempDir(), "absent.json")); err == nil {
		t.Fatal("missing seed file must fail")
	}
}

type fakeStore struct {
	applied  []store.Observation
	imported map[string]bool
}

func (f *fakeStore) Apply(obs store.Observation) (store.ApplyResult, error) {
	f.applied = append(f.applied, obs)
	if obs.SeedDigest != "" {
		f.imported[obs.SeedDigest] = true
	}
	return store.ApplyResult{Stored: len(obs.Artifacts)}, nil
}

func (f *fakeStore) PutTimeline(string, int, []byte, store.Observation) (store.TimelineOutcome, error) {
	return store.TimelineInserted, nil
}

func (f *fakeStore) SeedImported(d string) (bool, error) { return f.imported[d], nil }

func TestImportSeedOnce(t *testing.T) {
	fs := &fakeStore{imported: map[string]bool{}}
	svc, err := NewService(fs, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	f := &SeedFile{Digest: "d1", State: wire.SeedState{History: map[string][]wire.PrefetchCandidate{"a": {{CacheKey: key(1), CrateName: "a"}}}}}
	for i, want := range []bool{true, false} {
		imported, _, err := svc.ImportSeed(f)
		if err != nil || imported != want {
			t.Fatalf("import %d: %v %v", i, imported, err)
		}
	}
	if len(fs.applied) != 1 {
		t.Fatalf("applied %d times", len(fs.applied))
	}
}
