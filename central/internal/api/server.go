// Package api is central's HTTP surface on fasthttp: kache's plan, health and
// metrics routes plus the ingest routes. It is the only central package that
// imports fasthttp.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/central/internal/metrics"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Config configures the HTTP server.
type Config struct {
	Addr string
	// Token enables bearer auth on plan and ingest routes when non-blank.
	Token        string
	Version      string
	MaxBodyBytes int
	// MaxManifestBytes bounds POST /v1/manifests bodies.
	MaxManifestBytes int
	// MaxTimelineBytes bounds compressed POST /v1/build-timelines bodies.
	MaxTimelineBytes int
	// PlanCacheBytes bounds the cache of encoded plans; 0 disables it.
	PlanCacheBytes int
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
}

// Planner answers plan requests.
type Planner interface {
	Plan(intent *wire.BuildIntent) (wire.PrefetchPlan, planner.Outcome, error)
	Name() string
	// Generation changes whenever plans may change.
	Generation() uint64
}

// Ingester stores what builds report.
type Ingester interface {
	IngestManifest(m *wire.BuildManifest) (wire.IngestResult, error)
	IngestTimeline(body []byte) (store.TimelineOutcome, error)
}

// Readiness says whether this replica serves plans and accepts writes.
type Readiness interface {
	Ready() bool
}

// Deps are the server's collaborators.
type Deps struct {
	Planner  Planner
	Ingester Ingester
	Ready    Readiness
	Metrics  *metrics.Metrics
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
}

// Server is central's HTTP server.
type Server struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	auth  bearer.Checker
	plans *planCache
	srv   *fasthttp.Server

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
}

// New builds the server; Start binds it.
func New(cfg Config, deps Deps) (*Server, error) {
	if cfg.MaxBodyBytes <= 0 || cfg.MaxManifestBytes <= 0 || cfg.MaxTimelineBytes <= 0 {
		return nil, errors.New("create server: body limits must be positive")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, auth: bearer.New(cfg.Token), plans: newPlanCache(cfg.PlanCacheBytes)}
	s.srv = &fasthttp.Server{
		Handler:            s.routes().Handler,
		Name:               "kache-service",
		ReadTimeout:        cfg.ReadTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: max(cfg.MaxBodyBytes, cfg.MaxManifestBytes, cfg.MaxTimelineBytes),
		CloseOnShutdown:    true,
		ErrorHandler:       s.transportError,
		Logger:             slogPrinter{s.log},
	}
	return s, nil
}

// Serve serves on ln until Stop; tests hand it an in-memory listener.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(ln)
}

// Start binds the listener and serves in a goroutine owned by the server.
// onError is called if serving fails after start.
func (s *Server) Start(_ context.Context, onError func(error)) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.ln, s.done = ln, make(chan struct{})
	s.mu.Unlock()
	s.log.Info("listening", "addr", ln.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && onError != nil {
			onError(fmt.Errorf("serve http: %w", err))
		}
	}()
	return nil
}

// Addr is the bound address (after Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Stop shuts down gracefully within ctx and waits for the serve goroutine.
func (s *Server) Stop(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("stop http server: %w", ctx.Err())
		}
	}
	if err != nil {
		return fmt.Errorf("stop http server: %w", err)
	}
	return nil
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
