package api

import (
	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
)

// routes registers every route of the planner surface in one place.
func (s *Server) routes() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.HandleOPTIONS = false

	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.healthz)
	r.GET("/metrics", s.metricsHandler)
	r.POST("/v1/prefetch-plan", s.plan)
	r.POST("/v2/prefetch-plan", s.plan)
	r.POST("/v1/build-timelines", s.timelines)
	r.GET("/v1/prefetch/sessions/{plan_id}", s.session)

	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusNotFound, "no route for "+string(ctx.Path()))
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on "+string(ctx.Path()))
	}
	r.PanicHandler = s.panicked
	return r
}
