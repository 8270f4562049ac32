package runner

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func ptr[T any](v T) *T { return &v }

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var lockDeps = []wire.LockDep{{Name: "app", Version: "0.1.0"}, {Name: "proc-macro2", Version: "1.0.86"}, {Name: "serde", Version: "1.0.210"}}

// warmIntent is what `kache-sidecar warm -- cargo build --release` sends.
func warmIntent() *wire.BuildIntent {
	return &wire.BuildIntent{
		CrateNames: []string{"proc-macro2", "serde", "app"}, CargoLockDeps: lockDeps,
		Target: "x86_64-unknown-linux-gnu", Profile: "release", Toolchain: "1.82.0", Features: []string{"fast"},
		Runner: &wire.RunnerContext{Repository: "acme/app", Commit: "abc", GitRef: "refs/heads/main"},
	}
}

// kacheIntent is what kache sends without KACHE_NAMESPACE.
func kacheIntent() *wire.BuildIntent {
	return &wire.BuildIntent{CrateNames: []string{"proc-macro2", "serde", "app"}, CargoLockDeps: []wire.LockDep{}}
}

func TestJobOf(t *testing.T) {
	if _, ok := JobOf(kacheIntent()); ok {
		t.Error("kache's intent describes no job")
	}
	ns := kacheIntent()
	ns.Namespace, ns.CargoLockDeps = ptr("ci"), lockDeps
	if _, ok := JobOf(ns); ok {
		t.Error("kache's namespaced intent describes no job")
	}
	in := warmIntent()
	j, ok := JobOf(in)
	if !ok {
		t.Fatal("warm's intent describes a job")
	}
	want := Job{Runner: in.Runner, Target: in.Target, Profile: "release", Features: []string{"fast"}, Toolchain: "1.82.0", LockDeps: lockDeps}
	if !reflect.DeepEqual(j, want) {
		t.Fatalf("job %+v, want %+v", j, want)
	}
	in.Runner.Commit, in.Features[0], in.CargoLockDeps = "changed", "changed", nil
	if j.Runner.Commit != "abc" || j.Features[0] != "fast" || len(j.LockDeps) != 3 {
		t.Error("the job shares the intent's memory")
	}
}

func TestJobContextApply(t *testing.T) {
	tests := []struct {
		name    string
		intent  func() *wire.BuildIntent
		applies bool
	}{
		{"kache's intent of the workspace", kacheIntent, true},
		{"kache's intent with the same lock deps", func() *wire.BuildIntent {
			in := kacheIntent()
			in.Namespace, in.CargoLockDeps = ptr("ci"), []wire.LockDep{lockDeps[2], lockDeps[0], lockDeps[1]}
			return in
		}, true},
		{"a subset of the workspace's crates", func() *wire.BuildIntent {
			return &wire.BuildIntent{CrateNames: []string{"serde"}}
		}, true},
		{"a crate of another workspace", func() *wire.BuildIntent {
			in := kacheIntent()
			in.CrateNames = append(in.CrateNames, "tokio")
			return in
		}, false},
		{"other lock deps", func() *wire.BuildIntent {
			in := kacheIntent()
			in.Namespace, in.CargoLockDeps = ptr("ci"), []wire.LockDep{{Name: "serde", Version: "1.0.211"}}
			return in
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewJobContext(time.Hour, nil)
			j, _ := JobOf(warmIntent())
			c.Set(j)
			in := tt.intent()
			before := *in
			got, ok := c.Apply(in)
			if ok != tt.applies {
				t.Fatalf("applied %v, want %v", ok, tt.applies)
			}
			if !reflect.DeepEqual(*in, before) {
				t.Error("Apply modified the caller's intent")
			}
			if !ok {
				if got != in {
					t.Error("an intent the job does not apply to must come back as is")
				}
				return
			}
			if got.Target != j.Target || got.Profile != "release" || got.Toolchain != "1.82.0" || got.Runner.Repository != "acme/app" ||
				len(got.Features) != 1 || len(got.CargoLockDeps) != 3 {
				t.Errorf("applied intent %+v", got)
			}
			if !reflect.DeepEqual(got.CrateNames, in.CrateNames) || got.Namespace != in.Namespace && *got.Namespace != *in.Namespace {
				t.Errorf("kache's own fields changed: %+v", got)
			}
		})
	}
	t.Run("the intent's own dimensions win", func(t *testing.T) {
		c := NewJobContext(time.Hour, nil)
		j, _ := JobOf(warmIntent())
		c.Set(j)
		in := kacheIntent()
		in.Profile = "debug"
		if got, _ := c.Apply(in); got.Profile != "debug" {
			t.Errorf("profile %q", got.Profile)
		}
	})
}

func TestJobContextIdle(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	c := NewJobContext(10*time.Minute, clock.now)
	if _, ok := c.Apply(kacheIntent()); ok {
		t.Fatal("no job set yet")
	}
	j, _ := JobOf(warmIntent())
	c.Set(j)
	clock.advance(9 * time.Minute)
	c.Touch() // a read through the S3 surface
	clock.advance(9 * time.Minute)
	if _, ok := c.Apply(kacheIntent()); !ok {
		t.Fatal("activity keeps the job")
	}
	clock.advance(9 * time.Minute)
	if _, ok := c.Current(); !ok {
		t.Fatal("a plan request is activity")
	}
	clock.advance(11 * time.Minute)
	if _, ok := c.Current(); ok {
		t.Fatal("the job outlived its idle period")
	}
	c.Touch()
	if _, ok := c.Apply(kacheIntent()); ok {
		t.Fatal("Touch revived an ended job")
	}
	c.Set(j)
	c.End()
	if _, ok := c.Current(); ok {
		t.Fatal("End kept the job")
	}
}

func TestJobContextLearn(t *testing.T) {
	c := NewJobContext(time.Hour, nil)
	c.Learn(kacheIntent()) // no namespace: nothing to learn
	m := wire.BuildManifest{}
	c.AnnotateBuild(&m)
	if m.Namespace != nil || m.CargoLockDeps != nil {
		t.Fatalf("annotated from nothing: %+v", m)
	}
	in := kacheIntent()
	in.Namespace, in.CargoLockDeps = ptr("ci"), lockDeps
	c.Learn(in)
	if _, ok := c.Current(); ok {
		t.Error("a learned job is not warm's")
	}
	if got, ok := c.Apply(in); ok || got != in {
		t.Error("a learned job adds nothing to kache's intents")
	}
	c.AnnotateBuild(&m)
	if m.Namespace == nil || *m.Namespace != "ci" || len(m.CargoLockDeps) != 3 || m.Profile != "" {
		t.Fatalf("annotated %+v", m)
	}

	j, _ := JobOf(warmIntent())
	c.Set(j)
	other := kacheIntent()
	other.Namespace, other.CargoLockDeps = ptr("other"), lockDeps[:1]
	c.Learn(other)
	if got, ok := c.Current(); !ok || got.Profile != "release" {
		t.Error("kache's intent replaced warm's job")
	}
}

func TestJobContextAnnotate(t *testing.T) {
	c := NewJobContext(time.Hour, nil)
	j, _ := JobOf(warmIntent())
	j.Namespace = ptr("ci")
	c.Set(j)

	build := wire.BuildManifest{ManifestKey: "x86_64-unknown-linux-gnu", Entries: []wire.ManifestEntry{{CacheKey: "k", CrateName: "serde"}}}
	c.AnnotateBuild(&build)
	if build.Target != j.Target || build.Profile != "release" || build.Toolchain != "1.82.0" || build.Runner.Repository != "acme/app" ||
		*build.Namespace != "ci" || len(build.CargoLockDeps) != 3 {
		t.Errorf("build manifest %+v", build)
	}

	packs := wire.BuildManifest{ManifestKey: "sidecar-observed", Target: "aarch64-apple-darwin", Profile: "debug"}
	c.AnnotatePacks(&packs)
	if packs.Target != "aarch64-apple-darwin" || packs.Profile != "debug" || packs.Toolchain != "1.82.0" || packs.Runner == nil ||
		packs.Namespace != nil || packs.CargoLockDeps != nil {
		t.Errorf("packs manifest %+v: meta.json's dimensions win, and packs get no lock deps", packs)
	}
}
