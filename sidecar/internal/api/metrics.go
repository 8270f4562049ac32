package api

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
)

// outcomeRejected labels plan requests refused before planning (auth, bad
// body); the other labels are the planner's answer sources.
const (
	outcomeUnauthorized = "unauthorized"
	outcomeRejected     = "rejected"
)

// timelineOutcomes label relayed timelines.
var timelineOutcomes = []string{"relayed", "central_refused", "central_unreachable", "not_configured", "unauthorized", "unsupported_encoding", "too_large"}

type metrics struct {
	timelines       *prometheus.CounterVec
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	candidates      prometheus.Histogram
	prefetchDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		timelines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_timeline_relays_total",
			Help: "POST /v1/build-timelines requests relayed to central, by outcome.",
		}, []string{"outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_plan_requests_total",
			Help: "Prefetch-plan requests by answer source (hint, central, stale_hint, bucket, fallback) or rejection.",
		}, []string{"source"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kache_sidecar_plan_request_duration_seconds",
			Help:    "Prefetch-plan request duration by answer source.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75},
		}, []string{"source"}),
		candidates: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kache_sidecar_plan_candidates",
			Help:    "Candidates per execute plan answered.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000},
		}),
		prefetchDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_plan_prefetch_dropped_total",
			Help: "Execute plans not handed to the prefetcher because its queue was full.",
		}),
	}
	for _, c := range []prometheus.Collector{m.timelines, m.requests, m.duration, m.candidates, m.prefetchDropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register planner surface metrics: %w", err)
		}
	}
	labels := []string{outcomeUnauthorized, outcomeRejected}
	for _, s := range planner.Sources {
		labels = append(labels, string(s))
	}
	for _, l := range labels {
		m.requests.WithLabelValues(l)
		m.duration.WithLabelValues(l)
	}
	for _, l := range timelineOutcomes {
		m.timelines.WithLabelValues(l)
	}
	return m, nil
}

func (m *metrics) observe(source string, d time.Duration, candidates int) {
	m.requests.WithLabelValues(source).Inc()
	m.duration.WithLabelValues(source).Observe(d.Seconds())
	if candidates > 0 {
		m.candidates.Observe(float64(candidates))
	}
}
