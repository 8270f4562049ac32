package httpserve

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/bufpool"
	"github.com/kache-planner/kache-planner/shared/reqbody"
)

// chunkedStep is how much more of the budget a chunked body, whose length
// is not declared, reserves each time its buffer grows.
const chunkedStep = 64 << 10

// ReadBody reads the body of the request being served into a pooled buffer
// under its route's limit and the server's in-flight budget, calls use with
// it, and releases both when use returns: body must not be kept after that
// (copy what is kept). It returns use's error, or, without calling use:
//   - reqbody.ErrTooLarge: declared or read over the route's limit (413);
//   - ErrOverloaded: the budget has no room for it (503, Retry-After set);
//   - ErrTimeout: the body stalled past the body timeout (408);
//   - ErrIncomplete: the body ended early or is badly chunked (400);
//   - ErrUnauthorized: the route's credentials are missing (401).
//
// After a body left unread or read only in part, the connection is closed
// once the answer is sent (a small remainder is read and dropped first).
func (s *Server) ReadBody(ctx *fasthttp.RequestCtx, use func(body []byte) error) error {
	limit, err := s.admit(ctx)
	if err != nil {
		return err
	}
	stream := ctx.RequestBodyStream()
	if stream == nil {
		// Nothing streamed: no body, or one fasthttp already holds.
		body := ctx.Request.Body()
		if len(body) > limit {
			return s.tooLarge(ctx, limit)
		}
		return use(body)
	}
	declared := ctx.Request.Header.ContentLength()
	// Read all of a declared body, or up to one byte past the limit of a
	// chunked one, which is how its excess shows.
	want := limit + 1
	reserved := int64(min(chunkedStep, want))
	switch {
	case declared == 0:
		return use(nil)
	case declared > limit:
		return s.tooLarge(ctx, limit)
	case declared > 0:
		want, reserved = declared, int64(declared)
	}
	if !s.budget.tryAcquire(reserved) {
		return s.overloaded(ctx)
	}
	defer func() { s.budget.release(reserved) }()

	buf := bufpool.Get()
	b := (*buf)[:0]
	defer func() {
		*buf = b[:0]
		bufpool.Put(buf)
	}()
	if int64(cap(b)) < reserved {
		b = make([]byte, 0, reserved)
	}
	for len(b) < want {
		if int64(len(b)) == reserved {
			// Only a chunked body gets here: what it reserves of the
			// budget, and its buffer, grow as it arrives.
			grown := min(2*reserved, int64(want))
			if !s.budget.tryAcquire(grown - reserved) {
				return s.overloaded(ctx)
			}
			reserved = grown
			if int64(cap(b)) < grown {
				b = append(make([]byte, 0, grown), b...)
			}
		}
		n, rerr := stream.Read(b[len(b):min(int64(cap(b)), reserved)])
		b = b[:len(b)+n]
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return s.readFailed(ctx, rerr)
		}
	}
	switch {
	case declared > 0 && len(b) < declared:
		ctx.SetConnectionClose()
		return fmt.Errorf("%w: %d of %d bytes", ErrIncomplete, len(b), declared)
	case len(b) > limit:
		return s.tooLarge(ctx, limit)
	}
	return use(b)
}

// BodyReader returns the body of the request being served as a stream for
// a handler that does not hold it in memory (it writes it to disk or
// upstream), so it is not counted against the in-flight budget. Reads fail
// with reqbody.ErrTooLarge past the route's limit, ErrTimeout past the body
// timeout and ErrIncomplete on a broken body; the connection is then closed
// after the answer. The reader is valid until the handler returns.
func (s *Server) BodyReader(ctx *fasthttp.RequestCtx) (io.Reader, error) {
	limit, err := s.admit(ctx)
	if err != nil {
		return nil, err
	}
	stream := ctx.RequestBodyStream()
	if stream == nil || ctx.Request.Header.ContentLength() == 0 {
		return strings.NewReader(""), nil
	}
	return &limitedBody{s: s, ctx: ctx, r: stream, left: int64(limit)}, nil
}

// admit returns the route's body limit, or the error for a body that
// headerReceived left unread.
func (s *Server) admit(ctx *fasthttp.RequestCtx) (int, error) {
	limit := 0
	if rt, ok := ctx.UserValue(routeKey).(*Route); ok {
		limit = rt.MaxBodyBytes
	}
	unread := ctx.Request.Header.Peek(unreadHeader)
	if len(unread) == 0 {
		return limit, nil
	}
	reason, declared, _ := strings.Cut(string(unread), " ")
	switch reason {
	case unreadUnauthorized:
		return 0, ErrUnauthorized
	case unreadTooLarge:
		n, _ := strconv.Atoi(declared)
		return 0, fmt.Errorf("%w: %d bytes over the %d-byte limit", reqbody.ErrTooLarge, n, limit)
	default:
		return 0, fmt.Errorf("%w: this route takes no body", reqbody.ErrTooLarge)
	}
}

func (s *Server) tooLarge(ctx *fasthttp.RequestCtx, limit int) error {
	s.refused.inc(reasonTooLarge)
	ctx.SetConnectionClose()
	return fmt.Errorf("%w: over the %d-byte limit", reqbody.ErrTooLarge, limit)
}

// overloaded refuses a body the budget has no room for. What fasthttp has
// not read of it is dropped after the answer, up to 256 KiB, else the
// connection is closed.
func (s *Server) overloaded(ctx *fasthttp.RequestCtx) error {
	s.refused.inc(reasonOverloaded)
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfterSeconds)
	return ErrOverloaded
}

// readFailed classifies an error reading a body.
func (s *Server) readFailed(ctx *fasthttp.RequestCtx, err error) error {
	ctx.SetConnectionClose()
	if isTimeout(err) {
		s.refused.inc(reasonTimedOut)
		return ErrTimeout
	}
	return fmt.Errorf("%w: %w", ErrIncomplete, err)
}

// limitedBody is BodyReader's stream.
type limitedBody struct {
	s    *Server
	ctx  *fasthttp.RequestCtx
	r    io.Reader
	left int64
	err  error
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	switch {
	case l.left < 0:
		l.s.refused.inc(reasonTooLarge)
		l.ctx.SetConnectionClose()
		l.err = fmt.Errorf("%w: over the limit", reqbody.ErrTooLarge)
		return n + int(l.left), l.err
	case errors.Is(err, io.EOF):
		return n, io.EOF
	case err != nil:
		l.err = l.s.readFailed(l.ctx, err)
		return n, l.err
	}
	return n, nil
}

// budget bounds the request-body bytes held in memory by all requests; it
// never waits: what does not fit is refused.
type budget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *budget) gauge(cfg Config) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace:   cfg.Namespace,
		Subsystem:   "http",
		Name:        "request_body_bytes_in_flight",
		Help:        "Request-body bytes reserved in memory by requests being read or handled, out of the in-flight budget.",
		ConstLabels: constLabels(cfg),
	}, func() float64 { return float64(b.inUse()) })
}
