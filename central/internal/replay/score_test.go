package replay

import (
	"math"
	"strings"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func key(c byte) string { return strings.Repeat(string(c), 64) }

func TestScoreBuild(t *testing.T) {
	b := &Build{Units: []Unit{
		{Key: key('a'), Crate: "a", SizeBytes: 100, Available: true},
		{Key: key('b'), Crate: "b", SizeBytes: 300, Available: true},
		{Key: key('c'), Crate: "c", SizeBytes: 50},
	}}
	// Other variants of crates a, b and c, and a crate not in the build.
	other := func(c byte, crate string, size uint64) Download {
		return Download{Key: key(c), Crate: crate, Exists: true, Size: size}
	}
	tests := []struct {
		name      string
		downloads []Download
		want      BuildScore
	}{
		{"nothing fetched", nil, BuildScore{Available: 2, MissedBytes: 400}},
		{"one useful, one useless, one 404", []Download{
			{Key: key('a'), Crate: "a", Exists: true, Size: 100},
			other('d', "d", 200),
			{Key: key('e'), Crate: "e"},
		}, BuildScore{Available: 2, Useful: 1, UsefulBytes: 100, FetchedBytes: 300, Requests: 3, MissedBytes: 300, Waste: Waste{Foreign: 200}}},
		{"needed but unavailable key is a 404", []Download{{Key: key('c'), Crate: "c"}}, BuildScore{Available: 2, Requests: 1, MissedBytes: 400}},
		{"a key counts once", []Download{
			{Key: key('b'), Crate: "b", Exists: true, Size: 300},
			{Key: key('b'), Crate: "b", Exists: true, Size: 300},
		}, BuildScore{Available: 2, Useful: 1, UsefulBytes: 300, FetchedBytes: 600, Requests: 2, MissedBytes: 100, Waste: Waste{ExtraVariant: 300}}},
		{"waste by cause", []Download{
			{Key: key('a'), Crate: "a", Exists: true, Size: 100},
			other('x', "a", 10), // a's key was fetched too
			other('y', "b", 20), // b's key was not
			other('z', "c", 40), // c's key is not in the bucket
		}, BuildScore{Available: 2, Useful: 1, UsefulBytes: 100, FetchedBytes: 170, Requests: 4, MissedBytes: 300,
			Waste: Waste{ExtraVariant: 10, WrongVariant: 20, Stale: 40}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scoreBuild(b, tt.downloads, SimResult{}); got != tt.want {
				t.Errorf("score %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	scores := []BuildScore{
		{First: true, Available: 4, Useful: 3, UsefulBytes: 300, FetchedBytes: 400, Requests: 5, OnTime: 2, CompileMsSaved: 1000, WallMs: 10, MissedBytes: 70, Waste: Waste{Foreign: 100}},
		{Available: 6, Useful: 6, UsefulBytes: 600, FetchedBytes: 600, Requests: 6, OnTime: 6, CompileMsSaved: 500, WallMs: 30},
		{Available: 0, FetchedBytes: 1000, Requests: 2, WallMs: 20, Waste: Waste{Stale: 1000}},
	}
	tests := []struct {
		name string
		keep func(*BuildScore) bool
		want Summary
	}{
		// 9/10 keys, 900/2000 bytes, 8/10 on time.
		{"all", nil, Summary{Builds: 3, Recall: 0.9, BytePrecision: 0.45, BytesFetched: 2000, Requests: 13, OnTime: 0.8, CompileMsSaved: 1500,
			NeededAvailable: 10, Useful: 9, UsefulBytes: 900, MissedBytes: 70, WasteBytes: Waste{Stale: 1000, Foreign: 100}, MeanBuildMs: 20}},
		{"first builds", func(b *BuildScore) bool { return b.First }, Summary{Builds: 1, Recall: 0.75, BytePrecision: 0.75, BytesFetched: 400, Requests: 5, OnTime: 0.5, CompileMsSaved: 1000,
			NeededAvailable: 4, Useful: 3, UsefulBytes: 300, MissedBytes: 70, WasteBytes: Waste{Foreign: 100}, MeanBuildMs: 10}},
		{"none selected", func(*BuildScore) bool { return false }, Summary{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summarize(scores, tt.keep); got != tt.want {
				t.Errorf("summary %+v\nwant    %+v", got, tt.want)
			}
		})
	}
}

func TestTransferSchedule(t *testing.T) {
	bucket := NewBucket()
	bucket.Put("a", key('a'), 100)
	bucket.Put("b", key('b'), 50)
	bucket.Put("c", key('c'), 10)
	cands := []wire.PrefetchCandidate{{CacheKey: key('a'), CrateName: "a"}, {CacheKey: key('b'), CrateName: "b"}, {CacheKey: key('c'), CrateName: "wrong_dir"}}
	m := TransferModel{LatencyMs: 10, BytesPerMs: 1, Concurrency: 1}
	type span struct{ start, end float64 }
	tests := []struct {
		name  string
		model func(TransferModel) TransferModel
		want  []span
	}{
		// One connection: 10+100, then 10+50, then a 404 costs the latency.
		{"serial", func(m TransferModel) TransferModel { return m }, []span{{0, 110}, {110, 170}, {170, 180}}},
		{"two connections", func(m TransferModel) TransferModel { m.Concurrency = 2; return m }, []span{{0, 110}, {0, 60}, {60, 70}}},
		{"dispatch delay", func(m TransferModel) TransferModel { m.DispatchMs = 5; return m }, []span{{5, 115}, {115, 175}, {175, 185}}},
		// 100 bytes completed when the second would launch: budget reached.
		{"byte budget", func(m TransferModel) TransferModel { m.MaxBytes = 100; return m }, []span{{0, 110}}},
		{"deadline", func(m TransferModel) TransferModel { m.DeadlineMs = 150; return m }, []span{{0, 110}, {110, 170}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.model(m).Schedule(cands, bucket)
			if len(got) != len(tt.want) {
				t.Fatalf("%d downloads, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, d := range got {
				if d.StartMs != tt.want[i].start || d.EndMs != tt.want[i].end {
					t.Errorf("download %d: %v-%v, want %v", i, d.StartMs, d.EndMs, tt.want[i])
				}
			}
			if got[0].Size != 100 || !got[0].Exists || len(got) > 2 && got[2].Exists {
				t.Errorf("sizes and existence: %+v", got)
			}
		})
	}
}

func TestAdmit(t *testing.T) {
	cands := []wire.PrefetchCandidate{
		{CacheKey: key('a'), CrateName: "a"},
		{CacheKey: "serde-key", CrateName: "serde"},
		{CacheKey: key('a'), CrateName: "a"},
		{CacheKey: key('b'), CrateName: "../b"},
		{CacheKey: key('c'), CrateName: "c"},
		{CacheKey: key('d'), CrateName: "d"},
	}
	got := TransferModel{MaxKeys: 2}.Admit(cands)
	if len(got) != 2 || got[0].CacheKey != key('a') || got[1].CacheKey != key('c') {
		t.Errorf("admitted %+v", got)
	}
}

func TestSimulate(t *testing.T) {
	// a <- b: b waits for a. One slot, restores take 10 ms, GETs 10 ms + 1 ms/byte.
	units := func() []Unit {
		return []Unit{
			{Key: key('a'), SizeBytes: 20, CompileMs: 1000, Available: true},
			{Key: key('b'), SizeBytes: 20, CompileMs: 500, Deps: []int{0}},
		}
	}
	bm := BuildModel{Slots: 1, RestoreMs: 10, RestoreBytesPerMs: math.Inf(1)}
	tm := TransferModel{LatencyMs: 10, BytesPerMs: 1}
	tests := []struct {
		name       string
		prefetched []*Download
		wantWall   float64
		wantOnTime int
	}{
		// a is fetched on demand (30) and restored (10), b compiles (500).
		{"no prefetch", []*Download{nil, nil}, 540, 0},
		// a arrived before the build started: restore only.
		{"on time", []*Download{{StartMs: 0, EndMs: 0}, nil}, 510, 1},
		// a is still downloading at its demand: wait 25, restore 10.
		{"late", []*Download{{StartMs: 0, EndMs: 25}, nil}, 535, 0},
		// a's download has not started: fetched on demand instead.
		{"not started", []*Download{{StartMs: 5, EndMs: 35}, nil}, 540, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Build{Units: units()}
			res := bm.Simulate(b, tt.prefetched, tm)
			if res.WallMs != tt.wantWall || res.OnTime != tt.wantOnTime {
				t.Errorf("wall %v on time %d, want %v %d", res.WallMs, res.OnTime, tt.wantWall, tt.wantOnTime)
			}
			if tt.wantOnTime == 1 && res.CompileMsSaved != 1000 {
				t.Errorf("saved %d, want 1000", res.CompileMsSaved)
			}
		})
	}
}
