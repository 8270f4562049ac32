package api

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Errors raised by this package; request-body errors are reqbody's and
// httpserve's, and domain packages raise their own.
var (
	errUnauthorized = errors.New("unauthorized")
	errNotReady     = errors.New("not ready")
)

// statusOf maps every error a handler can see to its HTTP status. It is the
// one place where errors become statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnauthorized), errors.Is(err, httpserve.ErrUnauthorized):
		return fasthttp.StatusUnauthorized
	case errors.Is(err, errNotReady), errors.Is(err, httpserve.ErrOverloaded):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, httpserve.ErrTimeout):
		return fasthttp.StatusRequestTimeout
	case errors.Is(err, reqbody.ErrUnsupportedMedia):
		return fasthttp.StatusUnsupportedMediaType
	case errors.Is(err, reqbody.ErrTooLarge), errors.Is(err, ingest.ErrTooLarge):
		return fasthttp.StatusRequestEntityTooLarge
	case errors.Is(err, reqbody.ErrWrongShape):
		return fasthttp.StatusUnprocessableEntity
	case errors.Is(err, reqbody.ErrMalformed), errors.Is(err, ingest.ErrInvalid), errors.Is(err, ingest.ErrEncoding),
		errors.Is(err, httpserve.ErrIncomplete):
		return fasthttp.StatusBadRequest
	default:
		return fasthttp.StatusInternalServerError
	}
}

// fail writes err as the JSON error body with its status. Server-side errors
// are logged here and their detail is not sent.
func (s *Server) fail(ctx *fasthttp.RequestCtx, err error, internalMsg string) int {
	status := statusOf(err)
	if status >= 500 && status != fasthttp.StatusServiceUnavailable {
		s.log.Error("request failed", "path", string(ctx.Path()), "error", err)
		httpserve.WriteJSONError(ctx, status, internalMsg)
		return status
	}
	body := wire.Error{Error: err.Error()}
	var ve *ingest.ValidationError
	if errors.As(err, &ve) {
		body.Details = ve.Details
	}
	httpserve.WriteJSON(ctx, status, body)
	return status
}

// checkJSONType checks a JSON request's content type from its headers,
// before its body is read (reqbody.CheckJSON with no body).
func checkJSONType(ctx *fasthttp.RequestCtx) error {
	return reqbody.CheckJSON(ctx.Request.Header.ContentType(), nil, 0)
}

// decodeJSON checks a JSON request's content type, then reads its body
// under the route's limit and decodes it into v.
func (s *Server) decodeJSON(ctx *fasthttp.RequestCtx, v any) error {
	if err := checkJSONType(ctx); err != nil {
		return err
	}
	return s.http.ReadBody(ctx, func(body []byte) error { return reqbody.Unmarshal(body, v) })
}
