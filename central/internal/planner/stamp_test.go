package planner

import (
	"fmt"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// untracked hides the store's tracking: its plans are stamped by generation.
type untracked struct{ *store.Store }

func (u untracked) Tracked() {}

func TestPlanTrackedStamp(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	build := func(k int, crate, dep string) {
		obs := store.Observation{AtMs: int64(1000 + k), Artifacts: []store.Artifact{{CacheKey: fmt.Sprintf("%064x", k), CrateName: crate}},
			DepLinks: []store.DepLink{{Namespace: "ns", Dep: dep, Artifact: 0}}}
		if _, err := st.Apply(obs); err != nil {
			t.Fatal(err)
		}
	}
	build(1, "serde", "serde@1.0.0")
	build(2, "tokio", "tokio@1.0.0")
	ns := "ns"
	intent := wire.BuildIntent{Namespace: &ns, CrateNames: []string{"serde"}, CargoLockDeps: []wire.LockDep{{Name: "serde", Version: "1.0.0"}}}
	tracked, _, stamp, err := New(st, Config{}).PlanTracked(&intent)
	if err != nil || len(tracked.Candidates) != 1 {
		t.Fatalf("plan %+v %v", tracked, err)
	}
	plain, _, byGen, err := New(untracked{st}, Config{}).PlanTracked(&intent)
	if err != nil || len(plain.Candidates) != 1 {
		t.Fatalf("plan %+v %v", plain, err)
	}
	build(3, "tokio", "tokio@1.0.0")
	if !stamp.Current() || byGen.Current() {
		t.Fatalf("after a build of another crate: tracked %v, by generation %v", stamp.Current(), byGen.Current())
	}
	build(4, "serde", "serde@1.0.0")
	if stamp.Current() {
		t.Fatal("tracked stamp current after a build of its crate")
	}
}
