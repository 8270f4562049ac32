package replay

import (
	"fmt"
	"math"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestScheduleSplitsBigObjectsForTheSidecar(t *testing.T) {
	const mib = 1 << 20
	type obj struct {
		size uint64
		hint bool // the plan says its size
	}
	base := DefaultTransferModel()
	rate := base.BytesPerMs // 20 MiB/s: 1 MiB in 50 ms
	at := func(mb float64) float64 { return mb * mib / rate }
	tests := []struct {
		name    string
		sidecar bool
		conns   int
		parts   int
		objs    []obj
		// want are the downloads' [start, end] in ms.
		want [][2]float64
	}{
		{name: "kache's client never splits", conns: 12, parts: 4, objs: []obj{{8 * mib, true}},
			want: [][2]float64{{50, 50 + 40 + at(8)}}},
		{name: "four parts of a hinted 8 MiB", sidecar: true, conns: 12, parts: 4, objs: []obj{{8 * mib, true}},
			want: [][2]float64{{50, 50 + 80 + at(2)}}},
		{name: "at the threshold not split", sidecar: true, conns: 12, parts: 4, objs: []obj{{4 * mib, true}},
			want: [][2]float64{{50, 50 + 40 + at(4)}}},
		{name: "split off", sidecar: true, conns: 12, parts: 1, objs: []obj{{8 * mib, true}},
			want: [][2]float64{{50, 50 + 40 + at(8)}}},
		{name: "parts within the connections, the next waits", sidecar: true, conns: 2, parts: 4,
			objs: []obj{{8 * mib, true}, {1 * mib, true}},
			want: [][2]float64{{50, 50 + 80 + at(4)}, {50 + 40 + at(4), 50 + 80 + at(4) + at(1)}}},
		{name: "unhinted, connections taken by the rest of the plan", sidecar: true, conns: 2, parts: 4,
			objs: []obj{{8 * mib, false}, {1 * mib, false}},
			want: [][2]float64{{50, 50 + 40 + at(8)}, {50, 50 + 40 + at(1)}}},
		{name: "unhinted, last of the plan, idle connections", sidecar: true, conns: 3, parts: 4,
			objs: []obj{{1 * mib, false}, {9 * mib, false}},
			want: [][2]float64{{50, 50 + 40 + at(1)}, {50, 50 + 80 + at(4.5)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			m.Concurrency, m.SplitParts, m.sidecar = tt.conns, tt.parts, tt.sidecar
			b := NewBucket()
			var cands []wire.PrefetchCandidate
			for i, o := range tt.objs {
				c := wire.PrefetchCandidate{CacheKey: fmt.Sprintf("%064x", i+1), CrateName: fmt.Sprintf("c%d", i)}
				b.Put(c.CrateName, c.CacheKey, o.size)
				if o.hint {
					c.SizeBytes = o.size
				}
				cands = append(cands, c)
			}
			got := m.Schedule(cands, b)
			if len(got) != len(tt.want) {
				t.Fatalf("%d downloads, want %d", len(got), len(tt.want))
			}
			for i, d := range got {
				if math.Abs(d.StartMs-tt.want[i][0]) > 1e-6 || math.Abs(d.EndMs-tt.want[i][1]) > 1e-6 {
					t.Errorf("download %d: %.3f-%.3f ms, want %.3f-%.3f", i, d.StartMs, d.EndMs, tt.want[i][0], tt.want[i][1])
				}
			}
		})
	}
}
