// Package bucketplan is the sidecar's own planner over the bucket, the way
// kache's local fallback plans (kache-protocol.md 3.6): Cargo.lock shards
// first, then the local store's history, then a key cache listed from
// {prefix}/v3/manifests/, composed by shared/compose with kache's limits.
package bucketplan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kache-planner/kache-planner/shared/background"
	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Bucket is what this package reads from the upstream bucket; the sidecar's
// s3source.Bucket satisfies it.
type Bucket interface {
	// ReadAll returns a whole object of at most max bytes; a missing object
	// is an error for which Config.IsNotFound reports true.
	ReadAll(ctx context.Context, key string, max int64) ([]byte, error)
	// List calls fn for every key under prefix, recursively, in ascending
	// key order; an error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(key string, size int64) error) error
}

// History says which cache keys the local store holds for a crate, most
// recently used first, like kache's history query. A nil History has none.
type History interface {
	Keys(crate string) []string
}

// Config configures the bucket planner. Zero values take the defaults noted.
type Config struct {
	// Prefix is the bucket prefix as configured (KACHE_S3_PREFIX style);
	// New normalizes it as the client does.
	Prefix string
	// Planner is the name in the plans' planner field. Default
	// "kache-sidecar".
	Planner string
	// IsNotFound reports whether a ReadAll error means the object does not
	// exist (a shard that changed or was never written). Required.
	IsNotFound func(error) bool
	// Limits are the composition caps. Default compose.DefaultLimits().
	Limits *compose.Limits
	// ShardConcurrency bounds concurrent shard GETs. Default 16, kache's
	// shard upload concurrency.
	ShardConcurrency int
	// MaxShardBytes bounds one shard object. Default 16 MiB.
	MaxShardBytes int64
	// RefreshInterval is the key-listing period. Default 60 s, kache's
	// KACHE_REMOTE_KEY_CACHE_REFRESH_SECS.
	RefreshInterval time.Duration
	// Listing caps, kache's by default: 1,000,000 entries, 256 MiB of key
	// text, 60 s without progress, 600 s in total.
	ListMaxEntries  int
	ListMaxKeyBytes int64
	ListIdleTimeout time.Duration
	ListTimeout     time.Duration
	// Now is the clock of plan ids and of the key index's build time; nil
	// means time.Now. Listing timeouts run on the host's clock.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Planner == "" {
		c.Planner = "kache-sidecar"
	}
	if c.Limits == nil {
		l := compose.DefaultLimits()
		c.Limits = &l
	}
	if c.ShardConcurrency <= 0 {
		c.ShardConcurrency = 16
	}
	if c.MaxShardBytes <= 0 {
		c.MaxShardBytes = 16 << 20
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 60 * time.Second
	}
	if c.ListMaxEntries <= 0 {
		c.ListMaxEntries = 1_000_000
	}
	if c.ListMaxKeyBytes <= 0 {
		c.ListMaxKeyBytes = 256 << 20
	}
	if c.ListIdleTimeout <= 0 {
		c.ListIdleTimeout = 60 * time.Second
	}
	if c.ListTimeout <= 0 {
		c.ListTimeout = 600 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Source plans from the bucket. Plan is safe for concurrent use; the key
// index is refreshed by the goroutine Start launches.
type Source struct {
	cfg     Config
	prefix  string
	bucket  Bucket
	history History
	log     *slog.Logger

	idx atomic.Pointer[index]
	// refreshMu keeps Refresh calls from listing twice at once.
	refreshMu sync.Mutex

	// refresher runs the key-index refresh loop; started guards it against
	// a second Start.
	refresher background.Task
	mu        sync.Mutex
	started   bool
}

// New builds a bucket planner. history may be nil.
func New(cfg Config, bucket Bucket, history History, logger *slog.Logger) (*Source, error) {
	cfg = cfg.withDefaults()
	if bucket == nil {
		return nil, errors.New("create bucket planner: no bucket")
	}
	if cfg.IsNotFound == nil {
		return nil, errors.New("create bucket planner: IsNotFound is required")
	}
	prefix, err := layout.NormalizePrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("create bucket planner: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg, prefix: prefix, bucket: bucket, history: history, log: logger.With("component", "bucketplan")}, nil
}

// Start launches the key-index refresher: one listing right away, then one
// every RefreshInterval. Until the first listing completes the key cache is
// empty, as kache's is. ctx is not kept.
func (s *Source) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("start bucket planner: already started")
	}
	s.started = true
	s.refresher.Go(s.refreshLoop)
	return nil
}

// Stop cancels the refresher and waits for it within ctx.
func (s *Source) Stop(ctx context.Context) error {
	if err := s.refresher.Stop(ctx); err != nil {
		return fmt.Errorf("stop bucket planner: %w", err)
	}
	return nil
}

func (s *Source) refreshLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RefreshInterval)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("refresh key index, keeping the previous one", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh lists the entry manifests now and swaps in the new index; on error
// the previous index stays.
func (s *Source) Refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	start := time.Now()
	idx, err := buildIndex(ctx, s.bucket, s.prefix, listCaps{
		maxEntries:  s.cfg.ListMaxEntries,
		maxKeyBytes: s.cfg.ListMaxKeyBytes,
		idle:        s.cfg.ListIdleTimeout,
		total:       s.cfg.ListTimeout,
	}, s.cfg.Now())
	if err != nil {
		return fmt.Errorf("refresh key index: %w", err)
	}
	s.idx.Store(idx)
	s.log.Debug("key index refreshed", "crates", len(idx.keys), "keys", idx.entries, "took", time.Since(start))
	return nil
}

// IndexStats says how many keys the key index holds and when it was built
// (zero before the first listing).
func (s *Source) IndexStats() (keys int, built time.Time) {
	if idx := s.idx.Load(); idx != nil {
		return idx.entries, idx.built
	}
	return 0, time.Time{}
}

// Plan composes a plan for intent from the bucket. Package names are mapped
// to crate names first (kache-protocol.md 4.7), so candidates always carry
// layout crate names. A plan without candidates is use_fallback; an error
// means the history or key-cache pass failed.
func (s *Source) Plan(ctx context.Context, intent *wire.BuildIntent) (wire.PrefetchPlan, error) {
	norm := compose.NormalizeIntent(intent)
	cands, comp, err := compose.Compose(norm, s.DataSource(ctx), *s.cfg.Limits)
	if err != nil {
		return wire.PrefetchPlan{}, fmt.Errorf("compose bucket plan: %w", err)
	}
	plan := wire.PrefetchPlan{
		PlanID:      "plan-" + strconv.FormatInt(s.cfg.Now().UnixMilli(), 10),
		Planner:     s.cfg.Planner,
		Disposition: wire.UseFallback,
		Candidates:  []wire.PrefetchCandidate{},
		Stats:       comp.Stats(norm),
	}
	compose.CountCandidates(plan.Stats, cands)
	if len(cands) > 0 {
		plan.Disposition, plan.Candidates = wire.Execute, cands
	}
	return plan, nil
}

// DataSource binds the source to one request's context; compose's interface
// has no context of its own.
func (s *Source) DataSource(ctx context.Context) compose.DataSource {
	return &dataSource{s: s, ctx: ctx}
}

type dataSource struct {
	s   *Source
	ctx context.Context
}

// ShardCandidates GETs the intent's shard objects concurrently (bounded) and
// returns their valid entries in shard order. A missing shard is a clean
// miss; an unreadable or undecodable shard is logged and skipped, so one bad
// object does not cost the others. Only a cancelled context fails the pass
// (and compose ignores shard errors anyway).
func (d *dataSource) ShardCandidates(namespace string, deps []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	shards := layout.Shards(deps)
	results := make([][]wire.PrefetchCandidate, len(shards))
	sem := make(chan struct{}, d.s.cfg.ShardConcurrency)
	var wg sync.WaitGroup
	for i, sh := range shards {
		select {
		case sem <- struct{}{}:
		case <-d.ctx.Done():
		}
		if d.ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = d.readShard(layout.ShardObjectKey(d.s.prefix, namespace, sh.Hash))
		}()
	}
	wg.Wait()
	if err := d.ctx.Err(); err != nil {
		return nil, fmt.Errorf("read shards: %w", err)
	}
	var out []wire.PrefetchCandidate
	for _, r := range results {
		out = append(out, r...)
	}
	return out, nil
}

func (d *dataSource) readShard(key string) []wire.PrefetchCandidate {
	data, err := d.s.bucket.ReadAll(d.ctx, key, d.s.cfg.MaxShardBytes)
	switch {
	case err == nil:
	case d.s.cfg.IsNotFound(err):
		return nil
	case d.ctx.Err() != nil:
		return nil
	default:
		d.s.log.Warn("read shard, skipping it", "key", key, "error", err)
		return nil
	}
	var obj wire.ShardObject
	if err := json.Unmarshal(data, &obj); err != nil {
		d.s.log.Warn("decode shard, skipping it", "key", key, "error", err)
		return nil
	}
	out := make([]wire.PrefetchCandidate, 0, len(obj.Entries))
	for _, e := range obj.Entries {
		// Shard contents end up in local paths and object keys: anything
		// the client would not accept is dropped, never sanitized.
		if !layout.ValidCacheKey(e.CacheKey) || !layout.ValidCrateName(e.CrateName) {
			continue
		}
		out = append(out, e.Candidate())
	}
	return out
}

// HistoryCandidates asks the local store which keys it holds per crate. It
// cannot fail: a sidecar without history simply has none.
func (d *dataSource) HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error) {
	if d.s.history == nil {
		return nil, nil
	}
	var out []wire.PrefetchCandidate
	for _, c := range crates {
		for _, k := range d.s.history.Keys(c) {
			if layout.ValidCacheKey(k) && layout.ValidCrateName(c) {
				out = append(out, wire.PrefetchCandidate{CacheKey: k, CrateName: c})
			}
		}
	}
	return out, nil
}

// KeyCacheKeys returns the listed keys of a crate. The slice belongs to the
// index and must not be modified; compose only reads it.
func (d *dataSource) KeyCacheKeys(crate string) ([]string, error) {
	idx := d.s.idx.Load()
	if idx == nil {
		return nil, nil
	}
	return idx.keys[crate], nil
}
