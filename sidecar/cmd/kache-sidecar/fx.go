package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/api"
	"github.com/kache-planner/kache-planner/sidecar/internal/bucketplan"
	"github.com/kache-planner/kache-planner/sidecar/internal/central"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
	"github.com/kache-planner/kache-planner/sidecar/internal/report"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
	"github.com/kache-planner/kache-planner/sidecar/internal/s3api"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// opts is the whole dependency graph of `kache-sidecar serve`.
func opts(cfg config.Config, log *slog.Logger) fx.Option {
	return fx.Options(
		fx.Supply(cfg, log),
		fx.WithLogger(func(l *slog.Logger) fxevent.Logger {
			fl := &fxevent.SlogLogger{Logger: l.With("component", "fx")}
			fl.UseLogLevel(slog.LevelDebug)
			return fl
		}),
		fx.StopTimeout(cfg.ShutdownTimeout),
		fx.Provide(
			newRegistry,
			func(r *prometheus.Registry) prometheus.Registerer { return r },
			func(r *prometheus.Registry) prometheus.Gatherer { return r },
			newClock,
			runnerInfo,
			newBucket,
			fxCentral,
			fxStore,
			fxHints,
			fxBucketPlan,
			fxPlanner,
			prefetch.NewMetrics,
			fxEngine,
			fxServer,
			newJobContext,
			fxReporter,
			fxS3,
		),
		fx.Invoke(logStart, func(*api.Server, *s3api.Server) {}),
	)
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func logStart(cfg config.Config, info runner.Info, log *slog.Logger) {
	log.Info("starting kache-sidecar", "version", buildinfo.Resolve(buildinfo.Version), "ci", info.Provider,
		"repository", info.Context.Repository, "target", info.Target, "config", cfg.Redacted())
	if cfg.S3Bucket == "" {
		log.Warn("no --s3-bucket: plans are answered from hints and central, nothing is prefetched and there is no bucket plan")
	}
	if cfg.CentralEndpoint == "" {
		log.Warn("no --central-endpoint: plans come from hints and the bucket only")
	}
	if cfg.S3Bucket != "" && !cfg.S3Surface() {
		log.Warn("no KACHE_SIDECAR_LOCAL_ACCESS_KEY/KACHE_SIDECAR_LOCAL_SECRET_KEY: the S3 surface is off, so kache reads the bucket directly and prefetched objects are not served")
	}
}

func fxCentral(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (*central.Client, error) {
	c, err := newCentral(cfg, log)
	if c != nil {
		lc.Append(fx.StopHook(c.Close))
	}
	return c, err
}

func fxStore(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (*store.Store, error) {
	st, err := newStore(cfg, log)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(st.Close))
	return st, nil
}

func fxHints(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (*hints.Store, error) {
	h, err := hints.Open(cfg.HintsDir, hints.Options{Logger: log.With("component", "hints")})
	if err != nil {
		return nil, err
	}
	entries, bytes := h.Stats()
	log.Info("hint cache open", "component", "hints", "dir", cfg.HintsDir, "hints", entries, "bytes", bytes, "recovered", h.Recovered())
	lc.Append(fx.StopHook(h.Close))
	return h, nil
}

func fxBucketPlan(lc fx.Lifecycle, cfg config.Config, b *s3source.Bucket, st *store.Store, now wallClock, log *slog.Logger) (*bucketplan.Source, error) {
	bp, err := newBucketPlan(cfg, b, st, now, log)
	if bp != nil {
		lc.Append(fx.StartStopHook(bp.Start, bp.Stop))
	}
	return bp, err
}

// fxPlanner stops before the hint database closes (fx stops in reverse
// order of construction), since it writes hints in the background.
func fxPlanner(lc fx.Lifecycle, cfg config.Config, info runner.Info, h *hints.Store, c *central.Client,
	bp *bucketplan.Source, jobs *runner.JobContext, now wallClock, log *slog.Logger) (*planner.Planner, error) {
	p, err := newPlanner(cfg, info, h, c, bp, jobs, now, log)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StartStopHook(p.Start, p.Stop))
	return p, nil
}

func fxEngine(lc fx.Lifecycle, cfg config.Config, b *s3source.Bucket, st *store.Store, m *prefetch.Metrics,
	c *central.Client, now wallClock, log *slog.Logger) *prefetch.Engine {
	e := newEngine(cfg, b, st, m, c, now, log)
	if e != nil {
		lc.Append(fx.StartStopHook(e.Start, e.Stop))
	}
	return e
}

// prefetcher hands answered plans to the engine.
type prefetcher struct{ e *prefetch.Engine }

func (p prefetcher) Submit(res planner.Result) {
	plan := planOf(res.Intent, res.Plan, string(res.Source))
	plan.Fingerprint = res.Fingerprint
	p.e.Submit(plan)
}

func (p prefetcher) SessionProgress(planID string) (any, bool) {
	s, ok := p.e.Session(planID)
	if !ok {
		return nil, false
	}
	return p.e.Progress(s), true
}

func fxServer(lc fx.Lifecycle, cfg config.Config, p *planner.Planner, e *prefetch.Engine, c *central.Client,
	reg prometheus.Registerer, g prometheus.Gatherer, log *slog.Logger, sd fx.Shutdowner) (*api.Server, error) {
	deps := api.Deps{Planner: p, Registerer: reg, Gatherer: g, Logger: log,
		OnServeError: func(err error) {
			log.Error("planner surface failed", "error", err)
			sd.Shutdown(fx.ExitCode(1))
		}}
	if e != nil {
		deps.Sessions = prefetcher{e}
		if cfg.PrefetchOnPlan {
			deps.Prefetcher = prefetcher{e}
		}
	}
	if c != nil {
		deps.Timelines = c
	}
	s, err := api.New(api.Config{Addr: cfg.PlannerListen, Token: cfg.Token, Version: buildinfo.Resolve(buildinfo.Version)}, deps)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StartStopHook(s.Start, s.Stop))
	return s, nil
}

// fxS3 runs the S3 surface when there is a bucket to front and local
// credentials to verify; it stops before the engine and the store (fx stops
// in reverse order of construction).
func fxS3(lc fx.Lifecycle, cfg config.Config, b *s3source.Bucket, st *store.Store, e *prefetch.Engine, p *planner.Planner,
	rep *report.Reporter, now wallClock, reg prometheus.Registerer, log *slog.Logger, sd fx.Shutdowner) (*s3api.Server, error) {
	if !cfg.S3Surface() || b == nil || e == nil {
		return nil, nil
	}
	// Every read tells the planner what the build is (its profile) and
	// keeps the job context alive, then goes to the engine.
	s, err := newS3Surface(cfg, b, st, readObserver{Demander: e, p: p}, s3Reporter{rep}, now, reg, log, func(err error) {
		log.Error("S3 surface failed", "error", err)
		sd.Shutdown(fx.ExitCode(1))
	})
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StartStopHook(s.Start, s.Stop))
	return s, nil
}

// fxReporter sends what the S3 surface sees to central; it stops after the
// surface (fx stops in reverse order), so the last uploads are still sent.
func fxReporter(lc fx.Lifecycle, cfg config.Config, c *central.Client, info runner.Info, jobs *runner.JobContext, now wallClock,
	reg prometheus.Registerer, log *slog.Logger) (*report.Reporter, error) {
	if !cfg.S3Surface() {
		return nil, nil
	}
	r, err := newReporter(c, info, jobs, now, reg, log)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StartStopHook(r.Start, r.Stop))
	return r, nil
}
