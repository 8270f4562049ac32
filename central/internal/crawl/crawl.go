// Package crawl rebuilds and refreshes central's rankings from kache's bucket:
// the bucket is the source of truth and the database a derived index. It
// reads `{prefix}/_manifests/` (build manifests and Cargo.lock shards) and
// lists `{prefix}/v3/manifests/` (every stored key), remembering what it has
// ingested so each pass only reads what is new or changed. A replica with an
// empty disk catches up this way; no volume is shared between replicas.
package crawl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/background"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Source is the bucket as the crawler reads it.
type Source interface {
	List(ctx context.Context, prefix string, fn func(s3source.Object) error) error
	ReadAll(ctx context.Context, key string, limit int64) ([]byte, error)
}

// Store is what the crawler writes to.
type Store interface {
	Apply(obs store.Observation) (store.ApplyResult, error)
	ObjectETag(key string) (string, bool, error)
	Artifact(cacheKey string) (store.Variant, error)
	// Forgetting keys that left the bucket (deleted.go).
	Unlisted(crate string, listed []string) ([]string, error)
	Crates(fn func(crate string) error) error
	ApplyListing(startMs int64, missing []string, partial bool) (store.ListingResult, error)
	ReportedMissing(cacheKey string) (int64, bool, error)
}

// Config configures a Crawler.
type Config struct {
	// Prefix is kache's normalized prefix (default "artifacts").
	Prefix   string
	Interval time.Duration
	// MaxObjectBytes bounds one manifest read (kache caps reads at 64 MiB).
	MaxObjectBytes int64
	// Fetchers bounds the manifest GETs in flight (default 16), and
	// FetchBudgetBytes the object bytes they hold (default 16 MiB; a
	// decoded manifest takes two to three times its size).
	Fetchers         int
	FetchBudgetBytes int64
	// OnSynced is called once, after the first complete pass.
	OnSynced func()
	Logger   *slog.Logger
}

// Stats counts one pass.
type Stats struct {
	Manifests  int // build manifests ingested
	Shards     int // shard objects ingested
	Unchanged  int // objects skipped: already ingested with this ETag
	Invalid    int // objects or entries skipped as invalid
	Listed     int // keys newly learned from the v3/manifests listing
	Duration   time.Duration
	ListedSeen int // listing entries already known
	Unlisted   int // keys missing from this listing for the first time
	Deleted    int // keys dropped: missing from two complete listings in a row
}

// Crawler runs passes on an interval, owned by Start/Stop.
type Crawler struct {
	src Source
	st  Store
	cfg Config
	log *slog.Logger

	task background.Task
}

// New returns a crawler.
func New(src Source, st Store, cfg Config) *Crawler {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Minute
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = 64 << 20
	}
	if cfg.Fetchers <= 0 {
		cfg.Fetchers = defaultFetchers
	}
	if cfg.FetchBudgetBytes <= 0 {
		cfg.FetchBudgetBytes = defaultFetchBudgetBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Crawler{src: src, st: st, cfg: cfg, log: cfg.Logger}
}

// Start runs a pass now and then every interval, in a goroutine it owns.
func (c *Crawler) Start(context.Context) error {
	c.task.Go(c.loop)
	return nil
}

// Stop cancels the current pass and waits for it.
func (c *Crawler) Stop(ctx context.Context) error { return c.task.Stop(ctx) }

func (c *Crawler) loop(ctx context.Context) {
	synced := false
	for {
		stats, err := c.Pass(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.log.Error("bucket crawl failed", "error", err)
		default:
			c.log.Info("bucket crawl", "manifests", stats.Manifests, "shards", stats.Shards, "listed", stats.Listed,
				"unchanged", stats.Unchanged, "invalid", stats.Invalid, "unlisted", stats.Unlisted, "deleted", stats.Deleted,
				"duration", stats.Duration)
			if !synced && c.cfg.OnSynced != nil {
				c.cfg.OnSynced()
			}
			synced = true
		}
		wait := c.cfg.Interval
		if err != nil && !synced {
			wait = min(wait, 5*time.Second) // catching up matters more than politeness
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Pass reads everything new in the bucket once.
func (c *Crawler) Pass(ctx context.Context) (Stats, error) {
	start := time.Now()
	var s Stats
	manifests := layout.BuildManifestsPrefix(c.cfg.Prefix)
	f := c.newFetcher(ctx)
	err := c.src.List(f.ctx, manifests, func(o s3source.Object) error {
		if !strings.HasSuffix(o.Key, ".json") {
			return nil
		}
		etag, seen, err := c.st.ObjectETag(o.Key)
		if err != nil {
			return err
		}
		if seen && etag == o.ETag {
			s.Unchanged++
			return nil
		}
		return f.fetch(o, func(ctx context.Context, fs *Stats) error {
			return c.ingestObject(ctx, o, strings.TrimPrefix(o.Key, manifests), fs)
		})
	})
	// A failed fetch cancels the listing; its error is the one to report.
	if ferr := f.wait(&s); ferr != nil {
		err = ferr
	}
	if err != nil {
		return s, fmt.Errorf("crawl %s: %w", manifests, err)
	}
	if err := c.listKeys(ctx, &s); err != nil {
		return s, err
	}
	s.Duration = time.Since(start)
	return s, nil
}

func (c *Crawler) ingestObject(ctx context.Context, o s3source.Object, rel string, s *Stats) error {
	data, err := c.src.ReadAll(ctx, o.Key, c.cfg.MaxObjectBytes)
	switch {
	case errors.Is(err, s3source.ErrNotFound):
		return nil // deleted between list and get
	case errors.Is(err, s3source.ErrTooLarge):
		s.Invalid++
		c.log.Warn("skipping oversized manifest", "key", o.Key)
		return c.mark(o)
	case err != nil:
		return err
	}
	var obs store.Observation
	if isShard(rel) {
		var sh wire.ShardObject
		if err := json.Unmarshal(data, &sh); err != nil {
			s.Invalid++
			return c.mark(o)
		}
		obs = store.Observation{AtMs: o.LastModified.UnixMilli()}
		for _, e := range sh.Entries {
			if !layout.ValidCacheKey(e.CacheKey) || !layout.ValidCrateName(e.CrateName) {
				s.Invalid++
				continue
			}
			a := store.Artifact{CacheKey: e.CacheKey, CrateName: e.CrateName}
			if e.CompileTimeMs != nil {
				a.CompileTimeMs = *e.CompileTimeMs
			}
			if e.ArtifactSize != nil {
				a.SizeBytes = *e.ArtifactSize
			}
			obs.Artifacts = append(obs.Artifacts, a)
		}
		// A shard's name hashes its deps without listing them, so its keys
		// cannot be linked to name@version: they feed history only.
		s.Shards++
	} else {
		var m wire.BuildManifest
		if err := json.Unmarshal(data, &m); err != nil {
			s.Invalid++
			return c.mark(o)
		}
		valid := m.Entries[:0]
		for _, e := range m.Entries {
			if layout.ValidCacheKey(e.CacheKey) && layout.ValidCrateName(e.CrateName) {
				valid = append(valid, e)
			} else {
				s.Invalid++
			}
		}
		m.Entries = valid
		if t, p, ok := identityDims(strings.TrimSuffix(rel, ".json")); ok && m.Target == "" && m.Profile == "" {
			m.Target, m.Profile = t, p
		}
		if obs, err = ingest.Manifest(&m, o.LastModified); err != nil {
			s.Invalid++
			return c.mark(o)
		}
		s.Manifests++
	}
	obs.Objects = map[string]string{o.Key: o.ETag}
	obs.NoSync = true // the bucket keeps it: a crash loses data and mark together
	if _, err := c.st.Apply(obs); err != nil {
		return fmt.Errorf("store %s: %w", o.Key, err)
	}
	return nil
}

// mark records an object that teaches nothing, so it is not read again.
func (c *Crawler) mark(o s3source.Object) error {
	_, err := c.st.Apply(store.Observation{Objects: map[string]string{o.Key: o.ETag}, NoSync: true})
	return err
}

// isShard recognises `v3/{namespace}/shards/{hash}.json` under _manifests/.
func isShard(rel string) bool {
	rest, ok := strings.CutPrefix(rel, "v3/")
	return ok && strings.LastIndex(rest, "/shards/") > 0
}

// identityDims reads target and profile from a later kache's identity
// manifest key, `id/{lock digest}/{target}/{profile}`.
func identityDims(manifestKey string) (target, profile string, ok bool) {
	parts := strings.Split(manifestKey, "/")
	if len(parts) != 4 || parts[0] != "id" || parts[2] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[2], parts[3], true
}

// listKeys learns every stored key from the entry-manifest listing, in
// batches; keys already known are skipped without a write (but for marking
// them listed once). A complete listing then drops the keys that left the
// bucket (applyDiff).
func (c *Crawler) listKeys(ctx context.Context, s *Stats) error {
	const batch = 1000
	obs := store.Observation{}
	flush := func() error {
		if len(obs.Artifacts) == 0 {
			return nil
		}
		if _, err := c.st.Apply(obs); err != nil {
			return fmt.Errorf("store listed keys: %w", err)
		}
		obs.Artifacts = obs.Artifacts[:0]
		return nil
	}
	prefix := layout.EntryManifestsPrefix(c.cfg.Prefix)
	diff, startMs := newListingDiff(c.st), time.Now().UnixMilli()
	err := c.src.List(ctx, prefix, func(o s3source.Object) error {
		crate, key, ok := layout.ParseEntryManifestKey(c.cfg.Prefix, o.Key)
		if !ok {
			s.Invalid++
			return nil
		}
		if err := diff.add(crate, key); err != nil {
			return err
		}
		listed := store.Artifact{CacheKey: key, CrateName: crate, ListedOnly: true, Listed: true, SeenAtMs: o.LastModified.UnixMilli()}
		if v, err := c.st.Artifact(key); err == nil {
			s.ListedSeen++
			if v.Listed || v.CrateName != crate {
				return nil
			}
			// Known from a build, listed for the first time: from now on
			// its leaving the bucket drops it.
			obs.Artifacts = append(obs.Artifacts, listed)
			if len(obs.Artifacts) >= batch {
				return flush()
			}
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// A runner's 404 dropped it and its entry manifest is the same
		// one: its pack is gone, so it stays out.
		if at, ok, err := c.st.ReportedMissing(key); err != nil {
			return err
		} else if ok && !o.LastModified.After(time.UnixMilli(at)) {
			return nil
		}
		obs.Artifacts = append(obs.Artifacts, listed)
		s.Listed++
		if len(obs.Artifacts) >= batch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("crawl %s: %w", prefix, err)
	}
	if err := flush(); err != nil {
		return err
	}
	return c.applyDiff(diff, startMs, s)
}
