package report

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// result is what became of a report, the "result" label.
type result string

const (
	resultSent             result = "sent"
	resultDroppedFull      result = "dropped_full"       // queue (or its byte budget) full
	resultDroppedError     result = "dropped_error"      // central refused it, or it was the oldest held past HeldEntries
	resultDroppedNoCentral result = "dropped_no_central" // no central configured
	resultDroppedShutdown  result = "dropped_shutdown"   // Stop ran out of time, or it came after Stop
	resultInvalid          result = "invalid"            // not JSON, too large, or a pack without a usable meta
)

type metrics struct {
	reports *prometheus.CounterVec
	queue   prometheus.GaugeFunc
	held    prometheus.GaugeFunc
	// counters holds every series of reports, so counting looks nothing up.
	counters map[kind]map[result]prometheus.Counter
}

var (
	kinds   = []kind{kindManifest, kindShard, kindPack}
	results = []result{resultSent, resultDroppedFull, resultDroppedError, resultDroppedNoCentral, resultDroppedShutdown, resultInvalid}
)

func newMetrics(reg prometheus.Registerer, queueLen, heldEntries func() float64) (*metrics, error) {
	m := &metrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_report_total",
			Help: "What the S3 surface saw uploaded, reported to central, by kind (manifest, shard, pack) and result (sent, dropped_full, dropped_error, dropped_no_central, dropped_shutdown, invalid). Packs count one each, though sent in batches.",
		}, []string{"kind", "result"}),
		queue: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kache_sidecar_report_queue_length",
			Help: "Reports waiting in the queue to central.",
		}, queueLen),
		held: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kache_sidecar_report_held_entries",
			Help: "Manifest entries held for another try while central fails (bounded by the reporter's HeldEntries).",
		}, heldEntries),
	}
	// Every series exists from the start, so a rate over them works.
	m.counters = make(map[kind]map[result]prometheus.Counter, len(kinds))
	for _, k := range kinds {
		m.counters[k] = make(map[result]prometheus.Counter, len(results))
		for _, r := range results {
			m.counters[k][r] = m.reports.WithLabelValues(string(k), string(r))
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reports, m.queue, m.held} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register report metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) count(k kind, r result, n int) {
	if n > 0 {
		m.counters[k][r].Add(float64(n))
	}
}
