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
	// SplitBytes and SplitParts are the sidecar's split downloads
	// (--prefetch-split-bytes, --prefetch-split-parts): for a plan the
	// sidecar fetches, an object over SplitBytes is fetched over up to
	// SplitParts of the Concurrency connections (see Schedule). SplitParts
	// 1 turns it off.
	SplitBytes uint64 `json:"split_bytes"`
	SplitParts int    `json:"split_parts"`

	// sidecar says the plan is fetched by the sidecar's prefetch engine
	// (set per policy), the only client that splits.
	sidecar bool
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
		SplitBytes:  4 << 20,
		SplitParts:  4,
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
// MaxBytes (in-flight downloads finish, as in kache). A sidecar's plan
// splits its big objects (split).
func (m TransferModel) Schedule(cands []wire.PrefetchCandidate, bucket *Bucket) []Download {
	free := make([]float64, max(m.Concurrency, 1))
	for i := range free {
		free[i] = m.DispatchMs
	}
	slots := newHeap(func(a, b float64) bool { return a < b }, free...)
	running := newHeap(func(a, b finished) bool { return a.end < b.end })
	var done uint64
	out := make([]Download, 0, len(cands))
	for i, c := range cands {
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
		if ok && m.splits(size) {
			d.EndMs = m.split(slots, size, c.SizeBytes, len(cands)-i-1)
		} else {
			slots.ReplaceTop(d.EndMs)
		}
		running.Push(finished{end: d.EndMs, size: size})
		out = append(out, d)
	}
	return out
}

// splits reports whether a download of size bytes is split.
func (m TransferModel) splits(size uint64) bool {
	return m.sidecar && m.SplitParts > 1 && size > m.SplitBytes
}

// split runs one download of size bytes starting on the earliest free
// connection, as the sidecar's engine does, and returns when it ends. The
// first GET's body fills the first of n equal ranges; the other n-1 are
// ranged GETs sent when its response comes (LatencyMs later), each on a
// connection of its own at the per-connection rate. Extra connections are
// never waited for: a plan size over SplitBytes (hint) takes those idle at
// the start; without one the split is decided at the response, when a
// later candidate would have taken any connection freed meanwhile, so only
// connections beyond what the rest of the plan (left candidates) takes are
// used. The connections stay within Concurrency: the model has no total
// bandwidth cap, and splitting adds none beyond the Concurrency x
// BytesPerMs any client could use.
func (m TransferModel) split(slots *minHeap[float64], size, hint uint64, left int) float64 {
	t := slots.Pop()
	want := int(min(uint64(m.SplitParts), size)) - 1
	var extra []float64
	if hint > m.SplitBytes {
		for len(extra) < want && slots.Len() > 0 && slots.Peek() <= t {
			extra = append(extra, slots.Pop())
		}
	} else {
		response := t + m.LatencyMs
		var idle []float64
		for slots.Len() > 0 && slots.Peek() <= response {
			idle = append(idle, slots.Pop())
		}
		// The earliest free go to the next candidates; the rest, if any,
		// are the split's.
		take := min(want, max(len(idle)-left, 0))
		extra = idle[len(idle)-take:]
		for _, f := range idle[:len(idle)-take] {
			slots.Push(f)
		}
	}
	n := uint64(len(extra)) + 1
	end := t + m.LatencyMs + float64(size/n)/m.BytesPerMs
	slots.Push(end)
	for k := range extra {
		part := size*uint64(k+2)/n - size*uint64(k+1)/n
		e := t + 2*m.LatencyMs + float64(part)/m.BytesPerMs
		slots.Push(e)
		end = max(end, e)
	}
	return end
}

// finished is a download in flight: when it ends and what it adds to the
// byte budget.
type finished struct {
	end  float64
	size uint64
}
