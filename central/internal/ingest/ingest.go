// Package ingest turns what builds report (kache build manifests, build
// timelines, the legacy seed file) into store observations, validating every
// key and name the way the kache client does before anything is written.
package ingest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Errors the API maps to statuses.
var (
	// ErrInvalid: the request is well-formed JSON but names invalid things.
	ErrInvalid = errors.New("invalid input")
	// ErrTooLarge: a body or its decoded form is over a limit.
	ErrTooLarge = errors.New("too large")
	// ErrEncoding: the body is not in the declared encoding.
	ErrEncoding = errors.New("bad encoding")
)

// ValidationError lists every offending entry of a rejected request.
type ValidationError struct {
	Msg     string
	Details []wire.ErrorDetail
}

func (e *ValidationError) Error() string { return e.Msg }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// maxName bounds namespaces, targets, profiles and dep keys: the store
// length-prefixes them with one byte.
const maxName = 255

// Manifest validates a build manifest and returns its observation. Any
// invalid entry rejects the whole manifest, naming every offender.
func Manifest(m *wire.BuildManifest, now time.Time) (store.Observation, error) {
	var details []wire.ErrorDetail
	for i, e := range m.Entries {
		var reasons []string
		if !layout.ValidCacheKey(e.CacheKey) {
			reasons = append(reasons, "cache_key is not 64 lowercase hex digits")
		}
		if !layout.ValidCrateName(e.CrateName) {
			reasons = append(reasons, "crate_name is not 1-128 of [A-Za-z0-9_.-] without \"..\"")
		}
		if len(reasons) > 0 {
			details = append(details, wire.ErrorDetail{Index: i, CacheKey: clip(e.CacheKey), CrateName: clip(e.CrateName), Reason: strings.Join(reasons, "; ")})
		}
	}
	ns := ""
	if m.Namespace != nil {
		ns = *m.Namespace
	}
	var fieldErrs []string
	if len(ns) > maxName {
		fieldErrs = append(fieldErrs, "namespace longer than 255 bytes")
	}
	if len(m.Target) > maxName || len(m.Profile) > maxName || len(m.Toolchain) > maxName {
		fieldErrs = append(fieldErrs, "target, profile or toolchain longer than 255 bytes")
	}
	for i, d := range m.CargoLockDeps {
		if d.Name == "" || d.Version == "" || len(d.Key()) > maxName {
			fieldErrs = append(fieldErrs, fmt.Sprintf("cargo_lock_deps[%d] needs a name and version (at most 255 bytes together)", i))
			break
		}
	}
	if len(details) > 0 || len(fieldErrs) > 0 {
		msg := fmt.Sprintf("manifest rejected: %d invalid entries", len(details))
		if len(fieldErrs) > 0 {
			msg += "; " + strings.Join(fieldErrs, "; ")
		}
		return store.Observation{}, &ValidationError{Msg: msg, Details: details}
	}

	obs := store.Observation{AtMs: createdMs(m.Created, now), Artifacts: make([]store.Artifact, len(m.Entries))}
	byCrate := make(map[string][]int, len(m.Entries))
	for i, e := range m.Entries {
		obs.Artifacts[i] = store.Artifact{
			CacheKey:      e.CacheKey,
			CrateName:     e.CrateName,
			CompileTimeMs: e.CompileTimeMs,
			SizeBytes:     e.ArtifactSize,
			Target:        m.Target,
			Profile:       m.Profile,
			Toolchain:     m.Toolchain,
		}
		byCrate[e.CrateName] = append(byCrate[e.CrateName], i)
	}
	// Link each lock dep to the entries of its crate: that is what a shard of
	// this namespace would have held, without kache's one-key-per-crate loss.
	// Entries carry no version, so a crate locked at two versions links both
	// keys to both deps; the planner takes as many keys as versions.
	for _, d := range m.CargoLockDeps {
		for _, i := range byCrate[cargolock.CrateName(d.Name)] {
			obs.DepLinks = append(obs.DepLinks, store.DepLink{Namespace: ns, Dep: d.Key(), Artifact: i})
		}
	}
	// Without a namespace there are no lock deps, and an identity would
	// mix every job of the repository.
	if m.Namespace != nil && len(m.CargoLockDeps) > 0 {
		id := identity(ns, m.CargoLockDeps, m.Target, m.Profile, m.Toolchain)
		all := make([]int, len(m.Entries))
		for i := range all {
			all[i] = i
		}
		obs.Identity = &store.IdentityBuild{Digest: id.Digest(), Artifacts: all}
	}
	return obs, nil
}

// identity is the build identity of a namespace's build (or intent) with
// these lock deps and dimensions.
func identity(namespace string, deps []wire.LockDep, target, profile, toolchain string) *store.BuildIdentity {
	keys := make([]string, len(deps))
	for i, d := range deps {
		keys[i] = d.Key()
	}
	return &store.BuildIdentity{Namespace: namespace, Target: target, Profile: profile, Toolchain: toolchain, LockDeps: keys}
}

// createdMs reads kache's RFC 3339 creation time; a manifest without one was
// seen now.
func createdMs(created string, now time.Time) int64 {
	if t, err := time.Parse(time.RFC3339Nano, created); err == nil && t.UnixMilli() > 0 {
		return t.UnixMilli()
	}
	return now.UnixMilli()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
