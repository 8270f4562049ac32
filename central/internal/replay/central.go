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
// goleveldb store (in memory), ingest of what production delivers after
// each build and the planner. Its context decides both: the intent is
// plannerIntent's, the manifests deliveries', with created set to the
// build's end.
type central struct {
	name string
	ctx  Context
	// split: the sidecar asks once per profile when the intent leaves it
	// open (splitPlan); last is the last plan's split then.
	split bool
	last  *split
	st    *store.Store
	plan  func(*wire.BuildIntent) (wire.PrefetchPlan, error)
}

func newCentral(ctx Context, split bool) (*central, error) {
	st, err := openMemStore()
	if err != nil {
		return nil, err
	}
	pl := planner.New(st, planner.Config{})
	c := &central{name: PolicyPlanner, ctx: ctx, split: split, st: st}
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
	in := plannerIntent(b, c.ctx)
	var p wire.PrefetchPlan
	var err error
	c.last = nil
	if c.split && in.Profile == "" && in.Namespace == nil {
		// No profile and no namespace to tell the job's variants apart:
		// the sidecar splits the plan by profile.
		p, c.last, err = splitPlan(in, c.plan)
	} else {
		p, err = c.plan(&in)
	}
	if err != nil {
		return wire.PrefetchPlan{}, fmt.Errorf("plan build %d: %w", b.Seq, err)
	}
	return p, nil
}

func (c *central) lastSplit() *split { return c.last }

// Learn ingests what production delivers for the build; the harness's own
// manifest (m) is not used.
func (c *central) Learn(b *Build, _ *wire.BuildManifest, endMs int64) error {
	for _, m := range deliveries(b, c.ctx, endMs) {
		if len(m.Entries) == 0 {
			continue
		}
		obs, err := ingest.Manifest(&m, time.UnixMilli(endMs))
		if err != nil {
			return fmt.Errorf("ingest %s manifest of build %d: %w", m.ManifestKey, b.Seq, err)
		}
		if _, err := c.st.Apply(obs); err != nil {
			return fmt.Errorf("store %s manifest of build %d: %w", m.ManifestKey, b.Seq, err)
		}
	}
	return nil
}

// Close closes the store.
func (c *central) Close() error { return c.st.Close() }
