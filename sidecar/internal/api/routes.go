package api

import (
	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/httpserve"
)

// routes lists every route of the planner surface in one place, with the
// body each may read and whether it needs the bearer token.
func (s *Server) routes() []httpserve.Route {
	const get, post = fasthttp.MethodGet, fasthttp.MethodPost
	return []httpserve.Route{
		httpserve.Open(get, "/healthz", s.healthz),
		httpserve.Open(get, "/readyz", s.healthz),
		httpserve.Open(get, "/metrics", s.metricsHandler),
		httpserve.Guarded(post, "/v1/prefetch-plan", s.plan, s.cfg.MaxBodyBytes),
		httpserve.Guarded(post, "/v2/prefetch-plan", s.plan, s.cfg.MaxBodyBytes),
		httpserve.Guarded(post, "/v1/build-timelines", s.timelines, s.cfg.MaxTimelineBytes),
		httpserve.Open(get, "/v1/prefetch/sessions/{plan_id}", s.session),
	}
}
