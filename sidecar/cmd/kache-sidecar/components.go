package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/bucketplan"
	"github.com/kache-planner/kache-planner/sidecar/internal/central"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
	"github.com/kache-planner/kache-planner/sidecar/internal/report"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
	"github.com/kache-planner/kache-planner/sidecar/internal/s3api"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// The constructors here are shared by serve (wired with fx in fx.go) and
// warm (which runs them directly for one plan). Optional parts are nil when
// not configured.

// plannerName names the sidecar's own plans.
const plannerName = "kache-sidecar"

// demandLanes are kept free of speculative work so the build never queues
// behind prefetching (kache keeps 4 of its 16 S3 connections the same way).
const demandLanes = 4

// wallClock is the sidecar's clock: the host's plus --clock-offset. It is
// what the sidecar's own checks and records read, that is whatever is
// compared with other machines' times or sent to them: SigV4 request dates,
// plan ids, hint ages, the job context's idle time, prefetch sessions and
// their reported timelines, observed-pack manifests. Durations measured for
// metrics stay on time.Now/time.Since. The store's recency stamps stay on
// the host's clock too: they are compared with file mtimes, which the host
// writes. Requests to the bucket are signed by minio-go with the host's
// clock, so an offset models a sidecar whose view of time is off, not one
// the bucket would refuse.
type wallClock func() time.Time

func newClock(cfg config.Config) wallClock {
	off := cfg.ClockOffset
	if off == 0 {
		return time.Now
	}
	return func() time.Time { return time.Now().Add(off) }
}

func newBucket(cfg config.Config) (*s3source.Bucket, error) {
	if cfg.S3Bucket == "" {
		return nil, nil
	}
	return s3source.New(s3source.Config{
		Endpoint: cfg.S3Endpoint, Bucket: cfg.S3Bucket, Region: cfg.S3Region,
		AccessKey: cfg.S3AccessKey, SecretKey: cfg.S3SecretKey,
		MaxConns: cfg.PrefetchConcurrency + demandLanes,
	})
}

func prefix(cfg config.Config) string {
	p, _ := layout.NormalizePrefix(cfg.S3Prefix) // Validate has checked it
	return p
}

func newCentral(cfg config.Config, log *slog.Logger) (*central.Client, error) {
	if cfg.CentralEndpoint == "" {
		return nil, nil
	}
	return central.New(central.Config{
		Endpoint:  cfg.CentralEndpoint,
		Token:     cfg.CentralToken,
		UserAgent: "kache-sidecar/" + buildinfo.Resolve(buildinfo.Version),
	}, log)
}

func newStore(cfg config.Config, log *slog.Logger) (*store.Store, error) {
	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	return store.Open(store.Config{Dir: cfg.StoreDir, MaxBytes: cfg.StoreMaxBytes, NoSync: !cfg.StoreFsync, Logger: log.With("component", "store")})
}

// storeHistory is the local store as the bucket planner's history: packs
// this runner already holds.
type storeHistory struct{ st *store.Store }

func (h storeHistory) Keys(crate string) []string { return h.st.PackKeys(crate) }

// bucketLister adapts s3source.Bucket to the bucket planner's listing.
type bucketLister struct{ *s3source.Bucket }

func (b bucketLister) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	return b.Bucket.List(ctx, prefix, func(o s3source.Object) error { return fn(o.Key, o.Size) })
}

func newBucketPlan(cfg config.Config, b *s3source.Bucket, st *store.Store, now wallClock, log *slog.Logger) (*bucketplan.Source, error) {
	if b == nil {
		return nil, nil
	}
	var hist bucketplan.History
	if st != nil {
		hist = storeHistory{st}
	}
	return bucketplan.New(bucketplan.Config{
		Prefix:     prefix(cfg),
		Planner:    plannerName,
		IsNotFound: func(err error) bool { return errors.Is(err, s3source.ErrNotFound) },
		Now:        now,
	}, bucketLister{b}, hist, log)
}

func runnerInfo(cfg config.Config) (runner.Info, error) {
	labels, err := runner.ParseLabels(cfg.RunnerLabels)
	if err != nil {
		return runner.Info{}, fmt.Errorf("--runner-labels: %w", err)
	}
	return runner.Detect(os.LookupEnv, runner.Overrides{
		Repository: cfg.Repository, Ref: cfg.Ref, Commit: cfg.Commit, Target: cfg.Target,
		Labels: labels, HostTarget: runner.HostTriple(runtime.GOOS, runtime.GOARCH),
	}), nil
}

// newPlanner builds the planning chain; hints may be nil (warm).
func newPlanner(cfg config.Config, info runner.Info, h planner.Hints, c *central.Client, bp *bucketplan.Source,
	jobs *runner.JobContext, now wallClock, log *slog.Logger) (*planner.Planner, error) {
	deps := planner.Deps{Hints: h, Logger: log, Jobs: jobs, Now: now}
	// Typed nils must not become non-nil interfaces.
	if c != nil {
		deps.Central = c
	}
	if bp != nil {
		deps.Bucket = bp
	}
	rc := info.Context
	return planner.New(planner.Config{Name: plannerName, Deadline: cfg.PlanDeadline, Runner: &rc, Target: info.Target,
		Toolchain: cfg.Toolchain, ObservesReads: cfg.S3Surface()}, deps)
}

// timelineReporter sends closed sessions' outcomes to central.
type timelineReporter struct{ c *central.Client }

func (r timelineReporter) Report(ctx context.Context, rep prefetch.Report) error {
	_, err := r.c.PostTimeline(ctx, &rep.Timeline)
	return err
}

func newEngine(cfg config.Config, b *s3source.Bucket, st *store.Store, m *prefetch.Metrics, c *central.Client, now wallClock, log *slog.Logger) *prefetch.Engine {
	if b == nil {
		return nil
	}
	var rep prefetch.Reporter
	var missing prefetch.MissingReporter
	if c != nil {
		rep, missing = timelineReporter{c}, c
	}
	pc := prefetch.DefaultConfig()
	pc.Prefix = prefix(cfg)
	pc.Concurrency = cfg.PrefetchConcurrency
	pc.DemandConcurrency = demandLanes
	pc.SplitBytes, pc.SplitParts = cfg.PrefetchSplitBytes, cfg.PrefetchSplitParts
	pc.Lookahead = cfg.PrefetchLookahead
	// With the S3 surface every read of the build comes through Demand,
	// so sessions can say what was used; without it they claim nothing.
	pc.DemandObserved = cfg.S3Surface()
	pc.DefaultBudget = prefetch.Budget{MaxKeys: cfg.PrefetchMaxKeys, MaxBytes: cfg.PrefetchMaxBytes, Deadline: cfg.PrefetchDeadline}
	// Planned keys the bucket does not have are reported, so central
	// stops planning them.
	pc.Missing = missing
	pc.Clock = now
	return prefetch.New(pc, b, st, m, rep, log.With("component", "prefetch"))
}

// planOf turns an answered plan into a prefetch session's plan.
func planOf(intent *wire.BuildIntent, p wire.PrefetchPlan, source string) prefetch.Plan {
	return prefetch.Plan{ID: p.PlanID, Planner: p.Planner, Source: source, Candidates: p.Candidates, Runner: intent.Runner}
}

func newS3Surface(cfg config.Config, b *s3source.Bucket, st *store.Store, e s3api.Demander, rep s3api.Reporter,
	now wallClock, reg prometheus.Registerer, log *slog.Logger, onErr func(error)) (*s3api.Server, error) {
	return s3api.New(s3api.Config{
		Addr: cfg.S3Listen, AllowRemote: cfg.S3AllowRemote, Bucket: cfg.S3Bucket, Region: cfg.S3Region,
		Prefix: prefix(cfg), AccessKey: cfg.LocalAccessKey, SecretKey: cfg.LocalSecretKey, Now: now,
	}, s3api.Deps{Upstream: b, Store: st, Engine: e, Reporter: rep, Registerer: reg, Logger: log, OnServeError: onErr})
}

func newReporter(c *central.Client, info runner.Info, jobs *runner.JobContext, now wallClock, reg prometheus.Registerer, log *slog.Logger) (*report.Reporter, error) {
	var to report.Central
	if c != nil {
		to = jobCentral{c: c, jobs: jobs}
	}
	rc := info.Context
	return report.New(report.Config{Runner: &rc}, report.Deps{Central: to, Registerer: reg, Logger: log.With("component", "report"), Now: now})
}

// jobCentral adds what the job context knows (warm's job, kache's intent)
// to what the sidecar reports: kache's build manifests carry no target,
// profile or lock deps, and observed packs no job.
type jobCentral struct {
	c    *central.Client
	jobs *runner.JobContext
}

func (j jobCentral) PostManifest(ctx context.Context, m *wire.BuildManifest) (wire.IngestResult, error) {
	switch {
	case j.jobs == nil:
	case m.ManifestKey == report.ObservedManifestKey:
		j.jobs.AnnotatePacks(m)
	case !isShardKey(m.ManifestKey):
		j.jobs.AnnotateBuild(m)
	}
	return j.c.PostManifest(ctx, m)
}

// isShardKey recognises a shard's key below _manifests/
// (v3/{namespace}/shards/{hash}): shards teach history only.
func isShardKey(k string) bool {
	rest, ok := strings.CutPrefix(k, "v3/")
	return ok && strings.LastIndex(rest, "/shards/") > 0
}

// s3Reporter hands the S3 surface the reporter's pack observer under the
// surface's own interface.
type s3Reporter struct{ *report.Reporter }

func (a s3Reporter) Pack() s3api.PackObserver { return a.Reporter.Pack() }
