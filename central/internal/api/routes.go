package api

import (
	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/httpserve"
)

// routes lists every route of central in one place, with the body each may
// read and whether it needs the bearer token.
func (s *Server) routes() []httpserve.Route {
	const get, post = fasthttp.MethodGet, fasthttp.MethodPost
	return []httpserve.Route{
		httpserve.Open(get, "/healthz", s.healthz),
		httpserve.Open(get, "/readyz", s.readyz),
		httpserve.Open(get, "/metrics", s.metrics),
		httpserve.Guarded(post, "/v1/prefetch-plan", s.plan, s.cfg.MaxBodyBytes),
		httpserve.Guarded(post, "/v2/prefetch-plan", s.plan, s.cfg.MaxBodyBytes),
		httpserve.Guarded(post, "/v1/manifests", s.manifests, s.cfg.MaxManifestBytes),
		httpserve.Guarded(post, "/v1/build-timelines", s.timelines, s.cfg.MaxTimelineBytes),
		httpserve.Guarded(post, "/v1/missing-keys", s.missingKeys, s.cfg.missingKeysBytes()),
	}
}
