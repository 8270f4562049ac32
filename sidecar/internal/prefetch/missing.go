package prefetch

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// MissingReporter is told of planned keys whose pack or entry manifest the
// bucket answered 404 for (central.Client.ReportMissing), so the planner
// stops planning them.
type MissingReporter interface {
	ReportMissing(ctx context.Context, keys []wire.MissingKey) (wire.MissingKeysResult, error)
}

const (
	// missingDelay lets the other 404s of a plan join the first one's
	// report.
	missingDelay = 2 * time.Second
	// missingQueueLen bounds the keys waiting to be reported; more are
	// dropped and counted.
	missingQueueLen = 4 * wire.MaxMissingKeys
	// missingSeenLen bounds the keys remembered as reported, so a key is
	// reported once, not once per session.
	missingSeenLen      = 10_000
	missingSendTimeout  = 20 * time.Second
	missingFinalTimeout = 3 * time.Second
)

// missingQueue batches the keys a prefetch found missing and reports them
// from one goroutine: noting a key never waits on central.
type missingQueue struct {
	rep   MissingReporter
	m     *Metrics
	log   *slog.Logger
	wake  chan struct{}
	delay time.Duration

	mu   sync.Mutex
	keys []wire.MissingKey
	seen map[string]bool
}

func newMissingQueue(rep MissingReporter, m *Metrics, log *slog.Logger) *missingQueue {
	return &missingQueue{rep: rep, m: m, log: log, wake: make(chan struct{}, 1), delay: missingDelay, seen: map[string]bool{}}
}

// add queues one key for reporting, unless it was reported already or the
// queue is full.
func (q *missingQueue) add(crate, key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.seen[key] {
		return
	}
	if len(q.keys) >= missingQueueLen {
		q.m.missing.WithLabelValues("queue_full").Inc()
		return
	}
	if len(q.seen) >= missingSeenLen {
		clear(q.seen)
	}
	q.seen[key] = true
	q.keys = append(q.keys, wire.MissingKey{CacheKey: key, CrateName: crate})
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run reports queued keys until ctx ends, then sends what is left within
// missingFinalTimeout.
func (q *missingQueue) run(ctx context.Context) {
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), missingFinalTimeout)
		defer cancel()
		q.flush(fctx)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(q.delay):
		}
		q.flush(ctx)
	}
}

// flush sends the queued keys in reports of at most wire.MaxMissingKeys.
// A report that fails is dropped: the bucket crawl and the age policy
// still forget the keys, only later.
func (q *missingQueue) flush(ctx context.Context) {
	for ctx.Err() == nil {
		q.mu.Lock()
		n := min(len(q.keys), wire.MaxMissingKeys)
		batch := slices.Clone(q.keys[:n])
		q.keys = slices.Delete(q.keys, 0, n)
		q.mu.Unlock()
		if n == 0 {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, missingSendTimeout)
		res, err := q.rep.ReportMissing(sctx, batch)
		cancel()
		if err != nil {
			q.m.missing.WithLabelValues("failed").Add(float64(n))
			q.log.Warn("report missing keys", "keys", n, "error", err)
			continue
		}
		q.m.missing.WithLabelValues("sent").Add(float64(n))
		q.log.Info("reported missing keys", "keys", n, "dropped", res.Dropped, "present", res.Present,
			"unknown", res.Unknown, "unconfirmed", res.Unconfirmed)
	}
}
