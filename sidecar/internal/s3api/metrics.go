package s3api

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	refused  *prometheus.CounterVec
	reads    *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	writes   prometheus.Counter
	bytesIn  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_s3_requests_total", Help: "S3 surface requests by operation and status (2xx, 3xx, the 4xx code, 5xx).",
		}, []string{"op", "status"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_s3_refused_total", Help: "S3 requests refused before a handler ran, or for their size, by S3 error code.",
		}, []string{"code"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_s3_reads_total", Help: "Object reads (GET and HEAD) by where they were answered from: local store or upstream bucket.",
		}, []string{"source"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kache_sidecar_s3_served_bytes_total", Help: "Object bytes served, by source (local or upstream).",
		}, []string{"source"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kache_sidecar_s3_upstream_seconds", Help: "Latency of pass-through requests to the bucket until their response headers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"op"}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_s3_puts_total", Help: "Objects written through to the bucket and acknowledged.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kache_sidecar_s3_written_bytes_total", Help: "Object bytes written through to the bucket.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.refused, m.reads, m.bytes, m.upstream, m.writes, m.bytesIn} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register S3 surface metrics: %w", err)
		}
	}
	return m, nil
}
