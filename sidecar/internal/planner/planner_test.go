package planner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
)

// goleveldb's memdb pool drain ends on its own tick after Close; it is the
// library's timer, not a goroutine of ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"))
}

func key(n int) string { return fmt.Sprintf("%064x", n) }

func execPlan(planner string, n int) wire.PrefetchPlan {
	return wire.PrefetchPlan{PlanID: "plan-" + planner, Planner: planner, Disposition: wire.Execute,
		Candidates: []wire.PrefetchCandidate{{CacheKey: key(n), CrateName: "serde", Source: wire.SourceShard}}}
}

func encode(t *testing.T, p wire.PrefetchPlan) []byte {
	t.Helper()
	b, err := p.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeHints is an in-memory hint cache.
type fakeHints struct {
	mu   sync.Mutex
	m    map[hints.Key]hints.Hint
	puts int
}

func newFakeHints() *fakeHints { return &fakeHints{m: map[hints.Key]hints.Hint{}} }

func (f *fakeHints) Get(k hints.Key) (hints.Hint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.m[k]
	if !ok {
		return hints.Hint{}, hints.ErrNotFound
	}
	return h, nil
}

// Version: the fake keeps none, so the planner reads the hint every time
// (tests write f.m directly).
func (f *fakeHints) Version(hints.Key) (uint64, bool) { return 0, false }

func (f *fakeHints) Put(k hints.Key, h hints.Hint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[k] = h
	f.puts++
	return nil
}

func (f *fakeHints) get(k hints.Key) (hints.Hint, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.m[k]
	return h, ok
}

// fakePlanner is a central or bucket answering with plan/err after delay
// (cut short by ctx only when honourCtx).
type fakePlanner struct {
	plan      wire.PrefetchPlan
	err       error
	delay     time.Duration
	honourCtx bool
	// block, when set, holds every call until it is closed or ctx ends.
	block chan struct{}

	calls atomic.Int32
	mu    sync.Mutex
	last  *wire.BuildIntent
}

func (f *fakePlanner) Plan(ctx context.Context, in *wire.BuildIntent) (wire.PrefetchPlan, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.last = in
	f.mu.Unlock()
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return wire.PrefetchPlan{}, ctx.Err()
		}
	}
	if f.delay > 0 {
		if f.honourCtx {
			select {
			case <-time.After(f.delay):
			case <-ctx.Done():
				return wire.PrefetchPlan{}, ctx.Err()
			}
		} else {
			time.Sleep(f.delay)
		}
	}
	return f.plan, f.err
}

func (f *fakePlanner) lastIntent() *wire.BuildIntent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

var t0 = time.Unix(1767225600, 0)

func intent() *wire.BuildIntent {
	return &wire.BuildIntent{CrateNames: []string{"serde"}, Namespace: nil, CargoLockDeps: []wire.LockDep{}}
}

func newPlanner(t *testing.T, cfg Config, deps Deps) *Planner {
	t.Helper()
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return p
}

func TestChain(t *testing.T) {
	const deadline = 150 * time.Millisecond
	centralErr := errors.New("connection refused")
	tests := []struct {
		name string
		// hintAge stores a hint of this age before planning; negative
		// means no hint.
		hintAge    time.Duration
		central    *fakePlanner
		bucket     *fakePlanner
		noHints    bool
		want       Source
		wantPlanBy string
		wantDisp   wire.Disposition
		wantStored bool
	}{
		{
			name: "fresh hint, central not asked", hintAge: time.Second,
			central: &fakePlanner{plan: execPlan("central", 2)}, bucket: &fakePlanner{plan: execPlan("bucket", 3)},
			want: SourceHint, wantPlanBy: "hint", wantDisp: wire.Execute,
		},
		{
			name: "no hint, central executes and is stored", hintAge: -1,
			central: &fakePlanner{plan: execPlan("central", 2)}, bucket: &fakePlanner{plan: execPlan("bucket", 3)},
			want: SourceCentral, wantPlanBy: "central", wantDisp: wire.Execute, wantStored: true,
		},
		{
			name: "old hint, central executes", hintAge: time.Hour,
			central: &fakePlanner{plan: execPlan("central", 2)},
			want:    SourceCentral, wantPlanBy: "central", wantDisp: wire.Execute, wantStored: true,
		},
		{
			name: "central says do_nothing", hintAge: -1,
			central: &fakePlanner{plan: wire.PrefetchPlan{Planner: "central", Disposition: wire.DoNothing, Candidates: []wire.PrefetchCandidate{}}},
			bucket:  &fakePlanner{plan: execPlan("bucket", 3)},
			want:    SourceCentral, wantPlanBy: "central", wantDisp: wire.DoNothing,
		},
		{
			name: "central down, stale hint", hintAge: time.Hour,
			central: &fakePlanner{err: centralErr}, bucket: &fakePlanner{plan: execPlan("bucket", 3)},
			want: SourceStaleHint, wantPlanBy: "hint", wantDisp: wire.Execute,
		},
		{
			name: "central slow, stale hint", hintAge: time.Hour,
			central: &fakePlanner{plan: execPlan("central", 2), delay: 10 * time.Second, honourCtx: true},
			want:    SourceStaleHint, wantPlanBy: "hint", wantDisp: wire.Execute,
		},
		{
			name: "central use_fallback, stale hint", hintAge: time.Hour,
			central: &fakePlanner{plan: wire.PrefetchPlan{Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}},
			want:    SourceStaleHint, wantPlanBy: "hint", wantDisp: wire.Execute,
		},
		{
			name: "central execute with no candidates counts as no plan", hintAge: -1,
			central: &fakePlanner{plan: wire.PrefetchPlan{Disposition: wire.Execute, Candidates: []wire.PrefetchCandidate{}}},
			bucket:  &fakePlanner{plan: execPlan("bucket", 3)},
			want:    SourceBucket, wantPlanBy: "bucket", wantDisp: wire.Execute,
		},
		{
			name: "hint too old to serve stale, central down, bucket plans", hintAge: 30 * 24 * time.Hour,
			central: &fakePlanner{err: centralErr}, bucket: &fakePlanner{plan: execPlan("bucket", 3)},
			want: SourceBucket, wantPlanBy: "bucket", wantDisp: wire.Execute,
		},
		{
			name: "central down, no hint, bucket plans", hintAge: -1,
			central: &fakePlanner{err: centralErr}, bucket: &fakePlanner{plan: execPlan("bucket", 3)},
			want: SourceBucket, wantPlanBy: "bucket", wantDisp: wire.Execute,
		},
		{
			name: "central slow, bucket plans in the remaining time", hintAge: -1,
			central: &fakePlanner{delay: 10 * time.Second, honourCtx: true},
			bucket:  &fakePlanner{plan: execPlan("bucket", 3), delay: 20 * time.Millisecond, honourCtx: true},
			want:    SourceBucket, wantPlanBy: "bucket", wantDisp: wire.Execute,
		},
		{
			name: "central use_fallback, empty bucket", hintAge: -1,
			central: &fakePlanner{plan: wire.PrefetchPlan{Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}},
			bucket:  &fakePlanner{plan: wire.PrefetchPlan{Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}},
			want:    SourceFallback, wantPlanBy: "kache-sidecar", wantDisp: wire.UseFallback,
		},
		{
			name: "bucket error", hintAge: -1,
			central: &fakePlanner{err: centralErr}, bucket: &fakePlanner{err: errors.New("history failed")},
			want: SourceFallback, wantPlanBy: "kache-sidecar", wantDisp: wire.UseFallback,
		},
		{
			name: "everything ignores the deadline", hintAge: -1,
			central: &fakePlanner{plan: execPlan("central", 2), delay: time.Second},
			bucket:  &fakePlanner{plan: execPlan("bucket", 3), delay: time.Second},
			want:    SourceFallback, wantPlanBy: "kache-sidecar", wantDisp: wire.UseFallback,
		},
		{
			name: "nothing configured", hintAge: -1, noHints: true,
			want: SourceFallback, wantPlanBy: "kache-sidecar", wantDisp: wire.UseFallback,
		},
		{
			name: "no central, old hint served stale", hintAge: time.Hour,
			bucket: &fakePlanner{plan: execPlan("bucket", 3)},
			want:   SourceStaleHint, wantPlanBy: "hint", wantDisp: wire.Execute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{now: t0}
			fh := newFakeHints()
			in := intent()
			if tt.hintAge >= 0 {
				fh.m[hints.KeyOf(in)] = hints.Hint{Plan: encode(t, execPlan("hint", 1)), StoredAt: t0.Add(-tt.hintAge), Source: "central"}
			}
			deps := Deps{Hints: fh, Now: clk.Now}
			if tt.noHints {
				deps.Hints = nil
			}
			if tt.central != nil {
				deps.Central = tt.central
			}
			if tt.bucket != nil {
				deps.Bucket = tt.bucket
			}
			p := newPlanner(t, Config{Deadline: deadline, FreshFor: 10 * time.Minute, RefreshAfter: 5 * time.Minute}, deps)
			start := time.Now()
			res := p.Plan(context.Background(), in)
			elapsed := time.Since(start)
			if elapsed > deadline+50*time.Millisecond {
				t.Errorf("answered after %v, deadline %v", elapsed, deadline)
			}
			if res.Source != tt.want || res.Plan.Planner != tt.wantPlanBy || res.Plan.Disposition != tt.wantDisp {
				t.Errorf("answer = %s from %s (%s), want %s from %s (%s)", res.Source, res.Plan.Planner, res.Plan.Disposition, tt.want, tt.wantPlanBy, tt.wantDisp)
			}
			if res.Plan.Candidates == nil {
				t.Error("candidates are nil")
			}
			if tt.wantStored {
				waitFor(t, func() bool {
					h, ok := fh.get(hints.KeyOf(in))
					return ok && h.StoredAt.Equal(t0) && h.Source == "central"
				})
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRefreshInBackground(t *testing.T) {
	clk := &clock{now: t0}
	fh := newFakeHints()
	in := intent()
	k := hints.KeyOf(in)
	fh.m[k] = hints.Hint{Plan: encode(t, execPlan("hint", 1)), StoredAt: t0.Add(-2 * time.Minute), Source: "central"}
	block := make(chan struct{})
	central := &fakePlanner{plan: execPlan("central", 2), block: block}
	p := newPlanner(t, Config{FreshFor: 10 * time.Minute, RefreshAfter: time.Minute}, Deps{Hints: fh, Central: central, Now: clk.Now})

	// Many requests while the refresh is held: every one is answered from
	// the hint and only one refresh runs.
	for range 5 {
		if res := p.Plan(context.Background(), intent()); res.Source != SourceHint || res.HintAge != 2*time.Minute {
			t.Fatalf("answer from %s age %v, want the hint aged 2m", res.Source, res.HintAge)
		}
	}
	waitFor(t, func() bool { return central.calls.Load() == 1 })
	close(block)
	waitFor(t, func() bool {
		h, _ := fh.get(k)
		return h.StoredAt.Equal(t0)
	})
	if n := central.calls.Load(); n != 1 {
		t.Errorf("central asked %d times, want one refresh", n)
	}
	if res := p.Plan(context.Background(), intent()); res.Source != SourceHint || res.Plan.Planner != "central" {
		t.Errorf("after refresh: %s from %s, want the refreshed hint", res.Source, res.Plan.Planner)
	}
}

func TestYoungHintIsNotRefreshed(t *testing.T) {
	clk := &clock{now: t0}
	fh := newFakeHints()
	in := intent()
	fh.m[hints.KeyOf(in)] = hints.Hint{Plan: encode(t, execPlan("hint", 1)), StoredAt: t0.Add(-10 * time.Second)}
	central := &fakePlanner{plan: execPlan("central", 2)}
	p := newPlanner(t, Config{}, Deps{Hints: fh, Central: central, Now: clk.Now})
	if res := p.Plan(context.Background(), in); res.Source != SourceHint {
		t.Fatalf("source = %s", res.Source)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := central.calls.Load(); n != 0 {
		t.Errorf("central asked %d times for a 10s-old hint", n)
	}
}

func TestRefreshesAreBounded(t *testing.T) {
	clk := &clock{now: t0}
	fh := newFakeHints()
	block := make(chan struct{})
	central := &fakePlanner{plan: execPlan("central", 2), block: block}
	p := newPlanner(t, Config{MaxRefreshes: 2}, Deps{Hints: fh, Central: central, Now: clk.Now})
	for i := range 5 {
		in := intent()
		in.CrateNames = []string{fmt.Sprintf("crate%d", i)}
		fh.m[hints.KeyOf(in)] = hints.Hint{Plan: encode(t, execPlan("hint", 1)), StoredAt: t0.Add(-5 * time.Minute)}
		if res := p.Plan(context.Background(), in); res.Source != SourceHint {
			t.Fatalf("source = %s", res.Source)
		}
	}
	waitFor(t, func() bool { return central.calls.Load() == 2 })
	time.Sleep(20 * time.Millisecond)
	if n := central.calls.Load(); n != 2 {
		t.Errorf("%d refreshes ran at once, want 2", n)
	}
	close(block)
}

func TestEnrich(t *testing.T) {
	runner := &wire.RunnerContext{Repository: "acme/app", Commit: "abc"}
	tests := []struct {
		name       string
		in         *wire.BuildIntent
		wantRepo   string
		wantTarget string
	}{
		{name: "plain kache intent gets the runner", in: intent(), wantRepo: "acme/app", wantTarget: "x86_64-unknown-linux-gnu"},
		{name: "intent's own context wins", in: &wire.BuildIntent{CrateNames: []string{"a"}, Target: "aarch64-apple-darwin",
			Runner: &wire.RunnerContext{Repository: "other/repo"}}, wantRepo: "other/repo", wantTarget: "aarch64-apple-darwin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			central := &fakePlanner{plan: execPlan("central", 1)}
			p := newPlanner(t, Config{Runner: runner, Target: "x86_64-unknown-linux-gnu"}, Deps{Central: central})
			p.Plan(context.Background(), tt.in)
			got := central.lastIntent()
			if got == nil || got.Runner == nil || got.Runner.Repository != tt.wantRepo || got.Target != tt.wantTarget {
				t.Fatalf("central saw %+v, want repository %q target %q", got, tt.wantRepo, tt.wantTarget)
			}
			if got == tt.in {
				t.Error("the caller's intent was passed on, not a copy")
			}
			if tt.in.Runner == nil && tt.in.Target != "" {
				t.Error("the caller's intent was modified")
			}
		})
	}
}

func TestUnusableHintIsIgnored(t *testing.T) {
	tests := map[string][]byte{
		"not JSON":          []byte("garbage"),
		"use_fallback plan": []byte(`{"disposition":"use_fallback","candidates":[]}`),
		"null candidates":   []byte(`{"disposition":"execute","candidates":null}`),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			fh := newFakeHints()
			in := intent()
			fh.m[hints.KeyOf(in)] = hints.Hint{Plan: b, StoredAt: t0}
			clk := &clock{now: t0}
			p := newPlanner(t, Config{}, Deps{Hints: fh, Bucket: &fakePlanner{plan: execPlan("bucket", 1)}, Now: clk.Now})
			if res := p.Plan(context.Background(), in); res.Source != SourceBucket {
				t.Errorf("source = %s, want bucket past an unusable hint", res.Source)
			}
		})
	}
}

func TestStopEndsInFlightWork(t *testing.T) {
	central := &fakePlanner{block: make(chan struct{})}
	p, err := New(Config{Deadline: 10 * time.Second}, Deps{Central: central})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Result, 1)
	go func() { done <- p.Plan(context.Background(), intent()) }()
	waitFor(t, func() bool { return central.calls.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.Source != SourceFallback {
			t.Errorf("source = %s, want fallback after Stop", res.Source)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Plan did not return after Stop")
	}
	// After Stop nothing is started, but answers still come.
	if res := p.Plan(context.Background(), intent()); res.Source != SourceFallback {
		t.Errorf("source after Stop = %s", res.Source)
	}
}

func TestNewRejectsRefreshAfterFresh(t *testing.T) {
	if _, err := New(Config{FreshFor: time.Minute, RefreshAfter: time.Hour}, Deps{}); err == nil {
		t.Error("New accepted a refresh age above the fresh age")
	}
}

func TestResultCarriesEnrichedIntent(t *testing.T) {
	p := newPlanner(t, Config{Runner: &wire.RunnerContext{Repository: "acme/app"}, Target: "x86_64-unknown-linux-gnu"}, Deps{})
	in := intent()
	res := p.Plan(context.Background(), in)
	if res.Intent == nil || res.Intent.Runner == nil || res.Intent.Runner.Repository != "acme/app" || res.Intent.Target != "x86_64-unknown-linux-gnu" {
		t.Errorf("Result.Intent = %+v, want the enriched intent", res.Intent)
	}
	if in.Runner != nil || in.Target != "" {
		t.Error("the caller's intent was modified")
	}
}

func TestDecodedHintMemo(t *testing.T) {
	clk := &clock{now: t0}
	fh := newFakeHints()
	in := intent()
	k := hints.KeyOf(in)
	fh.m[k] = hints.Hint{Plan: encode(t, execPlan("hint", 1)), StoredAt: t0.Add(-time.Second)}
	p := newPlanner(t, Config{}, Deps{Hints: fh, Now: clk.Now})

	first := p.Plan(context.Background(), in)
	// Answers of one decoded hint share its candidates (read-only) and
	// its encoded tail.
	second := p.Plan(context.Background(), in)
	if second.Plan.Candidates[0].CacheKey != key(1) || &second.Plan.Candidates[0] != &first.Plan.Candidates[0] {
		t.Errorf("second answer = %q, want the stored key, decoded once", second.Plan.Candidates[0].CacheKey)
	}
	if second.Tail == nil || &second.Tail[0] != &first.Tail[0] {
		t.Error("second answer has no tail, or encoded it again")
	}
	// A newer hint under the same key replaces the memo.
	fh.m[k] = hints.Hint{Plan: encode(t, execPlan("hint", 2)), StoredAt: t0}
	if res := p.Plan(context.Background(), in); res.Plan.Candidates[0].CacheKey != key(2) {
		t.Errorf("after a new hint: %q, want %q", res.Plan.Candidates[0].CacheKey, key(2))
	}
}

func TestDecodedHintMemoIsBounded(t *testing.T) {
	clk := &clock{now: t0}
	fh := newFakeHints()
	p := newPlanner(t, Config{}, Deps{Hints: fh, Now: clk.Now})
	for i := range maxDecoded + 10 {
		in := intent()
		in.CrateNames = []string{fmt.Sprintf("c%d", i)}
		fh.m[hints.KeyOf(in)] = hints.Hint{Plan: encode(t, execPlan("hint", i)), StoredAt: t0}
		if res := p.Plan(context.Background(), in); res.Source != SourceHint || res.Plan.Candidates[0].CacheKey != key(i) {
			t.Fatalf("intent %d: %s %+v", i, res.Source, res.Plan.Candidates)
		}
	}
	p.decodedMu.Lock()
	n := len(p.decoded)
	p.decodedMu.Unlock()
	if n > maxDecoded {
		t.Errorf("memo holds %d plans, bound %d", n, maxDecoded)
	}
}

// The bucket plan costs a GET per shard: it starts only when central fails or
// has not answered within BucketAfter.
func TestBucketStartsOnlyWhenCentralIsLate(t *testing.T) {
	cases := []struct {
		name        string
		central     *fakePlanner
		want        Source
		bucketCalls int32
	}{
		{"central answers at once", &fakePlanner{plan: execPlan("central", 2)}, SourceCentral, 0},
		{"central fails at once", &fakePlanner{err: errors.New("connection refused")}, SourceBucket, 1},
		{"central answers after BucketAfter", &fakePlanner{plan: execPlan("central", 2), delay: 80 * time.Millisecond}, SourceCentral, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bucket := &fakePlanner{plan: execPlan("bucket", 3)}
			p := newPlanner(t, Config{Deadline: 300 * time.Millisecond, BucketAfter: 30 * time.Millisecond},
				Deps{Central: tc.central, Bucket: bucket})
			res := p.Plan(context.Background(), intent())
			if res.Source != tc.want || bucket.calls.Load() != tc.bucketCalls {
				t.Fatalf("source %s with %d bucket calls, want %s with %d", res.Source, bucket.calls.Load(), tc.want, tc.bucketCalls)
			}
		})
	}
}
