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
	// ing and enc are central's timeline ingest and the clients' record
	// encoding.
	ing *ingest.Service
	enc *timelineEncoder
}

func newCentral(ctx Context, split bool) (*central, error) {
	st, err := openMemStore()
	if err != nil {
		return nil, err
	}
	pl := planner.New(st, planner.Config{})
	// The timeline route's default decoded-size limit (32 MiB).
	ing, err := ingest.NewService(st, 32<<20)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("create ingest: %w", err)
	}
	enc, err := newTimelineEncoder()
	if err != nil {
		ing.Close()
		st.Close()
		return nil, err
	}
	c := &central{name: PolicyPlanner, ctx: ctx, split: split, st: st, ing: ing, enc: enc}
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

// learnsTimelines: central ingests the timelines of the builds run under
// its plans.
func (*central) learnsTimelines() bool { return true }

// Learn ingests what production delivers for the build: the manifests
// (deliveries), then kache's build timeline and the sidecar's outcome
// record of the build as it ran under this policy's plan. The harness's
// own manifest (m) is not used.
func (c *central) Learn(b *Build, _ *wire.BuildManifest, endMs int64) error {
	if err := c.learnManifests(b, endMs); err != nil {
		return err
	}
	run := b.runs[c.name]
	if run == nil {
		return nil
	}
	project := b.Runner.Repository
	in := plannerIntent(b, c.ctx)
	for _, t := range []wire.BuildTimeline{kacheTimeline(b, run, project), sidecarTimeline(b, run, project, in.Runner)} {
		body, err := c.enc.encode(&t)
		if err != nil {
			return err
		}
		if _, err := c.ing.IngestTimeline(body); err != nil {
			return fmt.Errorf("ingest timeline %s of build %d: %w", t.ClientRecordID, b.Seq, err)
		}
	}
	return nil
}

func (c *central) learnManifests(b *Build, endMs int64) error {
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
func (c *central) Close() error {
	c.ing.Close()
	c.enc.enc.Close()
	return c.st.Close()
}

// warmed: with --warm-lead, the sidecar's warm fetches the planner's plan.
func (*central) warmed() bool { return true }

// viaSidecar: kache asks its plans through the sidecar, whose engine
// fetches them (--prefetch-on-plan).
func (*central) viaSidecar() bool { return true }
