package api

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/bufpool"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/exposition"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func (s *Server) health() wire.Health {
	return wire.Health{Status: "ok", Planner: s.deps.Planner.Name(), Version: s.cfg.Version, KacheCompat: buildinfo.KacheCompat}
}

func (s *Server) healthz(ctx *fasthttp.RequestCtx) {
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, s.health())
}

// readyz answers 503 with an empty body while not ready, as kache does.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	if !s.deps.Ready.Ready() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		return
	}
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, s.health())
}

func (s *Server) metrics(ctx *fasthttp.RequestCtx) {
	mfs, err := s.deps.Gatherer.Gather()
	if err != nil {
		// Gather returns what it could together with the error.
		s.log.Warn("gather metrics", "error", err)
	}
	body, err := exposition.Encode(mfs)
	if err != nil {
		s.fail(ctx, err, "encode metrics")
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType(exposition.ContentType)
	ctx.SetBody(body)
}

// authorize applies bearer auth; it writes the 401 and returns false when the
// request may not go on.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, msg string) bool {
	switch s.auth.Check(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)) {
	case bearer.Wrong:
		s.fail(ctx, fmt.Errorf("%w: invalid bearer token", errUnauthorized), "")
		return false
	case bearer.Missing:
		s.fail(ctx, fmt.Errorf("%w: %s", errUnauthorized, msg), "")
		return false
	}
	return true
}

// plan serves POST /v{1,2}/prefetch-plan (kache-protocol.md 2.2). Every
// answer the planner can give is a 200; problems become use_fallback.
func (s *Server) plan(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if !s.authorize(ctx, "missing bearer token") {
		s.deps.Metrics.ObservePlan(string(planner.OutcomeUnauthorized), time.Since(start), 0)
		return
	}
	if err := checkJSONType(ctx); err != nil {
		s.fail(ctx, err, "")
		return
	}
	err := s.http.ReadBody(ctx, func(body []byte) error { return s.answerPlan(ctx, start, body) })
	if err != nil {
		s.fail(ctx, err, "encode plan")
	}
}

// answerPlan answers a plan request from its body, which is only valid
// during the call.
func (s *Server) answerPlan(ctx *fasthttp.RequestCtx, start time.Time, body []byte) error {
	if !s.deps.Ready.Ready() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		s.deps.Metrics.ObservePlan(string(planner.OutcomeNotReady), time.Since(start), 0)
		return nil
	}
	key, cacheable := s.plans.key(body)
	if cacheable {
		if hit, ok := s.plans.get(key, body); ok {
			s.deps.Metrics.ObservePlanCache(true)
			head := wire.PrefetchPlan{PlanID: planID(start), Planner: s.deps.Planner.Name(), Disposition: hit.disposition}
			s.writePlan(ctx, &head, hit.tail)
			s.deps.Metrics.ObservePlan(string(hit.outcome), time.Since(start), hit.candidates)
			return nil
		}
	}
	var intent wire.BuildIntent
	if err := decodeIntent(body, &intent); err != nil {
		return err
	}
	s.deps.Metrics.ObservePlanCache(false)
	var plan wire.PrefetchPlan
	var outcome planner.Outcome
	var stamp *planner.Stamp
	var err error
	if cacheable {
		plan, outcome, stamp, err = s.deps.Planner.PlanTracked(&intent)
	} else {
		plan, outcome, err = s.deps.Planner.Plan(&intent)
	}
	if err != nil {
		s.log.Warn("planning failed, answering use_fallback", "error", err)
	}
	// The reply is encoded in one pooled buffer that then becomes the
	// response body (SwapBody), so it is not copied again.
	buf := bufpool.Get()
	defer bufpool.Put(buf)
	out, err := plan.AppendHead((*buf)[:0])
	if err != nil {
		return err
	}
	head := len(out)
	if out, err = plan.AppendTail(out); err != nil {
		return fmt.Errorf("encode plan: %w", err)
	}
	if cacheable && outcome != planner.OutcomePlanningError {
		s.plans.put(key, body, &cachedPlan{stamp: stamp, disposition: plan.Disposition, outcome: outcome,
			candidates: len(plan.Candidates), tail: bytes.Clone(out[head:])})
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	*buf = ctx.Response.SwapBody(out)[:0]
	s.deps.Metrics.ObservePlan(string(outcome), time.Since(start), len(plan.Candidates))
	return nil
}

// writePlan writes a plan's head and an encoded tail into fasthttp's own
// (pooled) body buffer.
func (s *Server) writePlan(ctx *fasthttp.RequestCtx, head *wire.PrefetchPlan, tail []byte) {
	buf := bufpool.Get()
	defer bufpool.Put(buf)
	b, err := head.AppendHead((*buf)[:0])
	if err != nil {
		s.fail(ctx, err, "encode plan")
		return
	}
	*buf = b
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Response.ResetBody()
	ctx.Response.AppendBody(b)
	ctx.Response.AppendBody(tail)
}

func planID(t time.Time) string {
	return "plan-" + strconv.FormatInt(t.UnixMilli(), 10)
}

// manifests serves POST /v1/manifests: one build manifest, stored atomically.
func (s *Server) manifests(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, "missing bearer token") {
		s.deps.Metrics.ObserveManifest("unauthorized", 0)
		return
	}
	if !s.deps.Ready.Ready() {
		s.deps.Metrics.ObserveManifest("not_ready", 0)
		s.fail(ctx, fmt.Errorf("%w: this replica is not storing manifests", errNotReady), "")
		return
	}
	var m wire.BuildManifest
	if err := s.decodeJSON(ctx, &m); err != nil {
		s.deps.Metrics.ObserveManifest(ingestOutcome(err), 0)
		s.fail(ctx, err, "")
		return
	}
	res, err := s.deps.Ingester.IngestManifest(&m)
	if err != nil {
		s.deps.Metrics.ObserveManifest(ingestOutcome(err), 0)
		s.fail(ctx, err, "storing the manifest failed")
		return
	}
	s.deps.Metrics.ObserveManifest("inserted", res.Stored)
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, res)
}

// timelines serves POST /v1/build-timelines (kache-protocol.md 7).
func (s *Server) timelines(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, "build timelines need the service's credentials") {
		s.deps.Metrics.ObserveTimeline("unauthorized")
		return
	}
	if !s.deps.Ready.Ready() {
		s.deps.Metrics.ObserveTimeline("not_ready")
		s.fail(ctx, fmt.Errorf("%w: this service is not currently storing build timelines", errNotReady), "")
		return
	}
	if err := reqbody.CheckZstd(ctx.Request.Header.Peek(fasthttp.HeaderContentEncoding), nil, 0); err != nil {
		s.deps.Metrics.ObserveTimeline(ingestOutcome(err))
		s.fail(ctx, err, "")
		return
	}
	var out store.TimelineOutcome
	err := s.http.ReadBody(ctx, func(body []byte) error {
		var err error
		out, err = s.deps.Ingester.IngestTimeline(body)
		return err
	})
	if err != nil {
		s.deps.Metrics.ObserveTimeline(ingestOutcome(err))
		s.fail(ctx, err, "storing the build timeline failed")
		return
	}
	s.deps.Metrics.ObserveTimeline(string(out))
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, wire.TimelineStored{Stored: string(out)})
}

// ingestOutcome labels a failed ingest for metrics.
func ingestOutcome(err error) string {
	switch statusOf(err) {
	case fasthttp.StatusRequestEntityTooLarge:
		return "too_large"
	case fasthttp.StatusUnsupportedMediaType:
		return "unsupported_encoding"
	case fasthttp.StatusServiceUnavailable:
		return "overloaded"
	case fasthttp.StatusRequestTimeout:
		return "timed_out"
	case fasthttp.StatusInternalServerError:
		return "store_error"
	default:
		return "bad_body"
	}
}
