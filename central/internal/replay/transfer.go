package replay

import (
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// TransferModel is how the kache daemon executes a plan (kache-protocol.md
// 3.5) and how long a GET takes.
type TransferModel struct {
	// DispatchMs is when downloads start, counted from the build's first
	// rustc invocation (which is what sends BuildStarted): the planner call
	// and the daemon's dispatch.
	DispatchMs float64 `json:"dispatch_ms"`
	// LatencyMs is each GET's time to first byte; a 404 costs only this.
	LatencyMs float64 `json:"latency_ms"`
	// BytesPerMs is one connection's throughput.
	BytesPerMs float64 `json:"bytes_per_ms"`
	// Concurrency is the daemon's prefetch concurrency cap (12 for the
	// default s3_concurrency of 16).
	Concurrency int `json:"concurrency"`
	// MaxKeys, MaxBytes and DeadlineMs are prefetch_max_keys,
	// prefetch_max_bytes (soft, checked before each launch against completed
	// downloads) and prefetch_deadline_secs.
	MaxKeys    int     `json:"max_keys"`
	MaxBytes   uint64  `json:"max_bytes"`
	DeadlineMs float64 `json:"deadline_ms"`
}

// DefaultTransferModel returns kache's defaults and a same-region object
// store: 40 ms per request, 20 MiB/s per connection.
func DefaultTransferModel() TransferModel {
	return TransferModel{
		DispatchMs:  50,
		LatencyMs:   40,
		BytesPerMs:  20 * 1024 * 1024 / 1000.0,
		Concurrency: 12,
		MaxKeys:     2000,
		MaxBytes:    2 << 30,
		DeadlineMs:  300_000,
	}
}

// Duration is one GET of size bytes (0 for a 404).
func (m TransferModel) Duration(size uint64) float64 {
	return m.LatencyMs + float64(size)/m.BytesPerMs
}

// Download is one GET the daemon launched for a plan.
type Download struct {
	Key     string
	Crate   string
	Exists  bool
	Size    uint64
	StartMs float64
	EndMs   float64
}

// Admit is the client's candidate handling before any download: invalid keys
// and crate names are dropped, a key already queued is skipped (the daemon
// skips keys "currently downloading"), and only the first MaxKeys remain.
func (m TransferModel) Admit(cands []wire.PrefetchCandidate) []wire.PrefetchCandidate {
	out := make([]wire.PrefetchCandidate, 0, min(len(cands), max(m.MaxKeys, 0)))
	seen := make(map[string]bool, len(cands))
	for _, c := range cands {
		if !layout.ValidCacheKey(c.CacheKey) || !layout.ValidCrateName(c.CrateName) || seen[c.CacheKey] {
			continue
		}
		if m.MaxKeys > 0 && len(out) >= m.MaxKeys {
			break
		}
		seen[c.CacheKey] = true
		out = append(out, c)
	}
	return out
}

// Schedule runs the admitted candidates in plan order over Concurrency
// connections, stopping at the deadline or once completed downloads reach
// MaxBytes (in-flight downloads finish, as in kache).
func (m TransferModel) Schedule(cands []wire.PrefetchCandidate, bucket *Bucket) []Download {
	free := make([]float64, max(m.Concurrency, 1))
	for i := range free {
		free[i] = m.DispatchMs
	}
	slots := newHeap(func(a, b float64) bool { return a < b }, free...)
	running := newHeap(func(a, b finished) bool { return a.end < b.end })
	var done uint64
	out := make([]Download, 0, len(cands))
	for _, c := range cands {
		t := slots.Peek()
		if m.DeadlineMs > 0 && t-m.DispatchMs >= m.DeadlineMs {
			break
		}
		for running.Len() > 0 && running.Peek().end <= t {
			done += running.Pop().size
		}
		if m.MaxBytes > 0 && done >= m.MaxBytes {
			break
		}
		size, ok := bucket.Get(c.CrateName, c.CacheKey)
		d := Download{Key: c.CacheKey, Crate: c.CrateName, Exists: ok, Size: size, StartMs: t, EndMs: t + m.Duration(size)}
		slots.ReplaceTop(d.EndMs)
		running.Push(finished{end: d.EndMs, size: size})
		out = append(out, d)
	}
	return out
}

// finished is a download in flight: when it ends and what it adds to the
// byte budget.
type finished struct {
	end  float64
	size uint64
}
