package replay

import (
	"fmt"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// central is our planner through the real central code, in process: the
// goleveldb store (in memory), ingest of each build manifest and the
// planner. The intent is kache's plus the target, profile and toolchain a
// sidecar adds; the manifests carry the ingest extensions (namespace, lock
// deps, target, profile, toolchain) with created set to the build's end.
type central struct {
	name string
	st   *store.Store
	plan func(*wire.BuildIntent) (wire.PrefetchPlan, error)
}

func newCentral() (*central, error) {
	st, err := openMemStore()
	if err != nil {
		return nil, err
	}
	pl := planner.New(st, planner.Config{})
	c := &central{name: PolicyPlanner, st: st}
	c.plan = func(in *wire.BuildIntent) (wire.PrefetchPlan, error) {
		p, _, err := pl.Plan(in)
		return p, err
	}
	return c, nil
}

func openMemStore() (*store.Store, error) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("open planner store: %w", err)
	}
	return st, nil
}

func (c *central) Name() string { return c.name }
func (*central) remote()        {}

func (c *central) Plan(b *Build) (wire.PrefetchPlan, error) {
	in := sidecarIntent(b)
	p, err := c.plan(&in)
	if err != nil {
		return wire.PrefetchPlan{}, fmt.Errorf("plan build %d: %w", b.Seq, err)
	}
	return p, nil
}

// sidecarIntent is kache's intent plus the dimensions kache-sidecar adds.
func sidecarIntent(b *Build) wire.BuildIntent {
	in := b.Intent
	in.Target = b.Job.Target
	in.Profile = b.Job.Profile
	in.Toolchain = b.Toolchain
	return in
}

func (c *central) Learn(b *Build, m *wire.BuildManifest, endMs int64) error {
	obs, err := ingest.Manifest(m, time.UnixMilli(endMs))
	if err != nil {
		return fmt.Errorf("ingest manifest of build %d: %w", b.Seq, err)
	}
	if _, err := c.st.Apply(obs); err != nil {
		return fmt.Errorf("store manifest of build %d: %w", b.Seq, err)
	}
	return nil
}

// Close closes the store.
func (c *central) Close() error { return c.st.Close() }
