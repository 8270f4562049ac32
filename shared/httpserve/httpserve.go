// Package httpserve is the fasthttp glue every HTTP surface shares (central's
// API, the sidecar's planner and S3 surfaces): routing with error answers in
// the surface's own shape, start and stop, and the limits that keep a
// server's memory bounded by its configuration whatever clients send.
//
// Request bodies are streamed (fasthttp's StreamRequestBody), so nothing is
// read before the route's handler asks for it with ReadBody or BodyReader.
// When a request's headers arrive, before any body byte is read, the server
// looks up its route and decides whether the body may be read at all: not
// when the route requires credentials the headers lack, not when the
// declared Content-Length is over the route's limit, and not when the route
// takes no body. The handler still runs and answers (its 401 or 413), but
// the body stays unread and the connection is closed after the answer (a
// small body is read and dropped first, so a client that sent it all still
// gets the answer).
// Bodies that are read count against one server-wide budget of bytes held
// in memory; a request that does not fit is answered 503 with Retry-After.
// Headers and bodies have read deadlines, connections are capped, and Stop
// ends within its context whatever clients do.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/fasthttp/router/radix"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Config configures a server.
type Config struct {
	// Name is sent as the Server header and names the surface in logs.
	Name string
	// Addr is the listen address for Start.
	Addr string
	// Namespace prefixes the metric names: <Namespace>_http_requests_refused_total.
	Namespace string
	// Surface, when set, is a constant "surface" label on the metrics, so
	// two surfaces of one binary can share a registry.
	Surface string
	Limits
}

// Limits bound what a server holds for its clients. Zero values take the
// defaults noted (WithDefaults).
type Limits struct {
	// HeaderTimeout bounds reading a request's headers, from the moment the
	// connection opens or, on a kept-alive one, from the request's first
	// byte. Default 10 s.
	HeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's body, from the end of its
	// headers. Default 30 s.
	BodyTimeout time.Duration
	// WriteTimeout bounds writing a response. Default 30 s.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection. Default 60 s.
	IdleTimeout time.Duration
	// MaxConns caps open connections; one more is answered 503 and closed.
	// Default 1024.
	MaxConns int
	// MaxInflightBodyBytes bounds the request-body bytes held in memory by
	// all requests together (ReadBody). Default 48 MiB. It must be at least
	// every route's MaxBodyBytes.
	MaxInflightBodyBytes int64
	// MaxHeaderBytes bounds a request's headers (fasthttp's read buffer);
	// larger ones are answered 431. Default 8 KiB.
	MaxHeaderBytes int
	// DrainTimeout bounds how long Stop lets requests being handled finish
	// before it closes every connection. Connections that are idle or still
	// sending a request are closed at once. Default 5 s; Stop's context can
	// only shorten it.
	DrainTimeout time.Duration
}

// defaultLimits are the defaults documented on Limits.
var defaultLimits = Limits{
	HeaderTimeout:        10 * time.Second,
	BodyTimeout:          30 * time.Second,
	WriteTimeout:         30 * time.Second,
	IdleTimeout:          60 * time.Second,
	MaxConns:             1024,
	MaxInflightBodyBytes: 48 << 20,
	MaxHeaderBytes:       8 << 10,
	DrainTimeout:         5 * time.Second,
}

// WithDefaults returns l with each zero (or negative) field taken from d: a
// surface applies its own defaults before the package's.
func (l Limits) WithDefaults(d Limits) Limits {
	or := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	or(&l.HeaderTimeout, d.HeaderTimeout)
	or(&l.BodyTimeout, d.BodyTimeout)
	or(&l.WriteTimeout, d.WriteTimeout)
	or(&l.IdleTimeout, d.IdleTimeout)
	or(&l.DrainTimeout, d.DrainTimeout)
	if l.MaxConns <= 0 {
		l.MaxConns = d.MaxConns
	}
	if l.MaxInflightBodyBytes <= 0 {
		l.MaxInflightBodyBytes = d.MaxInflightBodyBytes
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return l
}

// Route is one route of a surface.
type Route struct {
	Method  string // or router.MethodWild ("*") for any
	Path    string // a fasthttp/router pattern, e.g. /v1/sessions/{id}
	Handler fasthttp.RequestHandler
	// MaxBodyBytes is the largest body the route reads; 0 means it reads
	// none, and a body sent to it is never read.
	MaxBodyBytes int
	// Streamed marks a route whose handler streams its body (BodyReader)
	// instead of holding it (ReadBody), so MaxBodyBytes may exceed the
	// in-flight budget.
	Streamed bool
	// BodyTimeout, when set, replaces Config.BodyTimeout for this route
	// (a handler streaming large bodies may set its own idle deadlines).
	BodyTimeout time.Duration
	// Auth marks a route that requires credentials (Deps.Authorized): the
	// body of a request without them is never read.
	Auth bool
}

// Open is a route anyone may call that reads no body.
func Open(method, path string, h fasthttp.RequestHandler) Route {
	return Route{Method: method, Path: path, Handler: h}
}

// Guarded is a route that requires credentials and reads bodies of up to
// maxBody bytes.
func Guarded(method, path string, h fasthttp.RequestHandler, maxBody int) Route {
	return Route{Method: method, Path: path, Handler: h, MaxBodyBytes: maxBody, Auth: true}
}

// ErrorWriter answers a request with an error in the surface's shape: the
// requests the server refuses itself (transport errors, no route, wrong
// method, a handler panic). WriteJSONError writes kache's JSON shape.
type ErrorWriter func(ctx *fasthttp.RequestCtx, status int, msg string)

// Deps are a server's collaborators.
type Deps struct {
	Routes []Route
	// Errors writes the server's own error answers. Default WriteJSONError.
	Errors ErrorWriter
	// Authorized checks a request's credentials from its headers alone,
	// for routes with Auth set; nil accepts every request. See Bearer.
	Authorized func(h *fasthttp.RequestHeader) bool
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// OnServeError is called if serving fails after Start.
	OnServeError func(error)
}

// Server serves one surface.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	srv     *fasthttp.Server
	router  *router.Router
	byPath  []matcher
	budget  *budget
	refused *refusals
	conns   *connTracker

	// base is cancelled when Stop stops waiting for requests to finish.
	base       context.Context
	cancelBase context.CancelFunc
	// stopping closes each connection after its answer once Stop began
	// (fasthttp's CloseOnShutdown, without waiting for its goroutine).
	stopping atomic.Bool
	// lingering bounds the connections closeAfter reads a last body from.
	lingering chan struct{}

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
}

// matcher matches a request to a route from its headers alone.
type matcher struct {
	method string
	tree   *radix.Tree
	route  *Route
}

// New builds a server and registers its metrics; Start binds it.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Limits = cfg.Limits.WithDefaults(defaultLimits)
	if cfg.Namespace == "" {
		return nil, errors.New("create http server: no metrics namespace")
	}
	if deps.Registerer == nil {
		return nil, errors.New("create http server: no metrics registerer")
	}
	if deps.Errors == nil {
		deps.Errors = WriteJSONError
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	deps.Routes = slices.Clone(deps.Routes)
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        cfg,
		deps:       deps,
		log:        deps.Logger,
		budget:     &budget{limit: cfg.MaxInflightBodyBytes},
		conns:      newConnTracker(),
		base:       base,
		cancelBase: cancel,
		lingering:  make(chan struct{}, maxLingering),
	}
	maxBody := 1
	for i := range deps.Routes {
		rt := &deps.Routes[i]
		if rt.MaxBodyBytes < 0 || (!rt.Streamed && int64(rt.MaxBodyBytes) > cfg.MaxInflightBodyBytes) {
			return nil, fmt.Errorf("create http server: route %s %s: body limit %d is outside 0..%d (the in-flight body budget)",
				rt.Method, rt.Path, rt.MaxBodyBytes, cfg.MaxInflightBodyBytes)
		}
		maxBody = max(maxBody, rt.MaxBodyBytes)
		tree := radix.New()
		tree.Add(rt.Path, func(*fasthttp.RequestCtx) {})
		s.byPath = append(s.byPath, matcher{method: rt.Method, tree: tree, route: rt})
	}
	s.router = s.newRouter()
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		HeaderReceived:               s.headerReceived,
		ErrorHandler:                 s.transportError,
		ConnState:                    s.conns.setState,
		Name:                         cfg.Name,
		Concurrency:                  cfg.MaxConns,
		ReadBufferSize:               cfg.MaxHeaderBytes,
		ReadTimeout:                  cfg.HeaderTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		MaxRequestBodySize:           maxBody,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       slogPrinter{s.log},
	}
	s.refused = newRefusals(cfg, s.srv.GetRejectedConnectionsCount)
	for _, c := range []prometheus.Collector{s.refused, s.budget.gauge(cfg)} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("create http server: register metrics: %w", err)
		}
	}
	return s, nil
}

// routeKey is the user value under which a request's route is kept.
const routeKey = "httpserve.route"

func (s *Server) newRouter() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.HandleOPTIONS = false
	for i := range s.deps.Routes {
		rt := &s.deps.Routes[i]
		r.Handle(rt.Method, rt.Path, func(ctx *fasthttp.RequestCtx) {
			ctx.SetUserValue(routeKey, rt)
			rt.Handler(ctx)
		})
	}
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		s.deps.Errors(ctx, fasthttp.StatusNotFound, "no route for "+string(ctx.Path()))
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		s.deps.Errors(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on "+string(ctx.Path()))
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.log.Error("handler panicked", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
		s.deps.Errors(ctx, fasthttp.StatusInternalServerError, "internal error")
	}
	return r
}

// handle serves one request.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	s.conns.handling(ctx.Conn())
	s.router.Handler(ctx)
	if unread := ctx.Request.Header.Peek(unreadHeader); len(unread) > 0 {
		s.closeAfter(ctx, unread)
	} else if s.stopping.Load() {
		ctx.SetConnectionClose()
	}
}

// Lingering: how much of a body left unread is still read and dropped after
// the answer, for how long, and on how many connections at once.
const (
	lingerBytes   = 256 << 10
	lingerTimeout = time.Second
	maxLingering  = 64
)

// closeAfter closes the connection of a request whose body was left unread
// once the answer is sent. A small body is first read and dropped (up to
// lingerBytes, for up to lingerTimeout, as net/http does), so that a client
// that sends all of it before reading the answer gets the answer rather than
// a reset; a larger one, or one beyond maxLingering connections, is never
// read.
func (s *Server) closeAfter(ctx *fasthttp.RequestCtx, unread []byte) {
	ctx.SetConnectionClose()
	_, declared, _ := strings.Cut(string(unread), " ")
	n, _ := strconv.Atoi(declared)
	if n == 0 || n > lingerBytes {
		return
	}
	if n < 0 { // chunked
		n = lingerBytes
	}
	select {
	case s.lingering <- struct{}{}:
	default:
		return
	}
	// The answer is written by the hijack handler, which runs after this
	// handler returned, so it gets a copy rather than the RequestCtx.
	answer := []byte(ctx.Response.String())
	writeTimeout := s.cfg.WriteTimeout
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer func() { <-s.lingering }()
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := c.Write(answer); err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c, int64(n))
	})
}

// unreadHeader marks a request whose body is not to be read, with the
// reason and the declared length. Only headerReceived sets it; it removes
// one a client sent.
const unreadHeader = "X-Httpserve-Unread"

// Reasons a body stays unread.
const (
	unreadUnauthorized = "unauthorized"
	unreadTooLarge     = "too_large"
	unreadNoBody       = "no_body"
)

// headerReceived runs when a request's headers have arrived, before any of
// its body is read.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	h.Del(unreadHeader)
	rt := s.lookup(h)
	limit, timeout := 0, s.cfg.BodyTimeout
	if rt != nil {
		limit = rt.MaxBodyBytes
		if rt.BodyTimeout > 0 {
			timeout = rt.BodyTimeout
		}
	}
	declared := h.ContentLength()
	hasBody := declared > 0 || declared == -1 // -1: chunked
	switch {
	case rt != nil && rt.Auth && s.deps.Authorized != nil && !s.deps.Authorized(h):
		s.refused.inc(reasonUnauthorized)
		leaveUnread(h, unreadUnauthorized, declared)
	case !hasBody:
	case limit == 0:
		leaveUnread(h, unreadNoBody, declared)
	case declared > limit:
		s.refused.inc(reasonTooLarge)
		leaveUnread(h, unreadTooLarge, declared)
	}
	return fasthttp.RequestConfig{ReadTimeout: timeout, MaxRequestBodySize: max(limit, 1)}
}

// leaveUnread makes fasthttp read none of the body (a Content-Length of 0,
// no 100 Continue) and records why for the handler and ReadBody.
func leaveUnread(h *fasthttp.RequestHeader, reason string, declared int) {
	h.Set(unreadHeader, reason+" "+strconv.Itoa(declared))
	h.SetContentLength(0)
	h.Del(fasthttp.HeaderExpect)
}

// lookup finds the route of a request as the router will; nil when none
// matches. Overlapping patterns resolve to the first registered.
func (s *Server) lookup(h *fasthttp.RequestHeader) *Route {
	u := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(u)
	if err := u.Parse(h.Host(), h.RequestURI()); err != nil {
		return nil
	}
	path, method := string(u.PathOriginal()), string(h.Method())
	for _, m := range s.byPath {
		if m.method != method && m.method != router.MethodWild {
			continue
		}
		if handler, _ := m.tree.Get(path, nil); handler != nil {
			return m.route
		}
	}
	return nil
}

// Context is the context of the work handlers do for requests (fasthttp's
// RequestCtx is only cancelled at shutdown): Stop cancels it when it stops
// waiting for requests to finish, so handlers still blocked downstream give
// up before their connections are closed.
func (s *Server) Context() context.Context { return s.base }

// Serve serves on ln until Stop; tests hand it an in-memory listener.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(ln)
}

// Start binds the listener and serves in a goroutine the server owns. ctx is
// not kept.
func (s *Server) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.ln, s.done = ln, done
	s.mu.Unlock()
	s.log.Info("listening", "addr", ln.Addr().String(), "surface", s.cfg.Name)
	go func() {
		defer close(done)
		if err := s.srv.Serve(ln); err != nil {
			s.log.Error("stopped serving", "error", err)
			if s.deps.OnServeError != nil {
				s.deps.OnServeError(fmt.Errorf("serve %s: %w", s.cfg.Name, err))
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

// Stop stops accepting, closes the connections with no request being
// handled (idle, or still sending one, however slowly), lets the requests
// being handled finish for up to DrainTimeout, then cancels Context, closes
// every connection left and waits for serving to end, all within ctx.
// Stopping twice, or a server never started, is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.stopping.Store(true)
	shut := make(chan error, 1)
	go func() { shut <- s.srv.ShutdownWithContext(ctx) }()
	s.mu.Lock()
	ln, done := s.ln, s.done
	s.mu.Unlock()
	// Closing a connection that is idle, or still sending its request
	// (maybe never to finish), loses no answer.
	closed := s.conns.closeIdle()
	drain := time.NewTimer(s.cfg.DrainTimeout)
	defer drain.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	shutDone := false
waiting:
	for s.conns.busy() > 0 {
		select {
		case err = <-shut:
			shutDone = true
			break waiting
		case <-tick.C:
		case <-drain.C:
			s.log.Warn("drain timeout: closing connections whose requests are still being handled", "requests", s.conns.busy())
			break waiting
		case <-ctx.Done():
			break waiting
		}
	}
	s.cancelBase()
	if closed += s.conns.closeAll(); closed > 0 {
		s.log.Debug("closed connections at stop", "connections", closed)
	}
	if !shutDone {
		err = <-shut
	}
	if ln != nil {
		// Closed already, unless Start's goroutine had not yet handed it
		// to fasthttp; Serve then ends at once.
		_ = ln.Close()
	}
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("stop %s: %w", s.cfg.Name, ctx.Err())
		}
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", s.cfg.Name, err)
	}
	return nil
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// IsLoopback reports whether addr (host:port) binds only the loopback
// interface; an empty host or an unspecified address binds every one.
func IsLoopback(addr string) (bool, error) {
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
