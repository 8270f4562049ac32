package httpserve

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a request is refused, the values of the reason label.
const (
	reasonTooLarge = iota
	reasonUnauthorized
	reasonOverloaded
	reasonTimedOut
	numReasons
)

// Reasons are the reason labels of <namespace>_http_requests_refused_total.
var Reasons = [numReasons]string{"too_large", "unauthorized", "overloaded", "timed_out"}

// refusals counts refused requests by reason. It is a collector rather than
// a CounterVec so that connections fasthttp turns away over MaxConns count
// as overloaded too.
type refusals struct {
	desc     *prometheus.Desc
	counts   [numReasons]atomic.Uint64
	rejected func() uint32
}

func constLabels(cfg Config) prometheus.Labels {
	if cfg.Surface == "" {
		return nil
	}
	return prometheus.Labels{"surface": cfg.Surface}
}

func newRefusals(cfg Config, rejectedConns func() uint32) *refusals {
	return &refusals{
		desc: prometheus.NewDesc(prometheus.BuildFQName(cfg.Namespace, "http", "requests_refused_total"),
			"Requests refused before or while their body was read, by reason: too_large (413, 431), unauthorized (401), "+
				"overloaded (503: body budget full, or over the connection cap), timed_out (408: headers or body too slow).",
			[]string{"reason"}, constLabels(cfg)),
		rejected: rejectedConns,
	}
}

func (r *refusals) inc(reason int) { r.counts[reason].Add(1) }

func (r *refusals) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r *refusals) Collect(ch chan<- prometheus.Metric) {
	for i, name := range Reasons {
		v := r.counts[i].Load()
		if i == reasonOverloaded {
			v += uint64(r.rejected())
		}
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(v), name)
	}
}
