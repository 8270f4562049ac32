package planner

import (
	"fmt"
	"os"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// benchStore holds builds of 1000 crates each over 2000 crates, with lock deps.
func benchStore(b *testing.B, builds int) *store.Store {
	var st *store.Store
	var err error
	if os.Getenv("BENCH_DISK") != "" {
		st, err = store.Open(b.TempDir(), store.Options{})
	} else {
		st, err = store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	for bi := range builds {
		obs := store.Observation{AtMs: int64(1000 + bi)}
		for i := range 1000 {
			c := (bi*1000 + i) % 2000
			obs.Artifacts = append(obs.Artifacts, store.Artifact{CacheKey: fmt.Sprintf("%032x%032x", bi+1, c+1), CrateName: fmt.Sprintf("crate_%05d", c), CompileTimeMs: uint64(c), SizeBytes: 1000, Target: "x86_64-unknown-linux-gnu", Profile: "debug"})
			obs.DepLinks = append(obs.DepLinks, store.DepLink{Namespace: "bench", Dep: fmt.Sprintf("crate-%05d@1.0.%d", c, bi/10), Artifact: i})
		}
		if _, err := st.Apply(obs); err != nil {
			b.Fatal(err)
		}
	}
	return st
}

func BenchmarkPlan500(b *testing.B) {
	st := benchStore(b, 100)
	ns := "bench"
	in := wire.BuildIntent{Namespace: &ns}
	for i := range 500 {
		in.CrateNames = append(in.CrateNames, fmt.Sprintf("crate-%05d", i))
		in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: fmt.Sprintf("crate-%05d", i), Version: "1.0.9"})
	}
	p := New(st, Config{})
	b.ResetTimer()
	for b.Loop() {
		plan, out, err := p.Plan(&in)
		if err != nil || out != OutcomeExecute {
			b.Fatal(out, err)
		}
		_ = plan
	}
}

func BenchmarkApply1000(b *testing.B) {
	st := benchStore(b, 20)
	bi := 20
	b.ResetTimer()
	for b.Loop() {
		obs := store.Observation{AtMs: int64(1000 + bi)}
		for i := range 1000 {
			c := (bi*1000 + i) % 2000
			obs.Artifacts = append(obs.Artifacts, store.Artifact{CacheKey: fmt.Sprintf("%032x%032x", bi+1, c+1), CrateName: fmt.Sprintf("crate_%05d", c), CompileTimeMs: uint64(c), SizeBytes: 1000})
			obs.DepLinks = append(obs.DepLinks, store.DepLink{Namespace: "bench", Dep: fmt.Sprintf("crate-%05d@1.0.%d", c, bi/10), Artifact: i})
		}
		if _, err := st.Apply(obs); err != nil {
			b.Fatal(err)
		}
		bi++
	}
}

// BenchmarkIngestGrowing applies b.N 1000-entry manifests to an empty
// on-disk database (as the service ingests), so compaction costs show.
func BenchmarkIngestGrowing(b *testing.B) {
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	bi := 0
	for b.Loop() {
		obs := store.Observation{AtMs: int64(1000 + bi)}
		for i := range 1000 {
			c := (bi*1000 + i) % 20000
			obs.Artifacts = append(obs.Artifacts, store.Artifact{CacheKey: fmt.Sprintf("%032x%032x", bi+1, c+1), CrateName: fmt.Sprintf("crate_%05d", c), CompileTimeMs: uint64(c), SizeBytes: 1000, Target: "x86_64-unknown-linux-gnu", Profile: "debug"})
			obs.DepLinks = append(obs.DepLinks, store.DepLink{Namespace: "bench", Dep: fmt.Sprintf("crate-%05d@1.0.%d", c, bi/100), Artifact: i})
		}
		if _, err := st.Apply(obs); err != nil {
			b.Fatal(err)
		}
		bi++
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "entries/s")
}
