package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
	"k8s.io/klog/v2"

	"github.com/kache-planner/kache-planner/central/internal/api"
	"github.com/kache-planner/kache-planner/central/internal/config"
	"github.com/kache-planner/kache-planner/central/internal/crawl"
	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/leader"
	"github.com/kache-planner/kache-planner/central/internal/metrics"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/readiness"
	"github.com/kache-planner/kache-planner/central/internal/retention"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/s3source"
)

// opts is the whole dependency graph of kache-service.
func opts(cfg config.Config, log *slog.Logger) fx.Option {
	return fx.Options(
		fx.Supply(cfg, log),
		fx.WithLogger(func(l *slog.Logger) fxevent.Logger {
			fl := &fxevent.SlogLogger{Logger: l.With("component", "fx")}
			fl.UseLogLevel(slog.LevelDebug)
			return fl
		}),
		fx.StopTimeout(cfg.ShutdownTimeout+5*time.Second),
		fx.Provide(
			newRegistry,
			func(r *prometheus.Registry) prometheus.Registerer { return r },
			func(r *prometheus.Registry) prometheus.Gatherer { return r },
			metrics.New,
			newReadiness,
			newStore,
			newIngest,
			newPlanner,
			newBucket,
			newRetention,
			newServer,
		),
		fx.Invoke(start, startCrawler, startElection, startPprof),
	)
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func newReadiness(m *metrics.Metrics, cfg config.Config) *readiness.Flag {
	conds := []string{readiness.Started}
	if cfg.HAEnabled {
		conds = append(conds, readiness.Lease)
	}
	return readiness.New(m.SetReady, conds...)
}

// newStore opens the database; with no --db-path it uses a temporary
// directory removed on stop, so `go run` leaves nothing behind.
func newStore(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (*store.Store, error) {
	dir, ephemeral := cfg.DBPath, cfg.DBPath == ""
	if ephemeral {
		var err error
		if dir, err = os.MkdirTemp("", "kache-service-*"); err != nil {
			return nil, fmt.Errorf("create ephemeral database directory: %w", err)
		}
	} else if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("create database parent: %w", err)
	}
	l := log.With("component", "store")
	st, err := store.Open(dir, store.Options{CacheMB: cfg.DBCacheMB, ListCacheMB: cfg.ListCacheMB, Logger: l})
	if err != nil {
		if ephemeral {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	l.Info("database open", "path", dir, "ephemeral", ephemeral, "artifacts", st.ArtifactCount(), "recovered", st.Recovered())
	lc.Append(fx.StopHook(func() error {
		err := st.Close()
		if ephemeral {
			os.RemoveAll(dir)
		}
		return err
	}))
	return st, nil
}

func newIngest(lc fx.Lifecycle, st *store.Store, cfg config.Config) (*ingest.Service, error) {
	svc, err := ingest.NewService(st, int64(cfg.TimelineMaxDecodedBytes))
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(svc.Close))
	return svc, nil
}

func newPlanner(st *store.Store, cfg config.Config) *planner.Planner {
	return planner.New(st, planner.Config{Name: cfg.PlannerName})
}

// newBucket connects (lazily) to the bucket the crawl reads and reported
// 404s are checked against; nil without --s3-bucket.
func newBucket(cfg config.Config) (*s3source.Bucket, error) {
	if cfg.S3Bucket == "" {
		return nil, nil
	}
	return s3source.New(s3source.Config{Endpoint: cfg.S3Endpoint, Bucket: cfg.S3Bucket, Region: cfg.S3Region,
		AccessKey: cfg.S3AccessKey, SecretKey: cfg.S3SecretKey})
}

// newRetention runs the age policy, sweeps and compactions in a goroutine
// it owns, and takes runners' 404 reports (checked against the bucket when
// there is one).
func newRetention(lc fx.Lifecycle, cfg config.Config, st *store.Store, b *s3source.Bucket, reg prometheus.Registerer,
	log *slog.Logger) (*retention.Service, error) {
	var bucket retention.Bucket
	if b != nil {
		bucket = b
	}
	r, err := retention.New(retention.Config{
		Retention: cfg.Retention, Interval: cfg.RetentionInterval, Prefix: cfg.S3Prefix,
		DBDir: cfg.DBPath, Logger: log.With("component", "retention"),
	}, st, bucket, reg)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StartStopHook(r.Start, r.Stop))
	return r, nil
}

func newServer(cfg config.Config, p *planner.Planner, ing *ingest.Service, ready *readiness.Flag, ret *retention.Service,
	m *metrics.Metrics, reg prometheus.Registerer, g prometheus.Gatherer, log *slog.Logger) (*api.Server, error) {
	return api.New(api.Config{
		Addr:             cfg.Bind,
		Token:            cfg.Token,
		Version:          buildinfo.Resolve(buildinfo.Version),
		MaxBodyBytes:     cfg.MaxBodyBytes,
		MaxManifestBytes: cfg.MaxManifestBytes,
		MaxTimelineBytes: cfg.TimelineMaxCompressedBytes,
		PlanCacheBytes:   cfg.PlanCacheMB << 20,
		Limits: httpserve.Limits{
			HeaderTimeout:        cfg.HeaderTimeout,
			BodyTimeout:          cfg.ReadTimeout,
			WriteTimeout:         cfg.WriteTimeout,
			IdleTimeout:          cfg.IdleTimeout,
			MaxConns:             cfg.MaxConns,
			MaxInflightBodyBytes: int64(cfg.MaxInflightBodyMB) << 20,
		},
	}, api.Deps{Planner: p, Ingester: ing, Ready: ready, Missing: ret, Metrics: m, Registerer: reg, Gatherer: g, Logger: log.With("component", "api")})
}

// start orders startup as kache's non-HA serve() does: database open and seed
// imported before the listener binds, then ready.
func start(lc fx.Lifecycle, cfg config.Config, log *slog.Logger, ing *ingest.Service, ready *readiness.Flag,
	srv *api.Server, sd fx.Shutdowner) error {
	log.Info("starting kache-service", "version", buildinfo.Resolve(buildinfo.Version), "kache_compat", buildinfo.KacheCompat, "config", cfg)
	lc.Append(fx.StartHook(func() error {
		if cfg.SeedStateFile == "" {
			return nil
		}
		f, err := ingest.ReadSeedFile(cfg.SeedStateFile)
		if err != nil {
			return err
		}
		imported, skipped, err := ing.ImportSeed(f)
		if err != nil {
			return err
		}
		log.Info("seed state file", "path", cfg.SeedStateFile, "imported", imported, "skipped_invalid", skipped, "digest", f.Digest)
		return nil
	}))
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			// Started before the listener binds, as in kache's serve(): the
			// database is open and seeded, so without HA no request sees a
			// 503. With HA, the Lease condition decides.
			ready.SetCondition(readiness.Started, true)
			return srv.Start(ctx, func(err error) {
				log.Error("http server failed", "error", err)
				_ = sd.Shutdown(fx.ExitCode(1))
			})
		},
		OnStop: func(ctx context.Context) error {
			ready.SetCondition(readiness.Started, false)
			return srv.Stop(ctx)
		},
	})
	return nil
}

// startPprof serves Go profiles on a separate listener when asked to.
func startPprof(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) {
	if cfg.PprofBind == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: cfg.PprofBind, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", cfg.PprofBind)
			if err != nil {
				return fmt.Errorf("listen for pprof on %s: %w", cfg.PprofBind, err)
			}
			log.Info("pprof listening", "addr", ln.Addr().String())
			go func() { _ = srv.Serve(ln) }()
			return nil
		},
		OnStop: srv.Shutdown,
	})
}

// startElection campaigns for the Lease with --ha-enabled: only the holder is
// ready. It is registered after the server, so on stop it releases the Lease
// first and a follower takes over while this replica drains.
func startElection(lc fx.Lifecycle, cfg config.Config, ready *readiness.Flag, log *slog.Logger) error {
	if !cfg.HAEnabled {
		return nil
	}
	ns, err := leader.ResolveNamespace(cfg.HANamespace, os.Getenv, leader.ServiceAccountNamespaceFile)
	if err != nil {
		return err
	}
	klog.SetSlogLogger(log.With("component", "client-go"))
	client, err := leader.KubeClient()
	if err != nil {
		return err
	}
	e, err := leader.New(leader.Config{
		Namespace: ns, LeaseName: cfg.HALeaseName, Identity: leader.Identity(os.Getenv),
		LeaseDuration: cfg.HALeaseDuration, RenewDeadline: cfg.HARenewDeadline, RetryPeriod: cfg.HARetryPeriod,
	}, client, func(leading bool) { ready.SetCondition(readiness.Lease, leading) }, log.With("component", "leader"))
	if err != nil {
		return err
	}
	lc.Append(fx.StartStopHook(e.Start, e.Stop))
	return nil
}

// startCrawler keeps rankings in step with the bucket when one is given. A
// replica that opened an empty database is not ready until its first pass:
// it rebuilds from the bucket instead of answering use_fallback.
func startCrawler(lc fx.Lifecycle, cfg config.Config, st *store.Store, b *s3source.Bucket, ready *readiness.Flag, log *slog.Logger) error {
	if b == nil {
		return nil
	}
	if st.ArtifactCount() == 0 {
		ready.Require(readiness.Bucket)
	}
	c := crawl.New(b, st, crawl.Config{
		Prefix:   cfg.S3Prefix,
		Interval: cfg.S3CrawlInterval,
		OnSynced: func() { ready.SetCondition(readiness.Bucket, true) },
		Logger:   log.With("component", "crawl"),
	})
	lc.Append(fx.StartStopHook(c.Start, c.Stop))
	return nil
}
