package planner

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
)

// profileCentral plans by the intent's profile: each profile maps to key
// indexes of crates, and every plan is in the intent's demand order.
type profileCentral struct {
	byProfile map[string][]cand

	mu      sync.Mutex
	intents []wire.BuildIntent
}

type cand struct {
	key   int
	crate string
}

func (c *profileCentral) Plan(_ context.Context, in *wire.BuildIntent) (wire.PrefetchPlan, error) {
	c.mu.Lock()
	c.intents = append(c.intents, *in)
	c.mu.Unlock()
	cs, ok := c.byProfile[in.Profile]
	if !ok {
		return wire.PrefetchPlan{Planner: "central", Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}, nil
	}
	plan := wire.PrefetchPlan{PlanID: "plan-central", Planner: "central", Disposition: wire.Execute}
	for _, c := range cs {
		plan.Candidates = append(plan.Candidates, wire.PrefetchCandidate{CacheKey: key(c.key), CrateName: c.crate, Source: wire.SourceHistory})
	}
	return inDemandOrder(plan, in), nil
}

func (c *profileCentral) calls() []wire.BuildIntent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.intents)
}

func planKeys(p wire.PrefetchPlan) []string {
	var out []string
	for _, c := range p.Candidates {
		out = append(out, c.CrateName+":"+c.CacheKey[60:])
	}
	return out
}

// waitHint waits for the background write of a hint.
func waitHint(t *testing.T, fh *fakeHints, k hints.Key) {
	t.Helper()
	for range 500 {
		if _, ok := fh.get(k); ok {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("hint never stored")
}

func TestJobContextHandOver(t *testing.T) {
	deps := []wire.LockDep{{Name: "app", Version: "0.1.0"}, {Name: "proc-macro2", Version: "1.0.86"}, {Name: "serde", Version: "1.0.210"}, {Name: "tokio", Version: "1.36.0"}}
	// warm runs in the job's environment and describes it.
	warm := &wire.BuildIntent{
		CrateNames: []string{"proc-macro2", "tokio", "serde", "app"}, CargoLockDeps: deps,
		Target: "x86_64-unknown-linux-gnu", Profile: "release", Toolchain: "1.82.0",
		Runner: &wire.RunnerContext{Repository: "acme/app", Commit: "abc"},
	}
	// kache builds one package's closure, knows none of the job.
	kache := func() *wire.BuildIntent {
		return &wire.BuildIntent{CrateNames: []string{"serde", "proc-macro2", "app"}, CargoLockDeps: []wire.LockDep{}}
	}
	central := &profileCentral{byProfile: map[string][]cand{"release": {{1, "proc_macro2"}, {2, "tokio"}, {3, "serde"}, {4, "app"}}}}
	fh := newFakeHints()
	jobs := runner.NewJobContext(time.Hour, nil)
	// The sidecar container's own configuration: an empty environment.
	p := newPlanner(t, Config{Deadline: time.Second, Target: "x86_64-unknown-linux-gnu"}, Deps{Hints: fh, Central: central, Jobs: jobs})

	res := p.Plan(context.Background(), warm)
	if res.Source != SourceCentral || len(res.Plan.Candidates) != 4 {
		t.Fatalf("warm's plan: %s with %v", res.Source, planKeys(res.Plan))
	}
	if j, ok := jobs.Current(); !ok || j.Profile != "release" || j.Runner.Repository != "acme/app" {
		t.Fatalf("warm's request set no job: %+v", j)
	}
	waitHint(t, fh, hints.JobKeyOf(res.Intent))

	res = p.Plan(context.Background(), kache())
	if res.Source != SourceHint {
		t.Fatalf("kache's request answered by %s, want warm's hint", res.Source)
	}
	if n := len(central.calls()); n != 1 {
		t.Errorf("central asked %d times, want once (by warm)", n)
	}
	// kache's demand indexes (one urgency window: the hint's order), and
	// tokio, which kache does not build, last.
	if got, want := planKeys(res.Plan), []string{"proc_macro2:0001", "serde:0003", "app:0004", "tokio:0002"}; !slices.Equal(got, want) {
		t.Errorf("plan %v, want %v", got, want)
	}
	if in := res.Intent; in.Profile != "release" || in.Toolchain != "1.82.0" || in.Runner == nil || in.Runner.Repository != "acme/app" || len(in.CargoLockDeps) != 4 {
		t.Errorf("kache's intent as planned: %+v", in)
	}

	t.Run("after the job", func(t *testing.T) {
		jobs.End()
		res := p.Plan(context.Background(), kache())
		if res.Source == SourceHint {
			t.Error("kache's request hit the ended job's hint")
		}
		if last := central.calls(); last[len(last)-1].Profile != "" {
			t.Errorf("central got profile %q without a job", last[len(last)-1].Profile)
		}
	})
}

func TestSplitByProfile(t *testing.T) {
	// debug builds use keys 1 and 3, release builds 2 and 3 (a key of an
	// unknown profile, in both plans).
	newCentral := func() *profileCentral {
		return &profileCentral{byProfile: map[string][]cand{
			"debug":   {{1, "serde"}, {3, "syn"}},
			"release": {{2, "serde"}, {3, "syn"}},
		}}
	}
	in := func() *wire.BuildIntent {
		return &wire.BuildIntent{CrateNames: []string{"syn", "serde"}, CargoLockDeps: []wire.LockDep{}}
	}
	tests := []struct {
		name string
		// before are reads before the plan request, with their age;
		// during one read after the request started.
		before []read
		during string
		intent func() *wire.BuildIntent
		want   []string
		calls  int
	}{
		{name: "a read before the request tells the profile", before: []read{{key: key(2)}},
			intent: in, want: []string{"serde:0002", "syn:0003"}, calls: 2},
		{name: "a read during the wait tells the profile", during: key(1),
			intent: in, want: []string{"serde:0001", "syn:0003"}, calls: 2},
		{name: "no read: every profile", intent: in, want: []string{"serde:0001", "syn:0003", "serde:0002"}, calls: 2},
		{name: "a key of both profiles tells nothing", during: key(3),
			intent: in, want: []string{"serde:0001", "syn:0003", "serde:0002"}, calls: 2},
		{name: "a read of an earlier build is too old", before: []read{{key: key(2), at: t0.Add(-time.Minute)}},
			intent: in, want: []string{"serde:0001", "syn:0003", "serde:0002"}, calls: 2},
		{name: "the first revealing read wins", before: []read{{key: key(3)}, {key: key(1)}, {key: key(2)}},
			intent: in, want: []string{"serde:0001", "syn:0003"}, calls: 2},
		{name: "a namespace is not split", intent: func() *wire.BuildIntent {
			i := in()
			ns := "ci"
			i.Namespace = &ns
			return i
		}, want: nil, calls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCentral()
			now := t0
			p := newPlanner(t, Config{Deadline: time.Second, RevealWait: 100 * time.Millisecond, ObservesReads: true},
				Deps{Central: c, Now: func() time.Time { return now }})
			for _, r := range tt.before {
				if !r.at.IsZero() {
					now = r.at
				}
				p.ObserveRead(r.key)
				now = t0
			}
			if tt.during != "" {
				done := make(chan struct{})
				defer func() { <-done }()
				go func() {
					defer close(done)
					time.Sleep(20 * time.Millisecond)
					p.ObserveRead(tt.during)
				}()
			}
			start := time.Now()
			res := p.Plan(context.Background(), tt.intent())
			if got := planKeys(res.Plan); !slices.Equal(got, tt.want) {
				t.Errorf("plan %v, want %v", got, tt.want)
			}
			if n := len(c.calls()); n != tt.calls {
				t.Errorf("central asked %d times, want %d", n, tt.calls)
			}
			if took := time.Since(start); tt.before != nil && tt.before[0].at.IsZero() && took > 50*time.Millisecond {
				t.Errorf("a known profile still waited %v", took)
			}
		})
	}
	t.Run("plans no read can tell apart are answered at once", func(t *testing.T) {
		// Central knows no key's profile: both profiles' plans are the
		// same, so waiting for a read would only delay the answer.
		c := &profileCentral{byProfile: map[string][]cand{
			"debug":   {{1, "serde"}, {3, "syn"}},
			"release": {{1, "serde"}, {3, "syn"}},
		}}
		p := newPlanner(t, Config{Deadline: time.Second, RevealWait: 500 * time.Millisecond, ObservesReads: true}, Deps{Central: c})
		start := time.Now()
		res := p.Plan(context.Background(), in())
		if took := time.Since(start); took > 250*time.Millisecond {
			t.Errorf("answered after %v: waited for a read that could not tell the profile", took)
		}
		if got, want := planKeys(res.Plan), []string{"serde:0001", "syn:0003"}; !slices.Equal(got, want) {
			t.Errorf("plan %v, want %v", got, want)
		}
		if n := len(c.calls()); n != 2 {
			t.Errorf("central asked %d times, want once per profile", n)
		}
	})
	t.Run("off without reads", func(t *testing.T) {
		c := newCentral()
		p := newPlanner(t, Config{Deadline: time.Second}, Deps{Central: c})
		p.Plan(context.Background(), in())
		if n := len(c.calls()); n != 1 {
			t.Errorf("central asked %d times, want once", n)
		}
	})
}

func TestObserveReadRing(t *testing.T) {
	p := newPlanner(t, Config{}, Deps{Now: func() time.Time { return t0 }})
	for i := range maxReads + 10 {
		p.ObserveRead(key(i))
		p.ObserveRead(key(i)) // a pack after its entry manifest counts once
	}
	r := &p.reads
	if r.n != maxReads {
		t.Fatalf("%d reads kept", r.n)
	}
	all := familySet(3)
	fams := map[string]familySet{key(5): 1, key(maxReads + 9): 2}
	if f := r.revealLocked(t0, fams, all); f != 2 {
		t.Errorf("revealed %b; the oldest reads left the ring", f)
	}
}

func TestInDemandOrder(t *testing.T) {
	d := func(n uint32) *uint32 { return &n }
	plan := wire.PrefetchPlan{Disposition: wire.Execute, Candidates: []wire.PrefetchCandidate{
		{CacheKey: key(1), CrateName: "proc_macro2", DemandIndex: d(0), Source: wire.SourceShard},
		{CacheKey: key(2), CrateName: "tokio", DemandIndex: d(1), Source: wire.SourceShard},
		{CacheKey: key(3), CrateName: "serde", DemandIndex: d(2), Source: wire.SourceShard, CompileTimeMs: 10},
		{CacheKey: key(4), CrateName: "serde", DemandIndex: d(2), Source: wire.SourceShard, CompileTimeMs: 20},
	}}
	got := inDemandOrder(plan, &wire.BuildIntent{CrateNames: []string{"serde", "proc-macro2", "serde"}})
	want := []string{"serde:0004", "serde:0003", "proc_macro2:0001", "tokio:0002"}
	if keys := planKeys(got); !slices.Equal(keys, want) {
		t.Fatalf("order %v, want %v", keys, want)
	}
	if c := got.Candidates; *c[0].DemandIndex != 0 || *c[2].DemandIndex != 1 || c[3].DemandIndex != nil {
		t.Errorf("demand indexes %v %v %v", *c[0].DemandIndex, *c[2].DemandIndex, c[3].DemandIndex)
	}
}

// TestJobWithoutProfile: warm ran without the cargo command, so the job
// has no profile. Both of warm's profile plans are kept as the job's hints,
// and kache's request takes the one its first read tells.
func TestJobWithoutProfile(t *testing.T) {
	deps := []wire.LockDep{{Name: "serde", Version: "1.0.210"}, {Name: "syn", Version: "2.0.0"}}
	warm := &wire.BuildIntent{CrateNames: []string{"syn", "serde"}, CargoLockDeps: deps, Toolchain: "1.82.0",
		Runner: &wire.RunnerContext{Repository: "acme/app"}}
	central := &profileCentral{byProfile: map[string][]cand{
		"debug":   {{1, "serde"}, {3, "syn"}},
		"release": {{2, "serde"}, {4, "syn"}},
	}}
	fh := newFakeHints()
	p := newPlanner(t, Config{Deadline: time.Second, RevealWait: 30 * time.Millisecond, ObservesReads: true},
		Deps{Hints: fh, Central: central, Jobs: runner.NewJobContext(time.Hour, nil)})

	res := p.Plan(context.Background(), warm)
	if len(res.Plan.Candidates) != 4 {
		t.Fatalf("warm's plan %v: without reads, every profile's keys", planKeys(res.Plan))
	}
	for _, profile := range []string{"debug", "release"} {
		sub := *res.Intent
		sub.Profile = profile
		waitHint(t, fh, hints.JobKeyOf(&sub))
	}

	p.ObserveRead(key(4))
	res = p.Plan(context.Background(), &wire.BuildIntent{CrateNames: []string{"serde", "syn"}, CargoLockDeps: []wire.LockDep{}})
	if got := planKeys(res.Plan); res.Source != SourceHint || !slices.Equal(got, []string{"serde:0002", "syn:0004"}) {
		t.Errorf("kache's plan %v from %s, want release's from warm's hints", got, res.Source)
	}
	if n := len(central.calls()); n != 2 {
		t.Errorf("central asked %d times, want twice (warm's profiles)", n)
	}
}
