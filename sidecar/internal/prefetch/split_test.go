package prefetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// rangeFake adds ranged, conditional GETs to a fakeSource. onRange, when
// set, runs at the start of every ranged GET (to change the object between
// parts); ignoreIfMatch answers whatever version is there now; gate blocks
// ranged GETs until closed or cancelled; breakRange makes ranged GETs fail
// mid-body until it is zero.
type rangeFake struct {
	*fakeSource
	onRange       func(key string, r s3source.ByteRange)
	ignoreIfMatch bool
	gate          chan struct{}
	breakRange    atomic.Int32

	mu      sync.Mutex
	ranges  []string // "key off-end if-match" of every ranged GET
	running atomic.Int64
	maxRun  atomic.Int64 // most GETs at once, first GETs and ranges together
}

func newRangeFake() *rangeFake { return &rangeFake{fakeSource: newFake()} }

// with makes the engine use rf for ranged GETs (its first GETs go to the
// embedded fakeSource, which newEngine hands it).
func (rf *rangeFake) with(e *Engine) { e.ranges = rf }

func (rf *rangeFake) enter() func() {
	raisePeak(&rf.maxRun, rf.running.Add(1))
	return func() { rf.running.Add(-1) }
}

func (rf *rangeFake) Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error) {
	defer rf.enter()()
	return rf.fakeSource.Open(ctx, key)
}

func (rf *rangeFake) Get(ctx context.Context, key string, o s3source.GetOptions) (io.ReadCloser, s3source.ObjectInfo, error) {
	defer rf.enter()()
	r := *o.Range
	if rf.onRange != nil {
		rf.onRange(key, r)
	}
	rf.mu.Lock()
	rf.ranges = append(rf.ranges, fmt.Sprintf("%s %d-%d %s", key, r.Start, r.End, o.IfMatch))
	rf.mu.Unlock()
	if rf.gate != nil {
		select {
		case <-rf.gate:
		case <-ctx.Done():
			return nil, s3source.ObjectInfo{}, ctx.Err()
		}
	}
	f := rf.fakeSource
	f.mu.Lock()
	data, ok := f.objects[key]
	etag := f.etags[key]
	f.mu.Unlock()
	if !ok {
		return nil, s3source.ObjectInfo{}, &s3source.APIError{Status: 404, Code: "NoSuchKey", Key: key}
	}
	if !rf.ignoreIfMatch && o.IfMatch != `"`+etag+`"` {
		return nil, s3source.ObjectInfo{}, &s3source.APIError{Status: 412, Code: "PreconditionFailed", Key: key}
	}
	part := data[r.Start : r.End+1]
	info := s3source.ObjectInfo{Object: s3source.Object{Key: key, ETag: etag, Size: int64(len(data))}, ContentLength: int64(len(part))}
	if rf.breakRange.Add(-1) >= 0 {
		return io.NopCloser(io.MultiReader(bytes.NewReader(part[:len(part)/2]), errReader{})), info, nil
	}
	return io.NopCloser(bytes.NewReader(part)), info, nil
}

func (rf *rangeFake) rangeGets() []string {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return append([]string(nil), rf.ranges...)
}

// distinct is a pack body whose every 4 KiB block differs, so a part
// written at the wrong offset shows.
func distinct(size int, seed byte) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i/4096) ^ seed
	}
	copy(b, zstdMagic[:])
	return b
}

func storedBytes(t *testing.T, st *store.Store, r store.Ref) []byte {
	t.Helper()
	f, _, err := st.Open(r)
	if err != nil {
		t.Fatalf("open %s: %v", r, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSplitDownloads(t *testing.T) {
	const big = 1 << 20
	cases := []struct {
		name        string
		cfg         Config
		size        int
		setup       func(rf *rangeFake, key string)
		wantRanges  int    // ranged GETs of the pack
		wantOpens   int    // first GETs of the pack
		wantStored  []byte // nil: the seeded body
		wantFailed  bool
		wantResults map[string]float64 // split metric by result
	}{
		{name: "big object in four parts", cfg: Config{Concurrency: 4}, size: big, wantRanges: 3, wantOpens: 1,
			wantResults: map[string]float64{"ok": 1}},
		{name: "at the threshold not split", cfg: Config{Concurrency: 4, SplitBytes: big}, size: big, wantOpens: 1},
		{name: "split turned off", cfg: Config{Concurrency: 4, SplitParts: 1}, size: big, wantOpens: 1},
		{name: "parts limited by idle lanes", cfg: Config{Concurrency: 2}, size: big, wantRanges: 1, wantOpens: 1,
			wantResults: map[string]float64{"ok": 1}},
		{name: "no idle lane, one part", cfg: Config{Concurrency: 1}, size: big, wantOpens: 1},
		{name: "object changed between parts is fetched again whole", cfg: Config{Concurrency: 4}, size: big,
			setup: func(rf *rangeFake, key string) {
				var once sync.Once
				rf.onRange = func(k string, _ s3source.ByteRange) {
					if k == key {
						once.Do(func() {
							rf.fakeSource.mu.Lock()
							rf.put(key, distinct(big, 0x55))
							rf.fakeSource.mu.Unlock()
						})
					}
				}
			},
			wantRanges: 6, wantOpens: 2, wantStored: distinct(big, 0x55),
			wantResults: map[string]float64{"changed": 1, "ok": 1}},
		{name: "another version's range is refused even without If-Match", cfg: Config{Concurrency: 4}, size: big,
			setup: func(rf *rangeFake, key string) {
				rf.ignoreIfMatch = true
				var once sync.Once
				rf.onRange = func(k string, _ s3source.ByteRange) {
					if k == key {
						once.Do(func() {
							rf.fakeSource.mu.Lock()
							rf.put(key, distinct(big, 0x66))
							rf.fakeSource.mu.Unlock()
						})
					}
				}
			},
			wantRanges: 6, wantOpens: 2, wantStored: distinct(big, 0x66),
			wantResults: map[string]float64{"changed": 1, "ok": 1}},
		{name: "a part broken mid-body retries the whole download", cfg: Config{Concurrency: 4}, size: big,
			setup:      func(rf *rangeFake, _ string) { rf.breakRange.Store(1) },
			wantRanges: 6, wantOpens: 2, wantResults: map[string]float64{"failed": 1, "ok": 1}},
		{name: "wrong bytes fail verification, not retried", cfg: Config{Concurrency: 4}, size: big,
			setup: func(rf *rangeFake, key string) {
				rf.fakeSource.etags[key] = strings.Repeat("e", 32)
			},
			wantRanges: 3, wantOpens: 1, wantFailed: true, wantResults: map[string]float64{"ok": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rf := newRangeFake()
			cands := seed(rf.fakeSource, []int{tc.size})
			// seed's packs are one repeated byte; make every block differ.
			key := layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)
			body := distinct(tc.size, 0)
			rf.put(key, body)
			if tc.setup != nil {
				tc.setup(rf, key)
			}
			cfg := tc.cfg
			if cfg.SplitBytes == 0 {
				cfg.SplitBytes = big / 2
			}
			e, st, _ := newEngine(t, cfg, rf.fakeSource, 0, rf.with)
			s := e.Submit(Plan{Candidates: cands})
			wait(t, s)
			ref := packRefOf(cands[0])
			if tc.wantFailed {
				if p := e.Progress(s); p.Failed != 1 || st.Has(ref) {
					t.Fatalf("progress %+v, stored %v", p, st.Has(ref))
				}
			} else {
				want := tc.wantStored
				if want == nil {
					want = body
				}
				if got := storedBytes(t, st, ref); !bytes.Equal(got, want) {
					t.Fatalf("stored %d bytes differ from the object's %d", len(got), len(want))
				}
			}
			var packRanges []string
			for _, g := range rf.rangeGets() {
				if strings.HasPrefix(g, key+" ") {
					packRanges = append(packRanges, g)
				}
			}
			if len(packRanges) != tc.wantRanges || rf.openCount(key) != tc.wantOpens {
				t.Fatalf("ranged GETs %q, first GETs %d; want %d and %d", packRanges, rf.openCount(key), tc.wantRanges, tc.wantOpens)
			}
			for _, g := range packRanges {
				if !strings.HasSuffix(g, `"`) {
					t.Errorf("ranged GET %q not pinned with If-Match", g)
				}
			}
			for _, r := range []string{"ok", "changed", "failed", "cancelled"} {
				if got := counterValue(t, e.m.splits.WithLabelValues(r)); got != tc.wantResults[r] {
					t.Errorf("split downloads %s = %v, want %v", r, got, tc.wantResults[r])
				}
			}
		})
	}
}

// The parts of a split download are counted against the speculative lanes:
// with three big packs, 4 lanes and no look-ahead, the 4 workers' first GETs
// and the ranged GETs of extra parts (at most 3: they hold the other lanes)
// never exceed 7 at once, every pack arrives whole, and every lane is idle
// again after the plan. A plan size (right or wrong) changes nothing: parts
// take the lanes idle when the body starts.
func TestSplitPartsStayWithinTheLanes(t *testing.T) {
	rf := newRangeFake()
	sizes := []int{300 << 10, 400 << 10, 100, 500 << 10, 100, 200}
	cands := seed(rf.fakeSource, sizes)
	var bodies [][]byte
	for i, c := range cands {
		b := distinct(sizes[i], byte(i))
		rf.put(layout.PackKey("artifacts", c.CrateName, c.CacheKey), b)
		bodies = append(bodies, b)
		cands[i].SizeBytes = uint64(sizes[i])
	}
	cands[2].SizeBytes = 1 << 20 // wrong: the pack is 100 bytes
	e, st, _ := newEngine(t, Config{Concurrency: 4, SplitBytes: 64 << 10, SkipEntryManifests: true}, rf.fakeSource, 0, rf.with)
	s := e.Submit(Plan{Candidates: cands})
	wait(t, s)
	for i, c := range cands {
		if !bytes.Equal(storedBytes(t, st, packRefOf(c)), bodies[i]) {
			t.Fatalf("pack %d differs", i)
		}
	}
	if m := rf.maxRun.Load(); m > 7 {
		t.Fatalf("%d GETs at once over 4 lanes and 4 workers", m)
	}
	if len(rf.rangeGets()) == 0 {
		t.Fatal("nothing was split")
	}
	e.mu.Lock()
	idle := e.idleLanes
	e.mu.Unlock()
	if idle != 4 {
		t.Fatalf("%d lanes idle after the plan, want 4", idle)
	}
}

// Stop ends a split download whose parts hang, and waits for every part.
func TestStopEndsSplitDownload(t *testing.T) {
	rf := newRangeFake()
	rf.gate = make(chan struct{})
	t.Cleanup(func() { close(rf.gate) })
	cands := seed(rf.fakeSource, []int{1 << 20})
	e, st, _ := newEngine(t, Config{Concurrency: 4, SplitBytes: 1 << 10, SkipEntryManifests: true}, rf.fakeSource, 0, rf.with)
	errc := make(chan error, 1)
	go func() { errc <- e.Demand(context.Background(), packRefOf(cands[0])) }()
	waitFor(t, func() bool { return len(rf.rangeGets()) == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rf.running.Load(); n != 0 {
		t.Fatalf("Stop returned with %d GETs running", n)
	}
	if err := recv(t, errc); !errors.Is(err, ErrStopped) {
		t.Fatalf("demand cut by Stop: %v", err)
	}
	if st.Has(packRefOf(cands[0])) || st.Stats().ReservedBytes != 0 {
		t.Fatalf("partial object kept: %+v", st.Stats())
	}
}

// The last waiter leaving cancels a split download: every part ends.
func TestAbandonedSplitDownloadEndsItsParts(t *testing.T) {
	rf := newRangeFake()
	rf.gate = make(chan struct{})
	t.Cleanup(func() { close(rf.gate) })
	cands := seed(rf.fakeSource, []int{1 << 20})
	e, st, _ := newEngine(t, Config{Concurrency: 4, SplitBytes: 1 << 10, SkipEntryManifests: true}, rf.fakeSource, 0, rf.with)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.Demand(ctx, packRefOf(cands[0])) }()
	waitFor(t, func() bool { return len(rf.rangeGets()) == 3 })
	cancel()
	if err := recv(t, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("demand: %v", err)
	}
	waitFor(t, func() bool { return rf.running.Load() == 0 })
	waitFor(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.idleLanes == 4 && len(e.flights) == 0
	})
	if st.Has(packRefOf(cands[0])) || st.Stats().ReservedBytes != 0 {
		t.Fatalf("partial object kept: %+v", st.Stats())
	}
}
