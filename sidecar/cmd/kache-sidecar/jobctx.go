package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
	"github.com/kache-planner/kache-planner/sidecar/internal/s3api"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// The job context (issue 13). `kache-sidecar warm` runs in the job's
// environment, so it is where the sidecar learns the job: warm's plan
// request carries the runner context, target, profile, features,
// toolchain and the workspace's lock deps, and the running sidecar keeps
// them (runner.JobContext) for kache's plan requests during the rest of the
// job. The profile, target and features come from the cargo command the job
// is about to run:
//
//	kache-sidecar warm [flags] -- cargo build --release --target T --features F

// splitWarmArgs separates warm's own flags from the cargo command after
// "--". Other commands keep their arguments.
func splitWarmArgs(cmd string, args []string) (flags, cargo []string) {
	if cmd != "warm" {
		return args, nil
	}
	i := slices.Index(args, "--")
	if i < 0 {
		return args, nil
	}
	return args[:i], args[i+1:]
}

// cargoJob is what a cargo command says about the build it runs.
type cargoJob struct {
	// Profile is the profile directory the build writes to, as kache's
	// pack meta.json names it: "debug" for cargo's dev and test profiles,
	// "release" for release and bench, a custom profile by its name.
	Profile string
	Target  string
	// Features are the features named with --features/-F, sorted.
	Features []string
	// Toolchain is a rustup toolchain named with +toolchain.
	Toolchain string
}

// releaseByDefault are the cargo subcommands whose default profile is
// release.
var releaseByDefault = map[string]bool{"bench": true, "install": true}

// parseCargoCommand reads a cargo command line (`cargo [+toolchain] <sub>
// [options]`; a wrapper such as `cross` or `cargo-zigbuild` reads the same
// options). Unknown options are ignored; everything after a second "--"
// goes to the compiled program, not cargo.
func parseCargoCommand(args []string) cargoJob {
	var j cargoJob
	if len(args) == 0 {
		return j
	}
	args = args[1:] // the program
	if len(args) > 0 && strings.HasPrefix(args[0], "+") {
		j.Toolchain = strings.TrimPrefix(args[0], "+")
		args = args[1:]
	}
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub = args[0]
		args = args[1:]
	}
	profile := ""
	release := false
	// value returns the value of a flag given as "--flag value" or
	// "--flag=value", and how many arguments it took.
	value := func(i int, names ...string) (string, int, bool) {
		a := args[i]
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1], 2, true
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok && strings.HasPrefix(n, "--") {
				return v, 1, true
			}
		}
		return "", 0, false
	}
	for i := 0; i < len(args); {
		a := args[i]
		if a == "--" {
			break
		}
		if a == "--release" || a == "-r" {
			release = true
			i++
			continue
		}
		if v, n, ok := value(i, "--profile"); ok {
			profile = v
			i += n
			continue
		}
		if v, n, ok := value(i, "--target"); ok {
			if j.Target == "" {
				j.Target = v
			}
			i += n
			continue
		}
		if v, n, ok := value(i, "--features", "-F"); ok {
			for f := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ',' || r == ' ' }) {
				j.Features = append(j.Features, f)
			}
			i += n
			continue
		}
		i++
	}
	slices.Sort(j.Features)
	j.Features = slices.Compact(j.Features)
	switch {
	case profile != "":
		j.Profile = profileDir(profile)
	case release || releaseByDefault[sub]:
		j.Profile = "release"
	case sub != "":
		j.Profile = "debug"
	}
	return j
}

// profileDir is the target directory of a cargo profile: dev and test
// build into debug, bench into release, a custom profile into its name.
func profileDir(p string) string {
	switch p {
	case "dev", "test":
		return "debug"
	case "bench":
		return "release"
	}
	return p
}

// describeJob adds to warm's intent (kache's, from workspaceIntent) what
// the job's environment and cargo command tell, none of which kache sends:
// the runner context, the target (--target beats the cargo command, which
// beats CARGO_BUILD_TARGET and the host), the profile, the features, for a
// +toolchain command that toolchain's release, and the workspace's lock
// deps, namespace or not.
func describeJob(in *wire.BuildIntent, cfg config.Config, info runner.Info, job cargoJob) error {
	if len(in.CargoLockDeps) == 0 {
		path := filepath.Join(cfg.Workspace, "Cargo.lock")
		lock, err := cargolock.ParseFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		in.CargoLockDeps = lock.Deps()
	}
	if rc := info.Context; !reflect.DeepEqual(rc, wire.RunnerContext{}) {
		in.Runner = &rc
	}
	in.Target = info.Target
	if cfg.Target == "" && job.Target != "" {
		in.Target = job.Target
	}
	in.Profile = job.Profile
	in.Features = job.Features
	if cfg.Toolchain == "" && job.Toolchain != "" {
		if r := rustcReleaseOf(cfg.Workspace, job.Toolchain); r != "" {
			in.Toolchain = r
		}
	}
	return nil
}

// rustcReleaseOf asks rustup's rustc of a toolchain for its release.
func rustcReleaseOf(dir, toolchain string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rustc", "+"+toolchain, "-vV")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return parseRustcRelease(string(out))
}

// readObserver tells the planner about every object the build reads
// through the S3 surface, which tells split plans the build's profile and
// keeps the job context alive, and then serves it as the engine does.
type readObserver struct {
	s3api.Demander
	p *planner.Planner
}

// Demand implements s3api.Demander.
func (o readObserver) Demand(ctx context.Context, r store.Ref) error {
	o.p.ObserveRead(r.CacheKey)
	return o.Demander.Demand(ctx, r)
}

// newJobContext is the running sidecar's job context.
func newJobContext(now wallClock) *runner.JobContext {
	return runner.NewJobContext(runner.DefaultJobIdle, now)
}
