// Package metrics holds central's Prometheus metrics, registered on an
// injected registerer. The plan metrics keep kache-service's names, labels and
// buckets (kache-protocol.md 2.9) so existing dashboards keep working.
package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PlanOutcomes are the six outcome labels of kache's plan metrics.
var PlanOutcomes = []string{"execute", "fallback_no_state", "fallback_planning_error", "fallback_no_candidates", "unauthorized", "not_ready"}

// IngestOutcomes label manifest and timeline ingest results; the timeline
// ones are kache's.
var IngestOutcomes = []string{"inserted", "replaced", "kept", "unauthorized", "not_ready", "unsupported_encoding", "too_large", "bad_body", "store_error"}

// Metrics is central's set of metrics.
type Metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	candidates prometheus.Histogram
	ready      prometheus.Gauge
	manifests  *prometheus.CounterVec
	entries    prometheus.Counter
	timelines  *prometheus.CounterVec
	planCache  *prometheus.CounterVec
}

// New registers central's metrics on reg, every labelled series at zero.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_planner_requests_total",
			Help: "Prefetch-plan requests by outcome.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kache_planner_request_duration_seconds",
			Help:    "Prefetch-plan request duration by outcome.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, []string{"outcome"}),
		candidates: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kache_planner_plan_candidates",
			Help:    "Candidates per execute plan.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500},
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kache_planner_ready",
			Help: "1 when this replica serves plans.",
		}),
		manifests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_planner_manifests_total",
			Help: "Build-manifest ingest requests by outcome.",
		}, []string{"outcome"}),
		entries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_planner_manifest_entries_total",
			Help: "Build-manifest entries stored.",
		}),
		timelines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_planner_build_timelines_total",
			Help: "Build-timeline ingest requests by outcome.",
		}, []string{"outcome"}),
		planCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_planner_plan_cache_total",
			Help: "Plan requests answered from the encoded-plan cache (hit) or planned (miss).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.candidates, m.ready, m.manifests, m.entries, m.timelines, m.planCache} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	for _, o := range PlanOutcomes {
		m.requests.WithLabelValues(o)
		m.duration.WithLabelValues(o)
	}
	m.planCache.WithLabelValues("hit")
	m.planCache.WithLabelValues("miss")
	for _, o := range IngestOutcomes {
		m.manifests.WithLabelValues(o)
		m.timelines.WithLabelValues(o)
	}
	return m, nil
}

// ObservePlan records one plan request. candidates is observed only for
// execute plans, as kache does.
func (m *Metrics) ObservePlan(outcome string, d time.Duration, candidates int) {
	m.requests.WithLabelValues(outcome).Inc()
	m.duration.WithLabelValues(outcome).Observe(d.Seconds())
	if outcome == "execute" {
		m.candidates.Observe(float64(candidates))
	}
}

// SetReady mirrors readiness.
func (m *Metrics) SetReady(ready bool) {
	if ready {
		m.ready.Set(1)
	} else {
		m.ready.Set(0)
	}
}

// ObserveManifest records one manifest ingest and the entries it stored.
func (m *Metrics) ObserveManifest(outcome string, entries int) {
	m.manifests.WithLabelValues(outcome).Inc()
	m.entries.Add(float64(entries))
}

// ObserveTimeline records one timeline ingest.
func (m *Metrics) ObserveTimeline(outcome string) {
	m.timelines.WithLabelValues(outcome).Inc()
}

// ObservePlanCache counts a plan-cache hit or miss.
func (m *Metrics) ObservePlanCache(hit bool) {
	if hit {
		m.planCache.WithLabelValues("hit").Inc()
	} else {
		m.planCache.WithLabelValues("miss").Inc()
	}
}
