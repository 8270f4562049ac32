package replay

import (
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Build is one CI job of one commit, as the policies see it before it runs
// and as the scoring sees it after.
type Build struct {
	// Seq numbers builds in the order they start.
	Seq      int
	Commit   int
	Job      Job
	JobIndex int
	// Namespace is the job's KACHE_NAMESPACE, nil when not set.
	Namespace *string
	Toolchain string
	StartMs   int64
	Lock      *LockGraph
	LockSHA   string
	// First is true on every job of a branch's first commit.
	First bool
	// MainLine is true on the first-parent line of the default branch.
	MainLine bool
	// Host is the runner's host triple, what a sidecar knows from its own
	// configuration; every modeled job builds for its host.
	Host string
	// Runner is the CI context warm reads from the job's environment.
	Runner *wire.RunnerContext
	// Units are what the build compiles, dependencies first.
	Units []Unit
	// Intent is exactly what kache sends (kache-protocol.md 3.7).
	Intent wire.BuildIntent
	// Uploaded[i] says unit i was uploaded by this build: it compiled it
	// and the bucket did not hold it when the build completed. Set at
	// completion.
	Uploaded []bool
	// warmPlans are the plans of warmed policies, asked the lead before the
	// build starts (by policy name).
	warmPlans map[string][]wire.PrefetchCandidate
	// runs are how the build ran under the plans of policies that learn
	// from build timelines (by policy name), kept until it completes.
	runs map[string]*policyRun
}

// policyRun is one build run under one policy's plan: what a timeline
// reports.
type policyRun struct {
	downloads []Download
	sim       SimResult
	// dispatchMs is when the plan's downloads started (negative with a
	// warm lead).
	dispatchMs float64
}

// refreshAvailable sets each unit's Available from the bucket as it is now.
func (b *Build) refreshAvailable(bucket *Bucket) {
	for i := range b.Units {
		u := &b.Units[i]
		_, u.Available = bucket.Get(u.Crate, u.Key)
	}
}

// Unit is one crate version a build compiles.
type Unit struct {
	Pkg     int
	Name    string // Cargo package name
	Crate   string // rustc crate name, the object layout's directory
	Version string
	Key     string
	// CompileMs is what compiling it costs in this build; SizeBytes its
	// compressed artifact.
	CompileMs uint64
	SizeBytes uint64
	// Demand is its name's index in the intent's crate_names.
	Demand int
	// Deps are indexes into Build.Units.
	Deps []int
	// Available: the bucket held its key when the build started.
	Available bool
}

// namespaceFor expands a namespace template ("{target}", "{profile}" and
// "{features}" are replaced); an empty template means KACHE_NAMESPACE unset.
func namespaceFor(tmpl string, j Job) *string {
	if tmpl == "" {
		return nil
	}
	ns := strings.NewReplacer("{target}", j.Target, "{profile}", j.Profile, "{features}", j.Features).Replace(tmpl)
	return &ns
}

// newBuild derives a build's units, their keys and costs, and kache's intent.
func newBuild(r *runner, seq, commit, jobIndex int, g *LockGraph) *Build {
	c := &r.trace.Commits[commit]
	job := r.cfg.Jobs[jobIndex]
	b := &Build{
		Seq: seq, Commit: commit, Job: job, JobIndex: jobIndex,
		Namespace: namespaceFor(r.cfg.Namespace, job),
		Toolchain: Toolchain(r.sched.StartMs[commit]/1000, r.cfg.ToolchainLagSec),
		StartMs:   r.sched.StartMs[commit],
		Lock:      g, LockSHA: c.Lock,
		First: r.sched.FirstOfBranch[commit], MainLine: c.FirstParent,
		Host: job.Target,
	}
	b.Runner = b.runnerContext(r.trace.Project, c.Commit)
	keys := UnitKeys(g, c.Members, job, b.Toolchain, c.Lock)
	unitOf := make(map[int]int, len(g.Units))
	b.Units = make([]Unit, len(g.Units))
	for ui, pi := range g.Units {
		unitOf[pi] = ui
		p := &g.Packages[pi]
		expected, size := r.cfg.Cost.Unit(p.Name, p.Version, job)
		u := Unit{
			Pkg: pi, Name: p.Name, Crate: cargolock.CrateName(p.Name), Version: p.Version,
			Key: keys[pi], CompileMs: r.cfg.Cost.Observed(expected, keys[pi], seq), SizeBytes: size,
			Demand: g.Demand[pi],
		}
		_, u.Available = r.bucket.Get(u.Crate, u.Key)
		b.Units[ui] = u
	}
	for ui, pi := range g.Units {
		deps := make([]int, len(g.Deps[pi]))
		for k, d := range g.Deps[pi] {
			deps[k] = unitOf[d]
		}
		b.Units[ui].Deps = deps
	}
	b.Intent = wire.BuildIntent{CrateNames: g.CrateNames, Namespace: b.Namespace, CargoLockDeps: []wire.LockDep{}}
	if b.Namespace != nil {
		b.Intent.CargoLockDeps = g.LockDeps
	}
	return b
}

// Manifest is what the policies other than planner learn from after the
// build: `kache save-manifest`'s entries (one per key with the crate name,
// compile time and size, in build order) with the namespace and lock deps
// of a namespaced build, which kache's shards and a seed exporter carry, and
// the job's target, profile and toolchain. The planner learns only what
// production delivers to central (deliveries).
func (b *Build) Manifest(endMs int64) wire.BuildManifest {
	m := wire.BuildManifest{
		Version:     3,
		Created:     time.UnixMilli(endMs).UTC().Format(time.RFC3339Nano),
		ManifestKey: b.Job.Target,
		Entries:     make([]wire.ManifestEntry, len(b.Units)),
		Namespace:   b.Namespace,
		Target:      b.Job.Target,
		Profile:     b.Job.Profile,
		Toolchain:   b.Toolchain,
	}
	for i := range b.Units {
		u := &b.Units[i]
		m.Entries[i] = wire.ManifestEntry{CacheKey: u.Key, CrateName: u.Crate, CompileTimeMs: u.CompileMs, ArtifactSize: u.SizeBytes}
	}
	if b.Namespace != nil {
		m.CargoLockDeps = b.Lock.LockDeps
	}
	return m
}
