package api

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Errors of this surface; request-body errors are reqbody's and httpserve's.
var (
	errUnauthorized = errors.New("unauthorized")
	errNotStoring   = errors.New("this service is not currently storing build timelines")
)

// statusOf maps every error a handler can see to its HTTP status, the one
// place where errors become statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnauthorized), errors.Is(err, httpserve.ErrUnauthorized):
		return fasthttp.StatusUnauthorized
	case errors.Is(err, errNotStoring), errors.Is(err, httpserve.ErrOverloaded):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, httpserve.ErrTimeout):
		return fasthttp.StatusRequestTimeout
	case errors.Is(err, reqbody.ErrUnsupportedMedia):
		return fasthttp.StatusUnsupportedMediaType
	case errors.Is(err, reqbody.ErrTooLarge):
		return fasthttp.StatusRequestEntityTooLarge
	case errors.Is(err, reqbody.ErrWrongShape):
		return fasthttp.StatusUnprocessableEntity
	case errors.Is(err, reqbody.ErrMalformed), errors.Is(err, httpserve.ErrIncomplete):
		return fasthttp.StatusBadRequest
	default:
		return fasthttp.StatusInternalServerError
	}
}

// fail writes err as the JSON error body with its status. Server-side errors
// are logged here and their detail is not sent.
func (s *Server) fail(ctx *fasthttp.RequestCtx, err error, internalMsg string) {
	status := statusOf(err)
	if status >= 500 && status != fasthttp.StatusServiceUnavailable {
		s.log.Error("request failed", "path", string(ctx.Path()), "error", err)
		httpserve.WriteJSONError(ctx, status, internalMsg)
		return
	}
	httpserve.WriteJSONError(ctx, status, err.Error())
}

// decodeIntent checks a plan request's content type from its headers, then
// reads its body under the route's limit and decodes it: kache's own
// intents without encoding/json's scans (wire.DecodePlainIntent), anything
// else with encoding/json.
func (s *Server) decodeIntent(ctx *fasthttp.RequestCtx, in *wire.BuildIntent) error {
	if err := reqbody.CheckJSON(ctx.Request.Header.ContentType(), nil, 0); err != nil {
		return err
	}
	return s.http.ReadBody(ctx, func(body []byte) error {
		if wire.DecodePlainIntent(body, in) {
			return nil
		}
		return reqbody.Unmarshal(body, in)
	})
}
