package replay

import (
	"fmt"
	"math"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// The sidecar's engine: look-ahead and split downloads (score_test.go has
// kache's client).
func TestScheduleSidecar(t *testing.T) {
	const mib = 1 << 20
	type obj struct {
		size    uint64
		missing bool // the bucket answers 404
	}
	base := DefaultTransferModel()
	rate := base.BytesPerMs // 20 MiB/s: 1 MiB in 50 ms
	at := func(mb float64) float64 { return mb * mib / rate }
	one := []obj{{mib, false}, {mib, false}, {mib, false}}
	tests := []struct {
		name      string
		sidecar   bool
		conns     int
		parts     int
		lookahead int
		deadline  float64
		maxBytes  uint64
		objs      []obj
		// want are the downloads' [start, end] in ms: start is when the
		// GET is sent.
		want [][2]float64
	}{
		{name: "kache's client never splits", conns: 12, parts: 4, lookahead: 12, objs: []obj{{8 * mib, false}},
			want: [][2]float64{{50, 50 + 40 + at(8)}}},
		{name: "four parts of 8 MiB", sidecar: true, conns: 12, parts: 4, objs: []obj{{8 * mib, false}},
			want: [][2]float64{{50, 50 + 80 + at(2)}}},
		{name: "at the threshold not split", sidecar: true, conns: 12, parts: 4, objs: []obj{{4 * mib, false}},
			want: [][2]float64{{50, 50 + 40 + at(4)}}},
		{name: "split off", sidecar: true, conns: 12, parts: 1, objs: []obj{{8 * mib, false}},
			want: [][2]float64{{50, 50 + 40 + at(8)}}},
		// The first body takes the one other idle lane; the second GET is
		// sent at once (its worker is free) and its body waits for a lane.
		{name: "parts take only idle lanes, the next body waits", sidecar: true, conns: 2, parts: 4,
			objs: []obj{{8 * mib, false}, {1 * mib, false}},
			want: [][2]float64{{50, 50 + 80 + at(4)}, {50, 50 + 40 + at(4) + at(1)}}},
		// One lane: each next body starts as the one before ends, its
		// GET's 40 ms already spent.
		{name: "look-ahead hides the latency", sidecar: true, conns: 1, parts: 1, lookahead: 1, objs: one,
			want: [][2]float64{{50, 90 + at(1)}, {50, 90 + at(2)}, {90 + at(1), 90 + at(3)}}},
		{name: "no look-ahead: every GET after the one before", sidecar: true, conns: 1, parts: 1, objs: one,
			want: [][2]float64{{50, 90 + at(1)}, {90 + at(1), 130 + at(2)}, {130 + at(2), 170 + at(3)}}},
		{name: "kache's client has no look-ahead", conns: 1, parts: 1, lookahead: 1, objs: one,
			want: [][2]float64{{50, 90 + at(1)}, {90 + at(1), 130 + at(2)}, {130 + at(2), 170 + at(3)}}},
		{name: "a 404 takes no lane", sidecar: true, conns: 1, parts: 1, lookahead: 1,
			objs: []obj{{0, true}, {mib, false}, {mib, false}},
			want: [][2]float64{{50, 90}, {50, 90 + at(1)}, {90, 90 + at(2)}}},
		// The deadline (100 ms after dispatch) is checked when a GET would
		// be sent: the look-ahead sends a third before it, not a fourth.
		{name: "deadline at the send, look-ahead", sidecar: true, conns: 1, parts: 1, lookahead: 1, deadline: 100,
			objs: append(one, obj{mib, false}),
			want: [][2]float64{{50, 90 + at(1)}, {50, 90 + at(2)}, {90 + at(1), 90 + at(3)}}},
		{name: "deadline at the send, kache", conns: 1, parts: 1, deadline: 100, objs: one,
			want: [][2]float64{{50, 90 + at(1)}, {90 + at(1), 130 + at(2)}}},
		{name: "byte budget counts completed downloads", conns: 1, parts: 1, maxBytes: mib, objs: one,
			want: [][2]float64{{50, 90 + at(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			m.Concurrency, m.SplitParts, m.Lookahead, m.sidecar = tt.conns, tt.parts, tt.lookahead, tt.sidecar
			m.DeadlineMs, m.MaxBytes = tt.deadline, tt.maxBytes
			b := NewBucket()
			var cands []wire.PrefetchCandidate
			for i, o := range tt.objs {
				c := wire.PrefetchCandidate{CacheKey: fmt.Sprintf("%064x", i+1), CrateName: fmt.Sprintf("c%d", i)}
				if !o.missing {
					b.Put(c.CrateName, c.CacheKey, o.size)
				}
				cands = append(cands, c)
			}
			got := m.Schedule(cands, b)
			if len(got) != len(tt.want) {
				t.Fatalf("%d downloads, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, d := range got {
				if math.Abs(d.StartMs-tt.want[i][0]) > 1e-6 || math.Abs(d.EndMs-tt.want[i][1]) > 1e-6 {
					t.Errorf("download %d: %.3f-%.3f ms, want %.3f-%.3f", i, d.StartMs, d.EndMs, tt.want[i][0], tt.want[i][1])
				}
				if d.Exists == tt.objs[i].missing {
					t.Errorf("download %d: exists %v", i, d.Exists)
				}
			}
		})
	}
}
