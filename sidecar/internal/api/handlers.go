package api

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/bearer"
	"github.com/kache-planner/kache-planner/shared/bufpool"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/exposition"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
)

// session reports the prefetch progress of an answered plan.
func (s *Server) session(ctx *fasthttp.RequestCtx) {
	id, _ := ctx.UserValue("plan_id").(string)
	if s.deps.Sessions == nil {
		// Distinct from "no such session": waiting will not help.
		httpserve.WriteJSONError(ctx, fasthttp.StatusNotImplemented, "this sidecar does not prefetch (no bucket configured)")
		return
	}
	p, ok := s.deps.Sessions.SessionProgress(id)
	if !ok {
		httpserve.WriteJSONError(ctx, fasthttp.StatusNotFound, "no prefetch session for plan "+id)
		return
	}
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, p)
}

func (s *Server) healthz(ctx *fasthttp.RequestCtx) {
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, wire.Health{Status: "ok", Planner: s.deps.Planner.Name(), Version: s.cfg.Version, KacheCompat: buildinfo.KacheCompat})
}

func (s *Server) metricsHandler(ctx *fasthttp.RequestCtx) {
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
// request may not go on. Like central, a wrong token says so.
func (s *Server) authorize(ctx *fasthttp.RequestCtx) bool {
	switch s.auth.Check(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)) {
	case bearer.Wrong:
		s.fail(ctx, fmt.Errorf("%w: invalid bearer token", errUnauthorized), "")
		return false
	case bearer.Missing:
		s.fail(ctx, fmt.Errorf("%w: missing bearer token", errUnauthorized), "")
		return false
	}
	return true
}

// plan serves POST /v{1,2}/prefetch-plan. Every answer the planner gives is a
// 200 within its deadline; only a request kache would never send is refused.
// An execute plan is then queued for the prefetcher, off the answer path.
func (s *Server) plan(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if !s.authorize(ctx) {
		s.metrics.observe(outcomeUnauthorized, time.Since(start), 0)
		return
	}
	// json.Unmarshal copies every string, so the intent holds nothing of
	// the RequestCtx and may outlive the handler.
	var intent wire.BuildIntent
	if err := s.decodeIntent(ctx, &intent); err != nil {
		s.metrics.observe(outcomeRejected, time.Since(start), 0)
		s.fail(ctx, err, "")
		return
	}
	res := s.deps.Planner.Plan(s.base, &intent)
	if !res.Plan.Disposition.Valid() {
		// A planner bug must not cost kache more than a local plan.
		s.log.Error("planner returned an invalid disposition, answering use_fallback", "disposition", res.Plan.Disposition)
		res.Plan = wire.PrefetchPlan{Planner: s.deps.Planner.Name(), Disposition: wire.UseFallback}
		res.Source, res.Tail, res.Fingerprint = planner.SourceFallback, nil, ""
	}
	if res.Plan.Candidates == nil {
		res.Plan.Candidates = []wire.PrefetchCandidate{}
	}
	// Hints replay central's plan_id; a suffix keeps each answer's id
	// unique while still naming the plan it came from.
	res.Plan.PlanID = cmp.Or(res.Plan.PlanID, "plan") + "." + strconv.FormatUint(s.planSeq.Add(1), 10)
	buf := bufpool.Get()
	defer bufpool.Put(buf)
	// An answer served from hints comes with its tail encoded once for
	// every answer of the same hints: only the head, with this answer's
	// plan_id, is encoded here.
	var b []byte
	var err error
	if res.Tail != nil {
		b, err = res.Plan.AppendHead((*buf)[:0])
		b = append(b, res.Tail...)
	} else {
		b, err = res.Plan.AppendJSON((*buf)[:0])
	}
	if err != nil {
		s.metrics.observe(outcomeRejected, time.Since(start), 0)
		s.fail(ctx, fmt.Errorf("encode plan: %w", err), "encode plan")
		return
	}
	*buf = b
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(b) // SetBody copies into the response's own buffer.
	s.metrics.observe(string(res.Source), time.Since(start), len(res.Plan.Candidates))
	s.log.Debug("plan answered", "source", res.Source, "disposition", res.Plan.Disposition,
		"candidates", len(res.Plan.Candidates), "took", time.Since(start))
	s.submit(res)
}

// timelines serves POST /v1/build-timelines by relaying the compressed body
// to central unchanged, so newer kache clients pointed at the sidecar keep
// reporting. The checks central makes on the envelope are made here first
// (kache-protocol.md 7) so a bad body is not sent upstream; central's answer
// is passed back as is.
func (s *Server) timelines(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx) {
		s.metrics.timelines.WithLabelValues("unauthorized").Inc()
		return
	}
	if s.deps.Timelines == nil {
		s.metrics.timelines.WithLabelValues("not_configured").Inc()
		s.fail(ctx, errNotStoring, "")
		return
	}
	if err := reqbody.CheckZstd(ctx.Request.Header.Peek(fasthttp.HeaderContentEncoding), nil, 0); err != nil {
		s.metrics.timelines.WithLabelValues("unsupported_encoding").Inc()
		s.fail(ctx, err, "")
		return
	}
	// The relay runs while the body is held, so the in-flight budget covers
	// it. net/http may still be writing the request body when Do returns on
	// a timeout, so the relay gets its own copy, not the pooled buffer.
	var (
		status   int
		answer   []byte
		relayErr error
	)
	err := s.http.ReadBody(ctx, func(body []byte) error {
		rctx, cancel := context.WithTimeout(s.base, s.cfg.TimelineTimeout)
		defer cancel()
		status, answer, relayErr = s.deps.Timelines.RelayTimeline(rctx, bytes.Clone(body))
		return nil
	})
	if err != nil {
		s.metrics.timelines.WithLabelValues(timelineOutcome(err)).Inc()
		s.fail(ctx, err, "")
		return
	}
	if relayErr != nil {
		s.metrics.timelines.WithLabelValues("central_unreachable").Inc()
		s.log.Warn("relay build timeline", "error", relayErr)
		s.fail(ctx, errNotStoring, "")
		return
	}
	if status >= 200 && status <= 299 {
		s.metrics.timelines.WithLabelValues("relayed").Inc()
	} else {
		s.metrics.timelines.WithLabelValues("central_refused").Inc()
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(answer)
}

// timelineOutcome labels a timeline refused before it was relayed.
func timelineOutcome(err error) string {
	switch statusOf(err) {
	case fasthttp.StatusRequestEntityTooLarge:
		return "too_large"
	case fasthttp.StatusServiceUnavailable:
		return "overloaded"
	case fasthttp.StatusRequestTimeout:
		return "timed_out"
	default:
		return "bad_body"
	}
}
