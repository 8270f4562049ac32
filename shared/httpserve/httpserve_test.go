package httpserve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// The ignored goroutines are fasthttp's idle-worker cleaners, which end on
// their own tick after Shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("time.Sleep"))
}

const (
	token     = "tok"
	bodyLimit = 64 << 10
)

// statusOf is what a surface's statusOf does with this package's errors.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return fasthttp.StatusUnauthorized
	case errors.Is(err, ErrOverloaded):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, ErrTimeout):
		return fasthttp.StatusRequestTimeout
	case errors.Is(err, reqbody.ErrTooLarge):
		return fasthttp.StatusRequestEntityTooLarge
	case errors.Is(err, ErrIncomplete):
		return fasthttp.StatusBadRequest
	default:
		return fasthttp.StatusInternalServerError
	}
}

type harness struct {
	t    *testing.T
	srv  *Server
	ln   *fasthttputil.InmemoryListener
	reg  *prometheus.Registry
	used atomic.Int64 // bodies handed to a handler
	// release unblocks /slow.
	release chan struct{}
}

func newHarness(t *testing.T, cfg Config, mod ...func(*Deps)) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), release: make(chan struct{})}
	if cfg.Namespace == "" {
		cfg.Namespace = "test"
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 5 * time.Second
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = 5 * time.Second
	}
	if cfg.MaxInflightBodyBytes == 0 {
		cfg.MaxInflightBodyBytes = 4 * bodyLimit
	}
	echo := func(ctx *fasthttp.RequestCtx) {
		err := h.srv.ReadBody(ctx, func(body []byte) error {
			h.used.Add(1)
			ctx.SetBodyString(strconv.Itoa(len(body)))
			return nil
		})
		if err != nil {
			WriteJSONError(ctx, statusOf(err), err.Error())
		}
	}
	stream := func(ctx *fasthttp.RequestCtx) {
		r, err := h.srv.BodyReader(ctx)
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, r)
			ctx.SetBodyString(strconv.FormatInt(n, 10))
		}
		if err != nil {
			WriteJSONError(ctx, statusOf(err), err.Error())
		}
	}
	deps := Deps{
		Routes: []Route{
			{Method: "GET", Path: "/healthz", Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }},
			{Method: "POST", Path: "/body", Handler: echo, MaxBodyBytes: bodyLimit, Auth: true},
			{Method: "PUT", Path: "/objects/{key:*}", Handler: stream, MaxBodyBytes: bodyLimit, Auth: true},
			{Method: "GET", Path: "/slow", Handler: func(ctx *fasthttp.RequestCtx) {
				<-h.release
				ctx.SetBodyString("done")
			}},
			{Method: "GET", Path: "/panic", Handler: func(*fasthttp.RequestCtx) { panic("boom") }},
			{Method: "*", Path: "/any/{p:*}", Handler: echo, MaxBodyBytes: 10, BodyTimeout: 200 * time.Millisecond},
		},
		Authorized: Bearer(bearer.New(token)),
		Registerer: h.reg,
	}
	for _, m := range mod {
		m(&deps)
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.ln = fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(h.ln)
	}()
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Error(err)
		}
		h.ln.Close()
		<-done
	})
	return h
}

// conn is one client connection speaking raw HTTP/1.1.
type conn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (h *harness) dial() *conn {
	h.t.Helper()
	c, err := h.ln.Dial()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return &conn{t: h.t, c: c, br: bufio.NewReader(c)}
}

func (c *conn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// response reads one response, failing if none arrives within wait.
func (c *conn) response(wait time.Duration) *fasthttp.Response {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(wait))
	resp := &fasthttp.Response{}
	if err := resp.Read(c.br); err != nil {
		c.t.Fatalf("no response within %s: %v", wait, err)
	}
	return resp
}

// closed reports whether the server closed the connection.
func (c *conn) closed() bool {
	_ = c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func post(path, auth string, contentLength int, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: test\r\n", path)
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", auth)
	}
	if contentLength >= 0 {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", contentLength)
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// refused reads <namespace>_http_requests_refused_total{reason}.
func (h *harness) refused(reason string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "test_http_requests_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	h.t.Fatalf("no refused series for %q", reason)
	return 0
}

func jsonError(t *testing.T, resp *fasthttp.Response) string {
	t.Helper()
	var e wire.Error
	if err := json.Unmarshal(resp.Body(), &e); err != nil || e.Error == "" {
		t.Fatalf("not a JSON error: %q", resp.Body())
	}
	return e.Error
}

// Requests whose body must not be read are answered from their headers
// alone: the clients below send headers and never a body byte, so an
// answer that waited for the body would only come at the 5 s body timeout.
func TestRefusedFromHeaders(t *testing.T) {
	tests := []struct {
		name    string
		request string
		status  int
		reason  string // the refused counter that moves, if any
		errMsg  string
	}{
		{name: "declared length over the route limit", request: post("/body", token, 15<<20),
			status: 413, reason: "too_large", errMsg: "request body too large: 15728640 bytes over the 65536-byte limit"},
		{name: "no token", request: post("/body", "", bodyLimit), status: 401, reason: "unauthorized"},
		{name: "wrong token", request: post("/body", "nope", bodyLimit), status: 401, reason: "unauthorized"},
		{name: "no token and over the limit", request: post("/body", "", 15<<20), status: 401, reason: "unauthorized"},
		{name: "over the limit with 100-continue", request: post("/body", token, 15<<20, "Expect: 100-continue"),
			status: 413, reason: "too_large"},
		{name: "streamed route over the limit", request: strings.Replace(post("/objects/a/b", token, 15<<20), "POST", "PUT", 1),
			status: 413, reason: "too_large"},
		{name: "any-method route over its limit", request: strings.Replace(post("/any/x/y", "", 11), "POST", "DELETE", 1),
			status: 413, reason: "too_large"},
		{name: "body on a route that takes none", request: post("/healthz", token, 1<<20), status: 405},
		{name: "body on no route", request: post("/nowhere", token, 1<<20), status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			c := h.dial()
			start := time.Now()
			c.send(tt.request)
			resp := c.response(3 * time.Second)
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("answered after %s, as if the body had been waited for", took)
			}
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), tt.status, resp.Body())
			}
			if msg := jsonError(t, resp); tt.errMsg != "" && msg != tt.errMsg {
				t.Errorf("error %q, want %q", msg, tt.errMsg)
			}
			if !resp.ConnectionClose() || !c.closed() {
				t.Error("connection left open with an unread body on it")
			}
			if h.used.Load() != 0 {
				t.Error("a handler got the body")
			}
			if tt.reason != "" && h.refused(tt.reason) != 1 {
				t.Errorf("refused{%s} = %v, want 1", tt.reason, h.refused(tt.reason))
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	chunked := func(chunks ...string) string {
		var b strings.Builder
		b.WriteString(post("/body", token, -1, "Transfer-Encoding: chunked"))
		for _, c := range chunks {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	big := strings.Repeat("x", 40<<10)
	tests := []struct {
		name    string
		request string
		status  int
		body    string
		reason  string
	}{
		{name: "declared length", request: post("/body", token, 5) + "hello", status: 200, body: "5"},
		{name: "empty", request: post("/body", token, 0), status: 200, body: "0"},
		{name: "at the limit", request: post("/body", token, bodyLimit) + strings.Repeat("y", bodyLimit), status: 200, body: strconv.Itoa(bodyLimit)},
		{name: "chunked", request: chunked("hel", "lo"), status: 200, body: "5"},
		{name: "chunked, growing", request: chunked(big, big[:20<<10]), status: 200, body: strconv.Itoa(60 << 10)},
		{name: "chunked over the limit", request: chunked(big, big), status: 413, reason: "too_large"},
		{name: "broken chunks", request: post("/body", token, -1, "Transfer-Encoding: chunked") + "zz\r\n", status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			c := h.dial()
			c.send(tt.request)
			resp := c.response(2 * time.Second)
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), tt.status, resp.Body())
			}
			if tt.body != "" && string(resp.Body()) != tt.body {
				t.Errorf("handler read %s bytes, want %s", resp.Body(), tt.body)
			}
			if tt.reason != "" && h.refused(tt.reason) != 1 {
				t.Errorf("refused{%s} = %v", tt.reason, h.refused(tt.reason))
			}
			if h.srv.budget.inUse() != 0 {
				t.Errorf("%d budget bytes not released", h.srv.budget.inUse())
			}
		})
	}
}

// A kept-alive connection serves the next request once a body was read.
func TestKeepAliveAfterBody(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.dial()
	for i := range 3 {
		c.send(post("/body", token, 3) + "abc")
		if resp := c.response(time.Second); resp.StatusCode() != 200 || resp.ConnectionClose() {
			t.Fatalf("request %d: %d close=%v", i, resp.StatusCode(), resp.ConnectionClose())
		}
	}
}

func TestBodyReader(t *testing.T) {
	put := func(n int) string {
		return strings.Replace(post("/objects/k", token, -1, "Transfer-Encoding: chunked"), "POST", "PUT", 1) +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", n, strings.Repeat("z", n))
	}
	tests := []struct {
		name   string
		n      int
		status int
	}{
		{name: "within the limit", n: bodyLimit, status: 200},
		{name: "over the limit", n: bodyLimit + 1, status: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			c := h.dial()
			c.send(put(tt.n))
			resp := c.response(2 * time.Second)
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), tt.status, resp.Body())
			}
			if tt.status == 200 && string(resp.Body()) != strconv.Itoa(tt.n) {
				t.Errorf("streamed %s bytes, want %d", resp.Body(), tt.n)
			}
		})
	}
}

// When the bodies in flight fill the budget, the next one is refused at
// once with 503 and Retry-After, and served again once there is room.
func TestBudgetFull(t *testing.T) {
	h := newHarness(t, Config{Limits: Limits{MaxInflightBodyBytes: bodyLimit}})
	holder := h.dial()
	holder.send(post("/body", token, 60000) + strings.Repeat("a", 20000))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for h.srv.budget.inUse() != 60000 {
		if ctx.Err() != nil {
			t.Fatalf("the first body never reserved its length: %d", h.srv.budget.inUse())
		}
		time.Sleep(time.Millisecond)
	}

	c := h.dial()
	start := time.Now()
	c.send(post("/body", token, 10000) + strings.Repeat("b", 10000))
	resp := c.response(3 * time.Second)
	if resp.StatusCode() != 503 || string(resp.Header.Peek("Retry-After")) != "1" || time.Since(start) > 2*time.Second {
		t.Fatalf("status %d, Retry-After %q after %s", resp.StatusCode(), resp.Header.Peek("Retry-After"), time.Since(start))
	}
	if msg := jsonError(t, resp); !strings.Contains(msg, "retry later") {
		t.Errorf("error %q", msg)
	}
	if h.refused("overloaded") != 1 || h.used.Load() != 0 {
		t.Fatalf("overloaded %v, bodies used %d", h.refused("overloaded"), h.used.Load())
	}

	holder.send(strings.Repeat("a", 40000))
	if resp := holder.response(time.Second); resp.StatusCode() != 200 || string(resp.Body()) != "60000" {
		t.Fatalf("holder: %d %s", resp.StatusCode(), resp.Body())
	}
	c = h.dial()
	c.send(post("/body", token, 10000) + strings.Repeat("b", 10000))
	if resp := c.response(time.Second); resp.StatusCode() != 200 {
		t.Fatalf("after the budget freed: %d", resp.StatusCode())
	}
}

// Clients that stall are answered 408 and dropped once their deadline
// passes, wherever they stall.
func TestStalledClientsDropped(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name string
		sent string
	}{
		{name: "nothing sent", sent: ""},
		{name: "half a header", sent: "POST /body HTTP/1.1\r\nHost: te"},
		{name: "body stalls before the handler", sent: post("/body", token, 100) + "0123456789"},
		{name: "body stalls in the handler", sent: post("/body", token, 60000) + strings.Repeat("a", 20000)},
		{name: "streamed body stalls", sent: strings.Replace(post("/objects/k", token, 60000), "POST", "PUT", 1) + strings.Repeat("a", 20000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Limits: Limits{HeaderTimeout: timeout, BodyTimeout: timeout}})
			c := h.dial()
			start := time.Now()
			if tt.sent != "" {
				c.send(tt.sent)
			}
			resp := c.response(timeout + 2*time.Second)
			took := time.Since(start)
			if resp.StatusCode() != 408 || took < timeout-50*time.Millisecond {
				t.Fatalf("status %d after %s", resp.StatusCode(), took)
			}
			jsonError(t, resp)
			if !c.closed() {
				t.Error("stalled connection left open")
			}
			if h.refused("timed_out") != 1 {
				t.Errorf("timed_out = %v", h.refused("timed_out"))
			}
			if h.srv.budget.inUse() != 0 {
				t.Errorf("%d budget bytes not released", h.srv.budget.inUse())
			}
		})
	}
}

// A route's own body timeout replaces the server's.
func TestRouteBodyTimeout(t *testing.T) {
	h := newHarness(t, Config{Limits: Limits{BodyTimeout: 10 * time.Second}})
	c := h.dial()
	start := time.Now()
	c.send(strings.Replace(post("/any/x", "", 10), "POST", "PUT", 1) + "abc")
	if resp := c.response(2 * time.Second); resp.StatusCode() != 408 || time.Since(start) > time.Second {
		t.Fatalf("status %d after %s", resp.StatusCode(), time.Since(start))
	}
}

// One connection over MaxConns is answered 503 and closed.
func TestMaxConns(t *testing.T) {
	h := newHarness(t, Config{Limits: Limits{MaxConns: 2}})
	for range 2 {
		h.dial().send("GET /healthz HTTP/1.1\r\nHost: te")
	}
	c := h.dial()
	resp := c.response(3 * time.Second)
	if resp.StatusCode() != 503 || !c.closed() {
		t.Fatalf("over MaxConns: %d", resp.StatusCode())
	}
	if h.refused("overloaded") != 1 {
		t.Errorf("overloaded = %v", h.refused("overloaded"))
	}
}

// Stop closes idle and stalled connections at once, lets a request being
// handled finish, and closes even those after DrainTimeout.
func TestStop(t *testing.T) {
	h := newHarness(t, Config{Limits: Limits{DrainTimeout: 3 * time.Second}})
	idle := h.dial()
	idle.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp := idle.response(time.Second); resp.StatusCode() != 200 {
		t.Fatal(resp.StatusCode())
	}
	// The answer reaches the client a moment before its connection is
	// marked idle again: wait for that, so that the busy connection waited
	// for below is the slow one.
	for h.srv.conns.busy() != 0 {
		time.Sleep(time.Millisecond)
	}
	stalled := h.dial()
	stalled.send("GET /healthz HTTP/1.1\r\nHost: te")
	slow := h.dial()
	slow.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
	for h.srv.conns.busy() != 1 {
		time.Sleep(time.Millisecond)
	}

	stopped := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- h.srv.Stop(ctx)
	}()
	if !idle.closed() || !stalled.closed() {
		t.Fatal("idle or stalled connection still open during stop")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("idle and stalled connections closed after %s, as if they had to drain", took)
	}
	close(h.release)
	if resp := slow.response(time.Second); resp.StatusCode() != 200 || string(resp.Body()) != "done" || !resp.ConnectionClose() {
		t.Fatalf("request in flight at stop: %d %q", resp.StatusCode(), resp.Body())
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

func TestStopAfterDrainTimeout(t *testing.T) {
	h := newHarness(t, Config{Limits: Limits{DrainTimeout: 200 * time.Millisecond}})
	stuck := h.dial()
	stuck.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
	for h.srv.conns.busy() != 1 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- h.srv.Stop(ctx)
	}()
	if !stuck.closed() {
		t.Fatal("connection of a stuck handler left open")
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("closed after %s, want the 200ms drain timeout", took)
	}
	if h.srv.Context().Err() == nil {
		t.Error("handlers' context not cancelled after the drain")
	}
	close(h.release) // the handler returns; serving can end
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// The server's own answers take the surface's error shape: here S3's XML.
func TestErrorWriter(t *testing.T) {
	xmlError := func(ctx *fasthttp.RequestCtx, status int, msg string) {
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/xml")
		ctx.SetBodyString("<Error><Message>" + msg + "</Message></Error>")
	}
	h := newHarness(t, Config{Limits: Limits{HeaderTimeout: 200 * time.Millisecond}}, func(d *Deps) { d.Errors = xmlError })
	tests := []struct {
		name    string
		request string
		status  int
	}{
		{name: "no route", request: "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", status: 404},
		{name: "wrong method", request: "DELETE /healthz HTTP/1.1\r\nHost: t\r\n\r\n", status: 405},
		{name: "panic", request: "GET /panic HTTP/1.1\r\nHost: t\r\n\r\n", status: 500},
		{name: "malformed request", request: "NOT HTTP\r\n\r\n", status: 400},
		{name: "headers too large", request: "GET /healthz HTTP/1.1\r\nX: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", status: 431},
		{name: "stalled headers", request: "GET /healthz HTTP/1.1\r\n", status: 408},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial()
			c.send(tt.request)
			resp := c.response(2 * time.Second)
			if resp.StatusCode() != tt.status || !bytes.HasPrefix(resp.Body(), []byte("<Error>")) {
				t.Fatalf("%d %q", resp.StatusCode(), resp.Body())
			}
		})
	}
}

func TestNew(t *testing.T) {
	route := func(limit int) []Route {
		return []Route{{Method: "POST", Path: "/x", Handler: func(*fasthttp.RequestCtx) {}, MaxBodyBytes: limit}}
	}
	tests := []struct {
		name string
		cfg  Config
		deps Deps
		ok   bool
	}{
		{name: "ok", cfg: Config{Namespace: "n", Limits: Limits{MaxInflightBodyBytes: 10}}, deps: Deps{Routes: route(10)}, ok: true},
		{name: "route limit over the budget", cfg: Config{Namespace: "n", Limits: Limits{MaxInflightBodyBytes: 10}}, deps: Deps{Routes: route(11)}},
		{name: "streamed route over the budget", cfg: Config{Namespace: "n", Limits: Limits{MaxInflightBodyBytes: 10}},
			deps: Deps{Routes: []Route{{Method: "PUT", Path: "/x", Handler: func(*fasthttp.RequestCtx) {}, MaxBodyBytes: 5 << 30, Streamed: true}}}, ok: true},
		{name: "no namespace", deps: Deps{Routes: route(10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.deps.Registerer = prometheus.NewRegistry()
			_, err := New(tt.cfg, tt.deps)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v", err)
			}
		})
	}
	t.Run("two surfaces on one registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for _, surface := range []string{"planner", "s3"} {
			if _, err := New(Config{Namespace: "n", Surface: surface}, Deps{Registerer: reg}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := New(Config{Namespace: "n", Surface: "s3"}, Deps{Registerer: reg}); err == nil {
			t.Fatal("the same surface registered twice")
		}
	})
}

// A client that sends a whole small body before reading the answer gets the
// answer, not a reset: the server drops the unread body before closing.
func TestRefusedClientsThatSendTheBody(t *testing.T) {
	h := newHarness(t, Config{})
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return h.ln.Dial() }}
	tests := []struct {
		name   string
		auth   string
		size   int
		status int
	}{
		{name: "over the limit", auth: token, size: bodyLimit + 1, status: 413},
		{name: "no token", size: bodyLimit, status: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 20 {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI("http://test/body")
				req.Header.SetMethod("POST")
				if tt.auth != "" {
					req.Header.Set("Authorization", "Bearer "+tt.auth)
				}
				req.SetBody(bytes.Repeat([]byte("x"), tt.size))
				err := client.Do(req, resp)
				status := resp.StatusCode()
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
				if err != nil || status != tt.status {
					t.Fatalf("round %d: %d %v", i, status, err)
				}
			}
		})
	}
}

func TestStartStopTCP(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Addr: "127.0.0.1:0", Namespace: "n"}, Deps{Registerer: reg,
		Routes: []Route{{Method: "GET", Path: "/healthz", Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
	var resp fasthttp.Response
	br := bufio.NewReader(c)
	if err := resp.Read(br); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("%v %d", err, resp.StatusCode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("stop with a kept-alive connection took %s", took)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("kept-alive connection still open after stop")
	}
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("second stop: %v", err)
	}
}
