package api

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Errors raised by this package; request-body errors are reqbody's and
// domain packages raise their own.
var (
	errUnauthorized = errors.New("unauthorized")
	errNotReady     = errors.New("not ready")
)

// statusOf maps every error a handler can see to its HTTP status. It is the
// one place where errors become statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnauthorized):
		return fasthttp.StatusUnauthorized
	case errors.Is(err, errNotReady):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, reqbody.ErrUnsupportedMedia):
		return fasthttp.StatusUnsupportedMediaType
	case errors.Is(err, reqbody.ErrTooLarge), errors.Is(err, ingest.ErrTooLarge):
		return fasthttp.StatusRequestEntityTooLarge
	case errors.Is(err, reqbody.ErrWrongShape):
		return fasthttp.StatusUnprocessableEntity
	case errors.Is(err, reqbody.ErrMalformed), errors.Is(err, ingest.ErrInvalid), errors.Is(err, ingest.ErrEncoding):
		return fasthttp.StatusBadRequest
	default:
		return fasthttp.StatusInternalServerError
	}
}

// fail writes err as the JSON error body with its status. Server-side errors
// are logged here and their detail is not sent.
func (s *Server) fail(ctx *fasthttp.RequestCtx, err error, internalMsg string) int {
	status := statusOf(err)
	if status >= 500 {
		s.log.Error("request failed", "path", string(ctx.Path()), "error", err)
		writeError(ctx, status, internalMsg)
		return status
	}
	body := wire.Error{Error: err.Error()}
	var ve *ingest.ValidationError
	if errors.As(err, &ve) {
		body.Details = ve.Details
	}
	writeJSON(ctx, status, body)
	return status
}

func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	writeJSON(ctx, status, wire.Error{Error: msg})
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// transportError answers errors fasthttp meets before a handler runs, such as
// a body over the server-wide limit, with the same JSON shape.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, reqbody.ErrTooLarge.Error())
		return
	}
	writeError(ctx, fasthttp.StatusBadRequest, "bad request: "+err.Error())
}

func (s *Server) panicked(ctx *fasthttp.RequestCtx, v any) {
	s.log.Error("handler panicked", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
	writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
}

// decodeJSON checks a JSON request's content type and size and decodes its
// body into v (reqbody.DecodeJSON).
func decodeJSON(ctx *fasthttp.RequestCtx, limit int, v any) error {
	return reqbody.DecodeJSON(ctx.Request.Header.ContentType(), ctx.PostBody(), limit, v)
}
