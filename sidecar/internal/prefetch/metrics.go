package prefetch

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the engine's Prometheus series.
type Metrics struct {
	keys         *prometheus.CounterVec
	demand       *prometheus.CounterVec
	outcomes     *prometheus.CounterVec
	bytes        prometheus.Counter
	retries      prometheus.Counter
	corrupt      prometheus.Counter
	sessions     prometheus.Counter
	refused      prometheus.Counter
	joined       prometheus.Counter
	reportErrors prometheus.Counter
	missing      *prometheus.CounterVec
	splits       *prometheus.CounterVec
}

// NewMetrics registers the engine's metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		keys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_keys_total",
			Help: "Planned packs by what prefetching did with them.",
		}, []string{"result"}),
		demand: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_demand_requests_total",
			Help: "Demand requests by how they were served: local, joined (a download in flight), fetched, not_found, failed.",
		}, []string{"result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_outcomes_total",
			Help: "Planned keys of closed sessions: used_on_time (local when the build asked), used_late, unused (fetched, never asked for), missed (asked for, not planned).",
		}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_received_bytes_total",
			Help: "Bytes received from the bucket by prefetch and demand downloads.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_retries_total",
			Help: "Downloads retried after a transfer broke.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_corrupt_total",
			Help: "Objects refused because their size, checksum or format was wrong.",
		}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_sessions_total",
			Help: "Prefetch sessions started.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_sessions_refused_total",
			Help: "Plans not prefetched because the most sessions were open and every one was still fetching.",
		}),
		joined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_sessions_joined_total",
			Help: "Plans that joined the open session of an identical plan (the same hints' candidates, runner and budget) instead of opening one.",
		}),
		reportErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_outcome_report_errors_total",
			Help: "Session outcomes that could not be sent to central.",
		}),
		missing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_missing_keys_reported_total",
			Help: "Planned keys the bucket answered 404 for, by what became of their report to central: sent, failed, queue_full.",
		}, []string{"result"}),
		splits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_prefetch_split_downloads_total",
			Help: "Download attempts of big objects fetched over several connections (ranged GETs), by result: ok, changed (the object changed between parts; retried whole), failed, cancelled.",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "changed", "failed", "cancelled"} {
		m.splits.WithLabelValues(r)
	}
	for _, r := range []string{"sent", "failed", "queue_full"} {
		m.missing.WithLabelValues(r)
	}
	for _, r := range []result{resultFetched, resultPresent, resultJoined, resultNotFound, resultFailed, resultOverBudget, resultSkipped, "invalid"} {
		m.keys.WithLabelValues(string(r))
	}
	for _, r := range []string{"local", "joined", "fetched", "not_found", "failed"} {
		m.demand.WithLabelValues(r)
	}
	for _, o := range []string{"used_on_time", "used_late", "unused", "missed"} {
		m.outcomes.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.keys, m.demand, m.outcomes, m.bytes, m.retries, m.corrupt, m.sessions, m.refused, m.joined, m.reportErrors, m.missing, m.splits)
	}
	return m
}

func (m *Metrics) observe(r Report) {
	m.outcomes.WithLabelValues("used_on_time").Add(float64(r.OnTime))
	m.outcomes.WithLabelValues("used_late").Add(float64(r.Late))
	m.outcomes.WithLabelValues("unused").Add(float64(r.Unused))
	m.outcomes.WithLabelValues("missed").Add(float64(r.Missed))
}
