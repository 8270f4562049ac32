package httpserve

import (
	"encoding/json"
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Errors ReadBody and BodyReader return besides reqbody.ErrTooLarge (a body
// over the route's limit, 413). Each surface maps them to statuses in its
// own statusOf.
var (
	// ErrOverloaded: the in-flight body budget is full (503). ReadBody has
	// set Retry-After on the response.
	ErrOverloaded = errors.New("server busy: too many request bodies in flight, retry later")
	// ErrTimeout: the body did not arrive within the body timeout (408).
	ErrTimeout = errors.New("request body timed out")
	// ErrIncomplete: the body ended early or its chunked framing is broken
	// (400).
	ErrIncomplete = errors.New("request body incomplete")
	// ErrUnauthorized: the route requires credentials the request lacks, so
	// its body was not read (401). Handlers check credentials first and
	// should not see it.
	ErrUnauthorized = errors.New("unauthorized")
)

// retryAfterSeconds is sent with a 503 for a full body budget.
const retryAfterSeconds = "1"

// WriteJSON writes v as a JSON body with status.
func WriteJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// WriteJSONError writes kache's JSON error shape, {"error": msg}: the
// ErrorWriter of the planner surfaces.
func WriteJSONError(ctx *fasthttp.RequestCtx, status int, msg string) {
	WriteJSON(ctx, status, wire.Error{Error: msg})
}

// Bearer returns a Deps.Authorized that accepts requests carrying c's
// token (kache-protocol.md 2.3).
func Bearer(c bearer.Checker) func(h *fasthttp.RequestHeader) bool {
	return func(h *fasthttp.RequestHeader) bool {
		return c.Check(h.Peek(fasthttp.HeaderAuthorization)) == bearer.OK
	}
}

// transportError answers the errors fasthttp meets outside a handler:
// headers that are malformed, too large or too slow, and a body that
// stalls before the handler runs. The connection is closed after it.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case isTimeout(err):
		s.refused.inc(reasonTimedOut)
		s.deps.Errors(ctx, fasthttp.StatusRequestTimeout, "request timeout")
	case errors.As(err, &small):
		s.refused.inc(reasonTooLarge)
		s.deps.Errors(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.refused.inc(reasonTooLarge)
		s.deps.Errors(ctx, fasthttp.StatusRequestEntityTooLarge, reqbody.ErrTooLarge.Error())
	default:
		// SecureErrorLogMessage keeps request contents out of err.
		s.deps.Errors(ctx, fasthttp.StatusBadRequest, "bad request: "+err.Error())
	}
}

// isTimeout reports a read deadline passing (net.Error's Timeout, also on
// fasthttputil's in-memory connections).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
