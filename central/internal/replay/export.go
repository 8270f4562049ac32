package replay

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Builds calls yield with every build the replay would run, in start order,
// from the same schedule, keys and costs (Run walks the same loop). It runs
// no policy, so nothing is learnt and the bucket stays empty: every unit's
// Available is false. yield must not keep b's slices beyond the call if it
// mutates them; an error from yield stops the walk and is returned.
func Builds(t *Trace, cfg Config, yield func(b *Build) error) error {
	if len(cfg.Jobs) == 0 {
		return errors.New("list builds: no jobs configured")
	}
	r := &runner{trace: t, cfg: cfg, sched: NewSchedule(t), bucket: NewBucket()}
	return r.eachBuild(nil, yield)
}

// ExportedBuild is one line of `kache-replay --export-builds`: a build as an
// end-to-end client replays it against real binaries.
type ExportedBuild struct {
	Seq    int    `json:"seq"`
	Commit string `json:"commit"`
	Job    Job    `json:"job"`
	// Namespace is the job's KACHE_NAMESPACE, null when unset.
	Namespace *string `json:"namespace"`
	// FirstOfBranch marks every job of a branch's first built commit.
	FirstOfBranch bool   `json:"first_of_branch"`
	MainLine      bool   `json:"main_line"`
	StartMs       int64  `json:"start_ms"`
	Toolchain     string `json:"toolchain"`
	// Intent is exactly what kache posts to its planner.
	Intent wire.BuildIntent `json:"intent"`
	// Units are what the build compiles, dependencies first.
	Units []ExportedUnit `json:"units"`
}

// ExportedUnit is one unit of an exported build.
type ExportedUnit struct {
	// Crate is the object layout's directory (rustc crate name); Name the
	// Cargo package name.
	Crate     string `json:"crate"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Key       string `json:"key"`
	CompileMs uint64 `json:"compile_ms"`
	SizeBytes uint64 `json:"size_bytes"`
	// Demand is the name's index in the intent's crate_names.
	Demand int `json:"demand"`
	// Deps are indexes into the build's units.
	Deps []int `json:"deps"`
}

// Export turns a build into its exported form.
func Export(b *Build, commit string) ExportedBuild {
	e := ExportedBuild{
		Seq: b.Seq, Commit: commit, Job: b.Job, Namespace: b.Namespace,
		FirstOfBranch: b.First, MainLine: b.MainLine, StartMs: b.StartMs, Toolchain: b.Toolchain,
		Intent: b.Intent, Units: make([]ExportedUnit, len(b.Units)),
	}
	for i := range b.Units {
		u := &b.Units[i]
		deps := u.Deps
		if deps == nil {
			deps = []int{}
		}
		e.Units[i] = ExportedUnit{Crate: u.Crate, Name: u.Name, Version: u.Version, Key: u.Key,
			CompileMs: u.CompileMs, SizeBytes: u.SizeBytes, Demand: u.Demand, Deps: deps}
	}
	return e
}

// ExportBuilds writes every build of the replay (cfg.MaxCommits bounds it)
// to w, one JSON line each, in start order, and returns how many it wrote.
func ExportBuilds(w io.Writer, t *Trace, cfg Config) (int, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	n := 0
	err := Builds(t, cfg, func(b *Build) error {
		n++
		if err := enc.Encode(Export(b, t.Commits[b.Commit].Commit)); err != nil {
			return fmt.Errorf("export build %d: %w", b.Seq, err)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export builds: %w", err)
	}
	return n, nil
}
