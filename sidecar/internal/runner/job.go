package runner

import (
	"slices"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Job is what the sidecar knows about the job running on its runner. In a
// runner pod the sidecar container does not see the job's environment (CI
// variables are set per job inside the runner container) and kache's
// intent names no target, profile or toolchain; `kache-sidecar warm` runs
// inside the job and hands these over with its plan request.
type Job struct {
	Runner    *wire.RunnerContext
	Target    string
	Profile   string
	Features  []string
	Toolchain string
	// Namespace is kache's namespace of the job (KACHE_NAMESPACE), nil
	// when unset.
	Namespace *string
	// LockDeps are the workspace Cargo.lock's packages.
	LockDeps []wire.LockDep
}

// JobOf reads the job an intent describes. ok is false for an intent that
// says nothing about its job, which is every intent kache sends: kache
// sends crate names, namespace and lock deps only (kache-protocol.md 1.1),
// while warm adds the runner context, target, profile, features and
// toolchain.
func JobOf(in *wire.BuildIntent) (Job, bool) {
	if in.Runner == nil && in.Target == "" && in.Profile == "" && len(in.Features) == 0 && in.Toolchain == "" {
		return Job{}, false
	}
	j := Job{Target: in.Target, Profile: in.Profile, Features: slices.Clone(in.Features), Toolchain: in.Toolchain,
		LockDeps: slices.Clone(in.CargoLockDeps)}
	if in.Runner != nil {
		r := *in.Runner
		j.Runner = &r
	}
	if in.Namespace != nil {
		ns := *in.Namespace
		j.Namespace = &ns
	}
	return j, true
}

// DefaultJobIdle is how long a job context lasts without activity.
const DefaultJobIdle = 30 * time.Minute

// JobContext holds the job running on a runner, which runs one job at a
// time: set by warm's plan request, applied to kache's plan requests for
// the rest of the job, and ended after a period without plan requests or
// reads (Touch), or by the next job's warm. It is safe for concurrent use.
type JobContext struct {
	idle time.Duration
	now  func() time.Time

	mu  sync.Mutex
	job Job
	set bool
	// learned: the job was learned from kache's own intent (Learn), so
	// it holds only kache's namespace and lock deps.
	learned bool
	last    time.Time
	// pkgs are the package names of the job's lock deps, to tell whether
	// an intent is of the job's workspace.
	pkgs map[string]bool
}

// NewJobContext returns an empty context whose jobs end after idle without
// activity (DefaultJobIdle when idle <= 0); now is the clock (time.Now when
// nil).
func NewJobContext(idle time.Duration, now func() time.Time) *JobContext {
	if idle <= 0 {
		idle = DefaultJobIdle
	}
	if now == nil {
		now = time.Now
	}
	return &JobContext{idle: idle, now: now}
}

// Set starts a job, replacing any other.
func (c *JobContext) Set(j Job) {
	pkgs := make(map[string]bool, len(j.LockDeps))
	for _, d := range j.LockDeps {
		pkgs[d.Name] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.job, c.set, c.learned, c.last, c.pkgs = j, true, false, c.now(), pkgs
}

// Learn keeps what kache's own intent tells about the job when no job was
// set: the namespace and lock deps, which kache sends when KACHE_NAMESPACE
// is set. They annotate kache's build manifest (AnnotateBuild) but add
// nothing to kache's intents, so Apply ignores such a job.
func (c *JobContext) Learn(in *wire.BuildIntent) {
	if in.Namespace == nil || len(in.CargoLockDeps) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.activeLocked() && !c.learned {
		return
	}
	ns := *in.Namespace
	c.job, c.set, c.learned, c.last, c.pkgs = Job{Namespace: &ns, LockDeps: slices.Clone(in.CargoLockDeps)}, true, true, c.now(), nil
}

// Current returns the job warm set, if it has not been idle for longer than
// the idle period. The job's slices are shared: callers must not modify
// them.
func (c *JobContext) Current() (Job, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.activeLocked() || c.learned {
		return Job{}, false
	}
	return c.job, true
}

func (c *JobContext) activeLocked() bool {
	if c.set && c.now().Sub(c.last) > c.idle {
		c.job, c.set, c.learned, c.pkgs = Job{}, false, false, nil
	}
	return c.set
}

// Touch records activity of the job (a plan request, a read through the S3
// surface), which keeps it from ending.
func (c *JobContext) Touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.activeLocked() {
		c.last = c.now()
	}
}

// End ends the job.
func (c *JobContext) End() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.job, c.set, c.learned, c.pkgs = Job{}, false, false, nil
}

// Apply returns a copy of in with the job's context where in has none, and
// whether a job applied; in itself is not modified. A job applies only to an
// intent of its workspace: every crate name must be a package of the job's
// Cargo.lock, and lock deps, when both have them, must be the same. The
// copy shares the job's slices: it must not be modified.
func (c *JobContext) Apply(in *wire.BuildIntent) (*wire.BuildIntent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.activeLocked() || c.learned || !c.matchesLocked(in) {
		return in, false
	}
	c.last = c.now()
	j := &c.job
	out := *in
	if out.Runner == nil && j.Runner != nil {
		r := *j.Runner
		out.Runner = &r
	}
	if out.Target == "" {
		out.Target = j.Target
	}
	if out.Profile == "" {
		out.Profile = j.Profile
	}
	if len(out.Features) == 0 {
		out.Features = j.Features
	}
	if out.Toolchain == "" {
		out.Toolchain = j.Toolchain
	}
	if out.Namespace == nil {
		out.Namespace = j.Namespace
	}
	if len(out.CargoLockDeps) == 0 {
		out.CargoLockDeps = j.LockDeps
	}
	return &out, true
}

func (c *JobContext) matchesLocked(in *wire.BuildIntent) bool {
	if len(c.pkgs) > 0 {
		for _, n := range in.CrateNames {
			if !c.pkgs[n] {
				return false
			}
		}
	}
	if len(in.CargoLockDeps) > 0 && len(c.job.LockDeps) > 0 && !sameDeps(in.CargoLockDeps, c.job.LockDeps) {
		return false
	}
	return true
}

// sameDeps compares two lock dep lists as sets; kache sends them sorted.
func sameDeps(a, b []wire.LockDep) bool {
	if len(a) != len(b) {
		return false
	}
	if slices.Equal(a, b) {
		return true
	}
	cmp := func(x, y wire.LockDep) int {
		if x.Name != y.Name {
			if x.Name < y.Name {
				return -1
			}
			return 1
		}
		switch {
		case x.Version < y.Version:
			return -1
		case x.Version > y.Version:
			return 1
		}
		return 0
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// AnnotateBuild adds the job's context to a build manifest kache uploads
// through the sidecar (`_manifests/{key}.json`), where the manifest has
// none, before the sidecar reports it to central: the target, profile,
// toolchain, runner, namespace and lock deps of the job. kache's manifest
// lists every key the build used, so central can link them to the lock
// deps and record the build's identity. Without a job it does nothing.
func (c *JobContext) AnnotateBuild(m *wire.BuildManifest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.activeLocked() {
		return
	}
	j := &c.job
	c.annotateLocked(m)
	if m.Target == "" {
		m.Target = j.Target
	}
	if m.Profile == "" {
		m.Profile = j.Profile
	}
	if m.Namespace == nil && j.Namespace != nil {
		ns := *j.Namespace
		m.Namespace = &ns
	}
	if len(m.CargoLockDeps) == 0 {
		m.CargoLockDeps = slices.Clone(j.LockDeps)
	}
}

// AnnotatePacks adds the job's toolchain and runner to the manifest the
// sidecar reports for packs it saw uploaded (their target, profile and
// features come from each pack's meta.json, which has no toolchain). Lock
// deps are not added: they would make the packs, which are only the keys
// the build compiled, the whole build's identity.
func (c *JobContext) AnnotatePacks(m *wire.BuildManifest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.activeLocked() {
		c.annotateLocked(m)
	}
}

func (c *JobContext) annotateLocked(m *wire.BuildManifest) {
	j := &c.job
	if m.Toolchain == "" {
		m.Toolchain = j.Toolchain
	}
	if m.Runner == nil && j.Runner != nil {
		r := *j.Runner
		m.Runner = &r
	}
}
