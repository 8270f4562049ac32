package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Request errors of this surface.
var (
	errUnsupportedMedia = errors.New("unsupported media type")
	errBodyTooLarge     = errors.New("request body too large")
	errMalformed        = errors.New("malformed JSON")
	errWrongTypes       = errors.New("JSON does not match the expected shape")
	errUnauthorized     = errors.New("unauthorized")
	errNotStoring       = errors.New("this service is not currently storing build timelines")
)

// statusOf maps every error a handler can see to its HTTP status, the one
// place where errors become statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnauthorized):
		return fasthttp.StatusUnauthorized
	case errors.Is(err, errNotStoring):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, errUnsupportedMedia):
		return fasthttp.StatusUnsupportedMediaType
	case errors.Is(err, errBodyTooLarge):
		return fasthttp.StatusRequestEntityTooLarge
	case errors.Is(err, errWrongTypes):
		return fasthttp.StatusUnprocessableEntity
	case errors.Is(err, errMalformed):
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
		writeError(ctx, status, internalMsg)
		return
	}
	writeError(ctx, status, err.Error())
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
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, errBodyTooLarge.Error())
		return
	}
	writeError(ctx, fasthttp.StatusBadRequest, "bad request: "+err.Error())
}

func (s *Server) panicked(ctx *fasthttp.RequestCtx, v any) {
	s.log.Error("handler panicked", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
	writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
}

// decodeJSON checks the content type and size of a JSON body and decodes it
// into v, classifying failures as axum (and central) do: 415, 413, 400 for
// syntax, 422 for shape.
func decodeJSON(ctx *fasthttp.RequestCtx, limit int, v any) error {
	if !isJSON(ctx.Request.Header.ContentType()) {
		return fmt.Errorf("%w: want Content-Type application/json", errUnsupportedMedia)
	}
	body := ctx.PostBody()
	if len(body) > limit {
		return fmt.Errorf("%w: %d bytes over the %d-byte limit", errBodyTooLarge, len(body), limit)
	}
	if err := json.Unmarshal(body, v); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || len(body) == 0 {
			return fmt.Errorf("%w: %w", errMalformed, err)
		}
		return fmt.Errorf("%w: %w", errWrongTypes, err)
	}
	return nil
}

// isJSON accepts application/json and application/*+json, with parameters.
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	mt := strings.ToLower(string(bytes.TrimSpace(ct)))
	sub, ok := strings.CutPrefix(mt, "application/")
	return ok && (sub == "json" || (len(sub) > len("+json") && strings.HasSuffix(sub, "+json")))
}
