package api

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func tailPlan(key, crate string, src wire.Source, ms, size uint64, demand bool) *wire.PrefetchPlan {
	d := uint32(7)
	c := wire.PrefetchCandidate{CacheKey: key, CrateName: crate, Source: src, CompileTimeMs: ms, SizeBytes: size}
	if demand {
		c.DemandIndex = &d
	}
	return &wire.PrefetchPlan{Disposition: wire.Execute, Candidates: []wire.PrefetchCandidate{c, c},
		Stats: &wire.PlanStats{IntentCrates: 2, Truncated: []string{"max_keys"}}}
}

// appendTail writes exactly what wire does.
func TestAppendTail(t *testing.T) {
	key := fmt.Sprintf("%064x", 42)
	tests := []struct {
		name string
		plan *wire.PrefetchPlan
	}{
		{"plain", tailPlan(key, "serde_json", wire.SourceShard, 12, 3456, true)},
		{"no numbers", tailPlan(key, "a", "", 0, 0, false)},
		{"quote", tailPlan(key, `a"b`, wire.SourceHistory, 1, 1, true)},
		{"html", tailPlan("<&>", "x", wire.SourceKeyCache, 1, 1, true)},
		{"control", tailPlan(key, "tab\there", wire.SourceShard, 1, 1, true)},
		{"non-ascii", tailPlan(key, "crate_é_with_a_long_name", wire.SourceShard, 1, 1, true)},
		{"line separator", tailPlan(key, "a\u2028b", wire.SourceShard, 1, 1, true)},
		{"invalid utf-8", tailPlan(key, "abcdefgh\xff", wire.SourceShard, 1, 1, true)},
		{"empty", &wire.PrefetchPlan{Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkTail(t, tt.plan)
		})
	}
}

func checkTail(t *testing.T, p *wire.PrefetchPlan) {
	t.Helper()
	want, err := p.AppendTail([]byte("head"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := appendTail([]byte("head"), p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("appendTail:\n%s\nwire:\n%s\n%v", got, want, err)
	}
}

func FuzzAppendTail(f *testing.F) {
	f.Add(fmt.Sprintf("%064x", 1), "serde", "shard", uint64(3), uint64(0), true)
	f.Add("a\"b<c>d&e\\f", "\x00\x7f\x80", "", uint64(0), uint64(9), false)
	f.Fuzz(func(t *testing.T, key, crate, src string, ms, size uint64, demand bool) {
		checkTail(t, tailPlan(key, crate, wire.Source(src), ms, size, demand))
	})
}

func BenchmarkAppendTail(b *testing.B) {
	p := &wire.PrefetchPlan{Disposition: wire.Execute, Stats: &wire.PlanStats{}}
	for i := range 500 {
		d := uint32(i)
		p.Candidates = append(p.Candidates, wire.PrefetchCandidate{CacheKey: fmt.Sprintf("%064x", i), CrateName: fmt.Sprintf("crate_%05d", i),
			CompileTimeMs: uint64(i * 37), SizeBytes: uint64(i * 7919), Source: wire.SourceShard, DemandIndex: &d})
	}
	buf := make([]byte, 0, 128<<10)
	b.Run("api", func(b *testing.B) {
		for b.Loop() {
			buf, _ = appendTail(buf[:0], p)
		}
	})
	b.Run("wire", func(b *testing.B) {
		for b.Loop() {
			buf, _ = p.AppendTail(buf[:0])
		}
	})
}
