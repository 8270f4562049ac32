// Package retention makes central forget. It runs the age policy on a
// schedule (keys not built, used or listed within the retention period),
// sweeps what drops leave behind and compacts the database so its disk use
// follows; and it handles runners' reports of planned keys the bucket
// answered 404 for, confirming them with a HEAD when central has the
// bucket. Keys that leave the bucket are dropped by the crawl (see
// central/internal/crawl); the store does the dropping (store.Drop).
package retention

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/background"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Store is the part of the store retention uses.
type Store interface {
	Artifact(cacheKey string) (store.Variant, error)
	Drop(keys []string, reason store.DropReason) (int, error)
	Expire(cutoffMs int64) (store.ExpireResult, error)
	Sweep() (store.SweepResult, error)
	Compact() error
	DeletesSinceCompaction() uint64
	Dropped(reason store.DropReason) uint64
	ArtifactCount() uint64
	TableBytes() (int64, error)
}

// Bucket answers HEADs of kache's objects; a missing object is an error
// wrapping s3source.ErrNotFound.
type Bucket interface {
	Stat(ctx context.Context, key string) (s3source.Object, error)
}

// Config configures a Service.
type Config struct {
	// Retention is the age policy: keys not built, used or listed for
	// this long are dropped. 0 turns it off.
	Retention time.Duration
	// Interval is how often the policy runs (and the sweep and the
	// compaction after it). Default 1 h.
	Interval time.Duration
	// Prefix is kache's normalized key prefix, for the HEADs.
	Prefix string
	// DBDir is the database directory, whose size is reported; empty
	// reports the size of its tables.
	DBDir string
	// MaxHeads bounds the HEADs in flight for all reports together.
	// Default 8.
	MaxHeads int
	// CompactAfter is how many deleted entries make a run compact the
	// database. Default 1000.
	CompactAfter uint64
	Logger       *slog.Logger
}

// Service forgets: Start runs the schedule, ReportMissing takes reports.
type Service struct {
	cfg     Config
	st      Store
	bucket  Bucket
	log     *slog.Logger
	heads   chan struct{}
	reports *prometheus.CounterVec
	now     func() time.Time

	runMu sync.Mutex
	task  background.Task
}

// New returns a Service and registers its metrics on reg. bucket may be nil:
// reported keys are then dropped unconfirmed.
func New(cfg Config, st Store, bucket Bucket, reg prometheus.Registerer) (*Service, error) {
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("create retention: negative retention %s", cfg.Retention)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.MaxHeads <= 0 {
		cfg.MaxHeads = 8
	}
	if cfg.CompactAfter == 0 {
		cfg.CompactAfter = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, st: st, bucket: bucket, log: cfg.Logger, heads: make(chan struct{}, cfg.MaxHeads), now: time.Now,
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_planner_missing_keys_total",
			Help: "Keys runners reported as 404 by what central did: dropped, present (the bucket has them), unknown, unconfirmed (the check failed; kept).",
		}, []string{"result"}),
	}
	for _, r := range []string{"dropped", "present", "unknown", "unconfirmed"} {
		s.reports.WithLabelValues(r)
	}
	cs := []prometheus.Collector{s.reports, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kache_planner_db_size_bytes",
		Help: "Disk used by the database.",
	}, func() float64 { return float64(s.dbBytes()) })}
	for _, r := range store.DropReasons {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kache_planner_keys_dropped_total",
			Help:        "Keys dropped by reason: deleted (gone from the bucket's listing), reported_404 (a runner's GET), retention (age policy).",
			ConstLabels: prometheus.Labels{"reason": r.String()},
		}, func() float64 { return float64(st.Dropped(r)) }))
	}
	if reg != nil {
		for _, c := range cs {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register retention metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Start runs the schedule in a goroutine it owns: the first run after one
// interval (a starting replica has its bucket to catch up with first).
func (s *Service) Start(context.Context) error {
	s.task.Go(s.loop)
	return nil
}

// Stop ends the schedule and waits for a run in progress.
func (s *Service) Stop(ctx context.Context) error { return s.task.Stop(ctx) }

func (s *Service) loop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("retention run failed", "error", err)
		}
	}
}

// RunResult is what one run did.
type RunResult struct {
	Expired   store.ExpireResult
	Swept     store.SweepResult
	Compacted bool
	Duration  time.Duration
}

// Run applies the age policy, sweeps what drops left behind and compacts
// the database when enough was deleted.
func (s *Service) Run(ctx context.Context) (RunResult, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	start := s.now()
	var res RunResult
	var err error
	if s.cfg.Retention > 0 {
		if res.Expired, err = s.st.Expire(start.Add(-s.cfg.Retention).UnixMilli()); err != nil {
			return res, err
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if res.Swept, err = s.st.Sweep(); err != nil {
		return res, err
	}
	if s.st.DeletesSinceCompaction() >= s.cfg.CompactAfter && ctx.Err() == nil {
		if err := s.st.Compact(); err != nil {
			return res, err
		}
		res.Compacted = true
	}
	res.Duration = time.Since(start)
	s.log.Info("retention", "expired_keys", res.Expired.Keys, "expired_identities", res.Expired.Identities,
		"swept_keys", res.Swept.Keys, "swept_dep_entries", res.Swept.DepEntries, "swept_identities", res.Swept.Identities,
		"compacted", res.Compacted, "keys", s.st.ArtifactCount(), "db_bytes", s.dbBytes(), "duration", res.Duration)
	return res, nil
}

// ReportMissing handles planned keys a runner got 404s for. Keys central
// does not have are unknown. With the bucket, a key is dropped only when a
// HEAD of its entry manifest or its pack answers 404 (a misconfigured
// sidecar must not wipe keys); without it, at once.
func (s *Service) ReportMissing(ctx context.Context, keys []wire.MissingKey) (wire.MissingKeysResult, error) {
	var res wire.MissingKeysResult
	var known []store.Variant
	for _, k := range keys {
		v, err := s.st.Artifact(k.CacheKey)
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
			res.Unknown++
		case err != nil:
			return res, err
		default:
			known = append(known, v)
		}
	}
	gone := make([]string, 0, len(known))
	if s.bucket == nil {
		for _, v := range known {
			gone = append(gone, v.CacheKey)
		}
	} else {
		verdicts := s.check(ctx, known)
		for i, v := range known {
			switch verdicts[i] {
			case verdictGone:
				gone = append(gone, v.CacheKey)
			case verdictPresent:
				res.Present++
			default:
				res.Unconfirmed++
			}
		}
	}
	n, err := s.st.Drop(gone, store.DropNotFound)
	if err != nil {
		return res, err
	}
	// A key dropped meanwhile (by the crawl, or another report) is no
	// longer known.
	res.Dropped, res.Unknown = n, res.Unknown+len(gone)-n
	s.reports.WithLabelValues("dropped").Add(float64(res.Dropped))
	s.reports.WithLabelValues("present").Add(float64(res.Present))
	s.reports.WithLabelValues("unknown").Add(float64(res.Unknown))
	s.reports.WithLabelValues("unconfirmed").Add(float64(res.Unconfirmed))
	if res.Dropped > 0 || res.Present > 0 {
		s.log.Info("keys reported missing", "dropped", res.Dropped, "present", res.Present, "unknown", res.Unknown, "unconfirmed", res.Unconfirmed)
	}
	return res, nil
}

type verdict int

const (
	verdictUnconfirmed verdict = iota
	verdictGone
	verdictPresent
)

// check HEADs each key's entry manifest and pack, a bounded number at once
// across all reports.
func (s *Service) check(ctx context.Context, vs []store.Variant) []verdict {
	out := make([]verdict, len(vs))
	var wg sync.WaitGroup
	for i := range vs {
		select {
		case s.heads <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return out
		}
		wg.Go(func() {
			defer func() { <-s.heads }()
			out[i] = s.head(ctx, &vs[i])
		})
	}
	wg.Wait()
	return out
}

func (s *Service) head(ctx context.Context, v *store.Variant) verdict {
	for _, key := range []string{layout.EntryManifestKey(s.cfg.Prefix, v.CrateName, v.CacheKey), layout.PackKey(s.cfg.Prefix, v.CrateName, v.CacheKey)} {
		_, err := s.bucket.Stat(ctx, key)
		switch {
		case errors.Is(err, s3source.ErrNotFound):
			return verdictGone
		case err != nil:
			s.log.Warn("confirm reported 404", "key", key, "error", err)
			return verdictUnconfirmed
		}
	}
	return verdictPresent
}

// dbBytes is the size of the database directory, or of its tables.
func (s *Service) dbBytes() int64 {
	if s.cfg.DBDir == "" {
		n, _ := s.st.TableBytes()
		return n
	}
	var n int64
	_ = filepath.WalkDir(s.cfg.DBDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a table deleted meanwhile
		}
		if fi, err := d.Info(); err == nil && !d.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
