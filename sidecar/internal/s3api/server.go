// Package s3api is the sidecar's S3 surface: the endpoint kache (or any S3
// client) is pointed at as KACHE_S3_ENDPOINT. It answers path-style S3
// requests signed with the sidecar's local credentials: reads of packs and
// entry manifests from the local store (joining a prefetch in flight, or
// fetching a miss once and keeping it), everything else passed through to
// the real bucket and re-signed with the bucket's credentials. Writes go
// upstream before they are acknowledged, are kept locally too, and what they
// teach is reported to central.
//
// It is the only sidecar package that speaks S3 over fasthttp; signatures
// and body verification are sigv4's, the bucket is s3source's.
package s3api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/sigv4"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// ErrInsecureBind is returned by New for a non-loopback address unless
// AllowRemote is set.
var ErrInsecureBind = errors.New("non-loopback S3 listen address without --s3-allow-remote")

// Config configures the surface. Zero values take the defaults noted.
type Config struct {
	// Addr is the listen address. Default 127.0.0.1:7071.
	Addr string
	// AllowRemote permits a non-loopback Addr (every request is still
	// SigV4-verified).
	AllowRemote bool
	// Bucket is the only bucket name the surface answers for (the
	// upstream bucket's name, so clients need no other change).
	Bucket string
	// Region is reported by GetBucketLocation. Default us-east-1.
	Region string
	// Prefix is kache's key prefix, normalised ("artifacts").
	Prefix string
	// AccessKey and SecretKey are the local credentials clients sign with.
	AccessKey string
	SecretKey string
	// Now is the clock request dates are checked against (S3's 15 minutes
	// of skew, presigned URLs' expiry); nil means time.Now. Durations of
	// requests are measured on the host's clock whatever it is.
	Now func() time.Time
	// MaxObjectBytes bounds one PUT or part. Default 5 GiB, S3's.
	MaxObjectBytes int64
	// MaxReportBytes bounds a `_manifests/` object kept in memory to be
	// forwarded to central. Default 16 MiB; larger ones are only stored.
	MaxReportBytes int64
	// MaxXMLBytes bounds a CompleteMultipartUpload body. Default 1 MiB.
	MaxXMLBytes int64
	// DemandTimeout bounds waiting for an object to land in the store.
	// Default 5 min.
	DemandTimeout time.Duration
	// UpstreamTimeout bounds one pass-through request. Default 15 min.
	UpstreamTimeout time.Duration
	// BodyIdleTimeout drops a client that sends no body byte for this
	// long. Default 30 s (kache's own read inactivity timeout).
	BodyIdleTimeout time.Duration
	// Limits are the HTTP layer's; the S3 surface's defaults are 30 s for
	// headers, 15 min to write a response, 256 connections and 16 KiB of
	// headers. A body has no deadline as a whole (a 5 GiB upload takes its
	// time) but must make progress every BodyIdleTimeout.
	Limits httpserve.Limits
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:7071"
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.MaxObjectBytes <= 0 {
		c.MaxObjectBytes = 5 << 30
	}
	if c.MaxReportBytes <= 0 {
		c.MaxReportBytes = 16 << 20
	}
	if c.MaxXMLBytes <= 0 {
		c.MaxXMLBytes = 1 << 20
	}
	def(&c.DemandTimeout, 5*time.Minute)
	def(&c.UpstreamTimeout, 15*time.Minute)
	def(&c.BodyIdleTimeout, 30*time.Second)
	c.Limits = c.Limits.WithDefaults(httpserve.Limits{
		HeaderTimeout: 30 * time.Second,
		WriteTimeout:  15 * time.Minute,
		IdleTimeout:   90 * time.Second,
		MaxConns:      256,
		// Only CompleteMultipartUpload bodies are held (MaxXMLBytes each).
		MaxInflightBodyBytes: 16 << 20,
		MaxHeaderBytes:       16 << 10,
	})
	return c
}

// Upstream is the real bucket (s3source.Bucket).
type Upstream interface {
	Get(ctx context.Context, key string, o s3source.GetOptions) (io.ReadCloser, s3source.ObjectInfo, error)
	Head(ctx context.Context, key string, o s3source.GetOptions) (s3source.ObjectInfo, error)
	Put(ctx context.Context, key string, body io.Reader, size int64, opt s3source.PutOptions) (s3source.PutResult, error)
	Delete(ctx context.Context, key string) error
	ListV2(ctx context.Context, p s3source.ListParams) (s3source.ListResult, error)
	ListV1(ctx context.Context, p s3source.ListV1Params) (s3source.ListV1Result, error)
	CreateMultipart(ctx context.Context, key string, opt s3source.PutOptions) (string, error)
	UploadPart(ctx context.Context, key, uploadID string, part int, body io.Reader, size int64, md5b64 string) (string, error)
	CompleteMultipart(ctx context.Context, key, uploadID string, parts []s3source.CompletedPart) (s3source.PutResult, error)
	AbortMultipart(ctx context.Context, key, uploadID string) error
	ListParts(ctx context.Context, key, uploadID string, marker, max int) (s3source.PartsResult, error)
}

// Demander gets an object into the local store (prefetch.Engine): at once
// when it is there, by joining a download in flight, or by fetching it. It
// also records the read as the build's demand for the prefetch sessions.
type Demander interface {
	Demand(ctx context.Context, r store.Ref) error
}

// Reporter receives what uploads teach, for central. Its methods must not
// block.
type Reporter interface {
	// ManifestPut is an acknowledged PUT under `{prefix}/_manifests/`; rel
	// is the key below that.
	ManifestPut(rel string, body []byte)
	// Pack returns an observer that a pack's bytes are teed into as they
	// stream to the bucket.
	Pack() PackObserver
}

// PackObserver reads what it needs of a pack from its bytes in passing.
// Write must not fail the upload: it returns len(p), nil.
type PackObserver interface {
	io.Writer
	// Done says the bucket acknowledged the pack of packBytes bytes stored
	// as crate's entry cacheKey (its object key); Abort that it did not.
	// Exactly one of them is called.
	Done(packBytes int64, crate, cacheKey string)
	Abort()
}

// Deps are the surface's collaborators; Reporter and OnServeError may be nil.
type Deps struct {
	Upstream   Upstream
	Store      *store.Store
	Engine     Demander
	Reporter   Reporter
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// OnServeError is called if serving fails after Start.
	OnServeError func(error)
}

// Server is the S3 surface.
type Server struct {
	cfg     Config
	up      Upstream
	st      *store.Store
	eng     Demander
	rep     Reporter
	log     *slog.Logger
	auth    *sigv4.Verifier
	metrics *metrics
	http    *httpserve.Server

	// base is the context of upstream work, ended by Stop.
	base    context.Context
	reqSeq  atomic.Uint64
	reqBase string
}

// New builds the surface and registers its metrics; Start binds it.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.withDefaults()
	switch {
	case deps.Upstream == nil || deps.Store == nil || deps.Engine == nil:
		return nil, errors.New("create S3 surface: needs the bucket, the store and the prefetch engine")
	case cfg.Bucket == "":
		return nil, errors.New("create S3 surface: no bucket name")
	case deps.Registerer == nil:
		return nil, errors.New("create S3 surface: no metrics registry")
	}
	v, err := sigv4.New(sigv4.Config{AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("create S3 surface: %w", err)
	}
	if !cfg.AllowRemote {
		loopback, err := httpserve.IsLoopback(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("create S3 surface: %w", err)
		}
		if !loopback {
			return nil, fmt.Errorf("create S3 surface on %s: %w", cfg.Addr, ErrInsecureBind)
		}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("create S3 surface: %w", err)
	}
	seed := time.Now().UnixNano()
	s := &Server{
		cfg: cfg, up: deps.Upstream, st: deps.Store, eng: deps.Engine, rep: deps.Reporter,
		log: deps.Logger.With("component", "s3_api"), auth: v, metrics: m,
		reqBase: strings.ToUpper(strconv.FormatUint(uint64(seed)&0xffffffff, 16)),
	}
	// Every path is an object or a bucket: one streamed route takes them
	// all, and the handler reads a body only after SigV4 passed.
	all := httpserve.Route{Method: "*", Path: "/{path:*}", Handler: s.handle, MaxBodyBytes: int(cfg.MaxObjectBytes),
		Streamed: true, BodyTimeout: cfg.UpstreamTimeout}
	root := httpserve.Route{Method: "*", Path: "/", Handler: s.handle}
	hs, err := httpserve.New(httpserve.Config{Name: "kache-sidecar-s3", Addr: cfg.Addr, Namespace: "kache_sidecar", Surface: "s3", Limits: cfg.Limits},
		httpserve.Deps{Routes: []httpserve.Route{root, all}, Errors: s.httpError, Registerer: deps.Registerer,
			Logger: s.log, OnServeError: deps.OnServeError})
	if err != nil {
		return nil, fmt.Errorf("create S3 surface: %w", err)
	}
	s.http, s.base = hs, hs.Context()
	return s, nil
}

// Serve serves on ln until Stop; tests hand it an in-memory listener.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// Start binds the listener and serves in a goroutine the server owns.
func (s *Server) Start(ctx context.Context) error {
	if err := s.http.Start(ctx); err != nil {
		return err
	}
	s.log.Info("S3 surface listening", "addr", s.http.Addr(), "bucket", s.cfg.Bucket, "prefix", s.cfg.Prefix)
	return nil
}

// Addr is the bound address after Start.
func (s *Server) Addr() string { return s.http.Addr() }

// Stop shuts down within ctx: no new requests, requests in flight given
// the HTTP layer's drain time, then upstream work cancelled.
func (s *Server) Stop(ctx context.Context) error { return s.http.Stop(ctx) }

func (s *Server) requestID() string {
	return s.reqBase + strconv.FormatUint(s.reqSeq.Add(1), 16)
}
