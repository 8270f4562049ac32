// Package api is the sidecar's planner surface on fasthttp, the endpoint kache
// is pointed at as KACHE_PLANNER_ENDPOINT: the plan routes, wire-identical to
// central's (kache-protocol.md 1-2), plus /healthz and /metrics. It is the only
// sidecar package that imports fasthttp for this surface; serving, routing
// and the request limits are shared/httpserve's.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
)

// ErrInsecureBind is returned by New for a non-loopback address without a
// token: the planner surface would be open to the network.
var ErrInsecureBind = errors.New("non-loopback bind without a token")

// Config configures the server. Zero values take the defaults noted.
type Config struct {
	// Addr is the listen address. Default 127.0.0.1:7070.
	Addr string
	// Token, when non-blank, requires `Authorization: Bearer <token>` on
	// the plan routes. Required for a non-loopback Addr.
	Token string
	// Version is reported by /healthz.
	Version string
	// MaxBodyBytes bounds a plan request. Default 2 MiB, kache-service's.
	MaxBodyBytes int
	// Limits bound what the surface holds for its clients. Zero fields take
	// the sidecar's defaults: headers, body and answer 5 s each, keep-alive
	// idle 60 s, 512 connections (one runner's kache and warm need a
	// handful), 16 MiB of bodies in flight (raised to the largest body
	// limit if that is larger); then httpserve's.
	Limits httpserve.Limits
	// MaxTimelineBytes bounds a compressed POST /v1/build-timelines body.
	// Default 8 MiB, kache-service's.
	MaxTimelineBytes int
	// TimelineTimeout bounds relaying one timeline to central. Default
	// 25 s, under the client's 30 s floor.
	TimelineTimeout time.Duration
	// PrefetchQueue bounds plans waiting to be handed to the prefetcher.
	// Default 16; when full, a plan is dropped rather than delaying an
	// answer.
	PrefetchQueue int
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:7070"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 2 << 20
	}
	if c.PrefetchQueue <= 0 {
		c.PrefetchQueue = 16
	}
	if c.MaxTimelineBytes <= 0 {
		c.MaxTimelineBytes = 8 << 20
	}
	c.Limits = c.Limits.WithDefaults(httpserve.Limits{
		HeaderTimeout:        5 * time.Second,
		BodyTimeout:          5 * time.Second,
		WriteTimeout:         5 * time.Second,
		IdleTimeout:          60 * time.Second,
		MaxConns:             512,
		MaxInflightBodyBytes: max(16<<20, int64(c.MaxBodyBytes), int64(c.MaxTimelineBytes)),
	})
	if c.TimelineTimeout <= 0 {
		c.TimelineTimeout = 25 * time.Second
	}
	return c
}

// Planner answers plan requests (planner.Planner).
type Planner interface {
	Plan(ctx context.Context, intent *wire.BuildIntent) planner.Result
	Name() string
}

// Prefetcher receives every execute plan the surface answers, after the
// answer, so the sidecar starts fetching what kache is about to ask for.
// Submit should return quickly; it runs on one goroutine of the server.
// res is the answer as sent (its plan_id the answer's); its candidates
// may be shared with other answers (planner.Result) and are read-only.
type Prefetcher interface {
	Submit(res planner.Result)
}

// Sessions reports the progress of the prefetch session started for a plan,
// as a JSON-encodable value.
type Sessions interface {
	SessionProgress(planID string) (any, bool)
}

// TimelineRelay forwards build timelines to central (central.Client). Newer
// kache clients post them to their planner endpoint (kache-protocol.md 7),
// which is this surface.
type TimelineRelay interface {
	// RelayTimeline forwards a zstd body as is and returns central's status
	// and body; err means central could not be reached.
	RelayTimeline(ctx context.Context, zstdBody []byte) (int, []byte, error)
}

// Deps are the server's collaborators. Prefetcher, Timelines and
// OnServeError may be nil.
type Deps struct {
	Planner    Planner
	Prefetcher Prefetcher
	// Sessions reports prefetch progress (for `kache-sidecar warm`); nil
	// answers 404.
	Sessions   Sessions
	Timelines  TimelineRelay
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
	// OnServeError is called if serving fails after Start, so the
	// application can shut down.
	OnServeError func(error)
}

// Server is the planner surface.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	auth    bearer.Checker
	metrics *metrics
	http    *httpserve.Server

	// base is the context of planning and relaying (fasthttp's RequestCtx
	// only ends at shutdown): httpserve's, which Stop cancels once it stops
	// waiting for requests.
	base context.Context

	queue      chan planner.Result
	workerOnce sync.Once
	stopOnce   sync.Once
	workerStop chan struct{}
	workerDone chan struct{}

	// planSeq makes every answered plan_id unique, so a plan's prefetch
	// session can be looked up by it.
	planSeq atomic.Uint64
}

// New builds the server and registers its metrics; Start binds it.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.withDefaults()
	if deps.Planner == nil {
		return nil, errors.New("create planner surface: no planner")
	}
	if deps.Registerer == nil || deps.Gatherer == nil {
		return nil, errors.New("create planner surface: no metrics registry")
	}
	auth := bearer.New(cfg.Token)
	loopback, err := httpserve.IsLoopback(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("create planner surface: %w", err)
	}
	if !loopback && !auth.Enabled() {
		return nil, fmt.Errorf("create planner surface on %s: %w", cfg.Addr, ErrInsecureBind)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("create planner surface: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		deps:       deps,
		log:        deps.Logger.With("component", "planner_api"),
		auth:       auth,
		metrics:    m,
		queue:      make(chan planner.Result, cfg.PrefetchQueue),
		workerStop: make(chan struct{}),
		workerDone: make(chan struct{}),
	}
	h, err := httpserve.New(httpserve.Config{
		Name:      "kache-sidecar",
		Addr:      cfg.Addr,
		Namespace: "kache_sidecar",
		Surface:   "planner",
		Limits:    cfg.Limits,
	}, httpserve.Deps{
		Routes:       s.routes(),
		Authorized:   httpserve.Bearer(auth),
		Registerer:   deps.Registerer,
		Logger:       s.log,
		OnServeError: deps.OnServeError,
	})
	if err != nil {
		return nil, fmt.Errorf("create planner surface: %w", err)
	}
	s.http, s.base = h, h.Context()
	return s, nil
}

// Serve serves on ln until Stop; tests hand it an in-memory listener.
func (s *Server) Serve(ln net.Listener) error {
	s.startWorker()
	return s.http.Serve(ln)
}

// Start binds the listener and serves in a goroutine the server owns. ctx is
// not kept.
func (s *Server) Start(ctx context.Context) error {
	s.startWorker()
	if err := s.http.Start(ctx); err != nil {
		return err
	}
	s.log.Info("planner surface listening", "addr", s.http.Addr(), "auth", s.auth.Enabled())
	return nil
}

// Addr is the bound address after Start.
func (s *Server) Addr() string { return s.http.Addr() }

// Stop shuts down gracefully within ctx: no new requests, requests being
// answered finish (httpserve.Server.Stop: stalled and idle connections are
// closed at once, in-flight planning is cancelled when the drain ends), then
// the prefetch hand-off is waited for. Plans still queued for the
// prefetcher are dropped.
func (s *Server) Stop(ctx context.Context) error {
	err := s.http.Stop(ctx)
	s.workerOnce.Do(func() { close(s.workerDone) }) // never started: nothing to wait for
	s.stopOnce.Do(func() { close(s.workerStop) })
	select {
	case <-s.workerDone:
	case <-ctx.Done():
		return fmt.Errorf("stop planner surface: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("stop planner surface: %w", err)
	}
	return nil
}

// startWorker starts the goroutine that hands plans to the prefetcher, once.
func (s *Server) startWorker() {
	s.workerOnce.Do(func() {
		go func() {
			defer close(s.workerDone)
			for {
				select {
				case <-s.workerStop:
					return
				case sub := <-s.queue:
					if s.deps.Prefetcher != nil {
						s.deps.Prefetcher.Submit(sub)
					}
				}
			}
		}()
	})
}

// submit queues an execute plan for the prefetcher without blocking.
func (s *Server) submit(res planner.Result) {
	if s.deps.Prefetcher == nil || res.Plan.Disposition != wire.Execute || len(res.Plan.Candidates) == 0 {
		return
	}
	select {
	case s.queue <- res:
	default:
		s.metrics.prefetchDropped.Inc()
		s.log.Warn("prefetch queue full, plan not prefetched", "plan_id", res.Plan.PlanID)
	}
}
