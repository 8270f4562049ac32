// Package api is central's HTTP surface on fasthttp: kache's plan, health and
// metrics routes plus the ingest routes. It is the only central package that
// imports fasthttp; serving, routing and the request limits are
// shared/httpserve's.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/central/internal/metrics"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/httpserve"
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
	// MaxMissingKeysBytes bounds POST /v1/missing-keys bodies. Default
	// 64 KiB.
	MaxMissingKeysBytes int
	// Limits bound what the server holds for its clients; zero fields take
	// httpserve's defaults.
	Limits httpserve.Limits
}

// Planner answers plan requests.
type Planner interface {
	Plan(intent *wire.BuildIntent) (wire.PrefetchPlan, planner.Outcome, error)
	// PlanTracked is Plan, also returning the stamp that says how long the
	// plan stays the answer to the same intent.
	PlanTracked(intent *wire.BuildIntent) (wire.PrefetchPlan, planner.Outcome, *planner.Stamp, error)
	Name() string
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
	// Missing takes runners' reports of keys the bucket does not have;
	// nil refuses them.
	Missing MissingReporter
	Metrics *metrics.Metrics
	// Registerer takes the HTTP layer's own metrics; Gatherer serves /metrics.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
}

// Server is central's HTTP server.
type Server struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	auth  bearer.Checker
	plans *planCache
	http  *httpserve.Server

	onError atomic.Pointer[func(error)]
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
	h, err := httpserve.New(httpserve.Config{
		Name:      "kache-service",
		Addr:      cfg.Addr,
		Namespace: "kache_planner",
		Limits:    cfg.Limits,
	}, httpserve.Deps{
		Routes:     s.routes(),
		Authorized: httpserve.Bearer(s.auth),
		Registerer: deps.Registerer,
		Logger:     s.log,
		OnServeError: func(err error) {
			if f := s.onError.Load(); f != nil {
				(*f)(err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create server: %w", err)
	}
	s.http = h
	return s, nil
}

// Serve serves on ln until Stop; tests hand it an in-memory listener.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(ln)
}

// Start binds the listener and serves in a goroutine owned by the server.
// onError is called if serving fails after start.
func (s *Server) Start(ctx context.Context, onError func(error)) error {
	if onError != nil {
		s.onError.Store(&onError)
	}
	return s.http.Start(ctx)
}

// Addr is the bound address (after Start).
func (s *Server) Addr() string { return s.http.Addr() }

// Stop shuts down within ctx: requests being handled finish, stalled and
// idle connections are closed (httpserve.Server.Stop).
func (s *Server) Stop(ctx context.Context) error { return s.http.Stop(ctx) }
