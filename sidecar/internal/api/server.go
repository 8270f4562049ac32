// Package api is the sidecar's planner surface on fasthttp, the endpoint kache
// is pointed at as KACHE_PLANNER_ENDPOINT: the plan routes, wire-identical to
// central's (kache-protocol.md 1-2), plus /healthz and /metrics. It is the only
// sidecar package that imports fasthttp for this surface.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/bearer"
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
	// Timeouts of the server. Defaults 5 s, 5 s and 60 s.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
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
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 5 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.PrefetchQueue <= 0 {
		c.PrefetchQueue = 16
	}
	if c.MaxTimelineBytes <= 0 {
		c.MaxTimelineBytes = 8 << 20
	}
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
type Prefetcher interface {
	Submit(intent *wire.BuildIntent, plan wire.PrefetchPlan, source planner.Source)
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
	srv     *fasthttp.Server

	// base is the context of planning work; Stop cancels it. fasthttp's
	// RequestCtx only ends at shutdown, so it is not used as a context.
	base       context.Context
	cancelBase context.CancelFunc

	queue      chan submission
	workerOnce sync.Once
	stopOnce   sync.Once
	workerStop chan struct{}
	workerDone chan struct{}

	// planSeq makes every answered plan_id unique, so a plan's prefetch
	// session can be looked up by it.
	planSeq atomic.Uint64

	mu        sync.Mutex
	ln        net.Listener
	serveDone chan struct{}
}

type submission struct {
	intent *wire.BuildIntent
	plan   wire.PrefetchPlan
	source planner.Source
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
	loopback, err := isLoopback(cfg.Addr)
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
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        cfg,
		deps:       deps,
		log:        deps.Logger.With("component", "planner_api"),
		auth:       auth,
		metrics:    m,
		base:       base,
		cancelBase: cancel,
		queue:      make(chan submission, cfg.PrefetchQueue),
		workerStop: make(chan struct{}),
		workerDone: make(chan struct{}),
	}
	s.srv = &fasthttp.Server{
		Handler:            s.routes().Handler,
		Name:               "kache-sidecar",
		ReadTimeout:        cfg.ReadTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: max(cfg.MaxBodyBytes, cfg.MaxTimelineBytes),
		CloseOnShutdown:    true,
		ErrorHandler:       s.transportError,
		Logger:             slogPrinter{s.log},
	}
	return s, nil
}

// isLoopback reports whether addr (host:port) binds only the loopback
// interface. An empty host or an unspecified address binds every interface.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("parse listen address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback(), nil
}

// Serve serves on ln until Stop; tests hand it an in-memory listener.
func (s *Server) Serve(ln net.Listener) error {
	s.startWorker()
	return s.srv.Serve(ln)
}

// Start binds the listener and serves in a goroutine the server owns. ctx is
// not kept.
func (s *Server) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.ln, s.serveDone = ln, make(chan struct{})
	done := s.serveDone
	s.mu.Unlock()
	s.log.Info("planner surface listening", "addr", ln.Addr().String(), "auth", s.auth.Enabled())
	go func() {
		defer close(done)
		if err := s.Serve(ln); err != nil {
			s.log.Error("planner surface stopped serving", "error", err)
			if s.deps.OnServeError != nil {
				s.deps.OnServeError(fmt.Errorf("serve planner surface: %w", err))
			}
		}
	}()
	return nil
}

// Addr is the bound address after Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Stop shuts down gracefully within ctx: no new requests, in-flight planning
// cancelled, the serve goroutine and the prefetch hand-off waited for. Plans
// still queued for the prefetcher are dropped.
func (s *Server) Stop(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	s.cancelBase()
	s.workerOnce.Do(func() { close(s.workerDone) }) // never started: nothing to wait for
	s.stopOnce.Do(func() { close(s.workerStop) })
	s.mu.Lock()
	serveDone := s.serveDone
	s.mu.Unlock()
	for _, done := range []chan struct{}{serveDone, s.workerDone} {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("stop planner surface: %w", ctx.Err())
		}
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
						s.deps.Prefetcher.Submit(sub.intent, sub.plan, sub.source)
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
	case s.queue <- submission{intent: res.Intent, plan: res.Plan, source: res.Source}:
	default:
		s.metrics.prefetchDropped.Inc()
		s.log.Warn("prefetch queue full, plan not prefetched", "plan_id", res.Plan.PlanID)
	}
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
