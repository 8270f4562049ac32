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
	// Lookahead is the sidecar's prefetch look-ahead
	// (--prefetch-lookahead): for a plan the sidecar fetches, that many
	// GETs beyond Concurrency are sent before a lane is free, so their
	// latency passes while other bodies stream; bodies still stream on at
	// most Concurrency lanes (see Schedule). 0 turns it off.
	Lookahead int `json:"lookahead"`

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
		Lookahead:   12,
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

// Schedule runs the admitted candidates in plan order, as the client's
// engine does: each candidate's GET is sent by the earliest free of
// Concurrency + look-ahead workers, and its body streams on the earliest
// free of Concurrency lanes once its response has come (LatencyMs after the
// GET). It stops at the deadline or once completed downloads reach MaxBytes
// (in-flight downloads finish, as in kache), both checked when a GET would
// be sent. Without a look-ahead (kache's client) the worker and its lane
// are one connection: a download ends LatencyMs + size/BytesPerMs after the
// connection frees. Bodies get lanes in plan order: responses come in that
// order (every GET pays the same latency), so the earliest free lane is
// the one a plan-order queue would give.
func (m TransferModel) Schedule(cands []wire.PrefetchCandidate, bucket *Bucket) []Download {
	lookahead := 0
	if m.sidecar {
		lookahead = max(m.Lookahead, 0)
	}
	conns := max(m.Concurrency, 1)
	at := func(n int) []float64 {
		free := make([]float64, n)
		for i := range free {
			free[i] = m.DispatchMs
		}
		return free
	}
	workers := newHeap(func(a, b float64) bool { return a < b }, at(conns+lookahead)...)
	lanes := newHeap(func(a, b float64) bool { return a < b }, at(conns)...)
	running := newHeap(func(a, b finished) bool { return a.end < b.end })
	var done uint64
	out := make([]Download, 0, len(cands))
	for _, c := range cands {
		sent := workers.Peek()
		if m.DeadlineMs > 0 && sent-m.DispatchMs >= m.DeadlineMs {
			break
		}
		for running.Len() > 0 && running.Peek().end <= sent {
			done += running.Pop().size
		}
		if m.MaxBytes > 0 && done >= m.MaxBytes {
			break
		}
		size, ok := bucket.Get(c.CrateName, c.CacheKey)
		d := Download{Key: c.CacheKey, Crate: c.CrateName, Exists: ok, Size: size, StartMs: sent, EndMs: sent + m.LatencyMs}
		if ok {
			d.EndMs = m.stream(lanes, size, sent+m.LatencyMs)
		}
		workers.ReplaceTop(d.EndMs)
		running.Push(finished{end: d.EndMs, size: size})
		out = append(out, d)
	}
	return out
}

// stream runs one body of size bytes whose response came at response on
// the earliest free lane and returns when it ends. A split download (see
// splits) also takes, without waiting, up to SplitParts-1 more lanes idle
// when its body starts: the first part streams the first of n equal ranges
// at once, the others are ranged GETs sent then (LatencyMs each). The model
// has no total bandwidth cap, and the parts add none beyond the Concurrency
// x BytesPerMs any client could use.
func (m TransferModel) stream(lanes *minHeap[float64], size uint64, response float64) float64 {
	body := max(response, lanes.Pop())
	var extra int
	if m.splits(size) {
		want := int(min(uint64(m.SplitParts), size)) - 1
		for extra < want && lanes.Len() > 0 && lanes.Peek() <= body {
			lanes.Pop()
			extra++
		}
	}
	n := uint64(extra) + 1
	end := body + float64(size/n)/m.BytesPerMs
	lanes.Push(end)
	for k := range extra {
		part := size*uint64(k+2)/n - size*uint64(k+1)/n
		e := body + m.LatencyMs + float64(part)/m.BytesPerMs
		lanes.Push(e)
		end = max(end, e)
	}
	return end
}

// splits reports whether a download of size bytes is split.
func (m TransferModel) splits(size uint64) bool {
	return m.sidecar && m.SplitParts > 1 && size > m.SplitBytes
}

// finished is a download in flight: when it ends and what it adds to the
// byte budget.
type finished struct {
	end  float64
	size uint64
}
