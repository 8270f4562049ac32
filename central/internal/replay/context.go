package replay

import (
	"fmt"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Context is what a deployment tells the planner about a job (issue 13):
// which intent the `planner` policy gets and what central learns after each
// build. Nothing else about a build reaches the planner.
type Context string

// The contexts of `kache-replay --context`.
const (
	// ContextNone is kache alone talking to a sidecar container in the
	// runner pod: kache's intent (kache-protocol.md 3.7) plus what the
	// sidecar knows from its own configuration, its host triple as the
	// target. The sidecar learns the namespace and lock deps only from
	// kache's intent, which carries them only when KACHE_NAMESPACE is set.
	ContextNone Context = "none"
	// ContextWarm adds what `kache-sidecar warm` learns in the job's
	// environment before cargo runs: repository, ref and commit, target,
	// profile and features from the cargo command, the toolchain (`rustc
	// -vV`) and the workspace Cargo.lock's lock deps, namespace or not.
	ContextWarm Context = "warm"
)

// ParseContext reads a --context value.
func ParseContext(s string) (Context, error) {
	switch c := Context(s); c {
	case ContextNone, ContextWarm:
		return c, nil
	}
	return "", fmt.Errorf("unknown context %q (want none or warm)", s)
}

// observedManifestKey is the manifest key of what the sidecar's S3 surface
// reports to central for the packs it saw uploaded.
const observedManifestKey = "sidecar-observed"

// runnerContext is what warm reads from the CI provider's variables. The
// trace has no branch names, so the ref says only main or not.
func (b *Build) runnerContext(project, commit string) *wire.RunnerContext {
	ref := "refs/heads/main"
	if !b.MainLine {
		ref = "refs/heads/branch"
	}
	return &wire.RunnerContext{Repository: project, GitRef: ref, Commit: commit}
}

// plannerIntent is the intent the planner policy gets: kache's, with the
// sidecar's own target, plus warm's job context under ContextWarm. Jobs
// build for the runner's host, so the sidecar's host triple is the job's
// target. Features stay empty: the modeled jobs run cargo without
// --features.
func plannerIntent(b *Build, ctx Context) wire.BuildIntent {
	in := b.Intent
	in.Target = b.Host
	if ctx == ContextWarm {
		in.Target = b.Job.Target
		in.Profile = b.Job.Profile
		in.Toolchain = b.Toolchain
		in.CargoLockDeps = b.Lock.LockDeps
		in.Runner = b.Runner
	}
	return in
}

// deliveries are what central ingests after a build, in the order it gets
// them, both through the sidecar's S3 surface:
//
//  1. the packs the build uploaded (the units it compiled and nobody had
//     uploaded yet), reported as one manifest keyed "sidecar-observed" with
//     the target and profile every pack's meta.json holds (its features are
//     the crate's, not the job's, and central does not use them);
//  2. kache's build manifest (`kache save-manifest`, kache-protocol.md 4.3):
//     every key the build used, with compile time and size, keyed by the
//     host triple, and nothing else.
//
// The sidecar annotates both with its job context, as it does kache's plan
// requests: its host triple as the target of kache's manifest, the
// namespace and lock deps of kache's intent when kache sent them, and under
// ContextWarm warm's toolchain, runner, and (for kache's manifest) target,
// profile and lock deps. Lock deps go on kache's manifest only: a build
// identity must list every key of the build, and the observed packs are
// only the ones it compiled.
func deliveries(b *Build, ctx Context, endMs int64) [2]wire.BuildManifest {
	created := time.UnixMilli(endMs).UTC().Format(time.RFC3339Nano)
	observed := wire.BuildManifest{Version: 3, Created: created, ManifestKey: observedManifestKey, Entries: []wire.ManifestEntry{},
		Target: b.Job.Target, Profile: b.Job.Profile}
	kache := wire.BuildManifest{Version: 3, Created: created, ManifestKey: b.Host, Entries: make([]wire.ManifestEntry, len(b.Units)),
		Target: b.Host}
	for i := range b.Units {
		u := &b.Units[i]
		e := wire.ManifestEntry{CacheKey: u.Key, CrateName: u.Crate, CompileTimeMs: u.CompileMs, ArtifactSize: u.SizeBytes}
		kache.Entries[i] = e
		if b.Uploaded[i] {
			observed.Entries = append(observed.Entries, e)
		}
	}
	if b.Namespace != nil {
		kache.Namespace = b.Namespace
		kache.CargoLockDeps = b.Lock.LockDeps
	}
	if ctx == ContextWarm {
		kache.Target, kache.Profile, kache.Toolchain, kache.Runner = b.Job.Target, b.Job.Profile, b.Toolchain, b.Runner
		kache.CargoLockDeps = b.Lock.LockDeps
		observed.Toolchain, observed.Runner = b.Toolchain, b.Runner
	}
	return [2]wire.BuildManifest{observed, kache}
}
