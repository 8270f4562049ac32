package crawl

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/kache-planner/kache-planner/shared/s3source"
)

// Manifest objects are fetched in parallel: a GET costs a round trip to the
// bucket and a replica rebuilding from an empty disk reads thousands. Each
// object is still decoded and applied on its own, in one batch with its
// ETag mark, so the order in which they land does not matter: ingest merges
// an older manifest after a newer one as it would the other way round.

// Fan-out defaults (Config.Fetchers, Config.FetchBudgetBytes).
const (
	defaultFetchers         = 16
	defaultFetchBudgetBytes = 16 << 20
)

// fetcher runs one pass's GETs: at most Fetchers at once, holding at most
// FetchBudgetBytes of object bodies (by their listed size).
type fetcher struct {
	g      *errgroup.Group
	ctx    context.Context
	budget *semaphore.Weighted
	limit  int64

	mu    sync.Mutex
	stats Stats
}

func (c *Crawler) newFetcher(ctx context.Context) *fetcher {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Fetchers)
	return &fetcher{g: g, ctx: gctx, budget: semaphore.NewWeighted(c.cfg.FetchBudgetBytes), limit: c.cfg.FetchBudgetBytes}
}

// fetch runs ingest for o in the group once its bytes fit the budget; it
// blocks while the group is full. ingest counts into its own Stats.
func (f *fetcher) fetch(o s3source.Object, ingest func(ctx context.Context, s *Stats) error) error {
	n := min(max(o.Size, 4<<10), f.limit)
	if err := f.budget.Acquire(f.ctx, n); err != nil {
		return err
	}
	f.g.Go(func() error {
		defer f.budget.Release(n)
		var s Stats
		err := ingest(f.ctx, &s)
		f.mu.Lock()
		f.stats.Manifests += s.Manifests
		f.stats.Shards += s.Shards
		f.stats.Invalid += s.Invalid
		f.mu.Unlock()
		return err
	})
	return nil
}

// wait waits for every fetch and adds their counts to s. It returns the
// first fetch's error.
func (f *fetcher) wait(s *Stats) error {
	err := f.g.Wait()
	s.Manifests += f.stats.Manifests
	s.Shards += f.stats.Shards
	s.Invalid += f.stats.Invalid
	return err
}
