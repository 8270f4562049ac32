package replay

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// ProtoOptions switches the prototype ranking's changes on one by one, so
// the results file can record each one's effect. The prototype reads the
// same store central builds from the same manifests; what it adds beyond the
// store lives in identityIndex, the one new table it would need.
type ProtoOptions struct {
	// PerCrateVersions takes, per crate, as many variants as the lock has
	// versions of it (instead of ShardPerDep per dep): ingest links a lock
	// dep to every key of its crate, so one per dep loses the second version
	// of a crate and two per dep doubles every single-version crate.
	PerCrateVersions bool `json:"per_crate_versions"`
	// Identity seeds the plan with the keys of the latest build with the
	// same identity (namespace, Cargo.lock deps, target, profile; later
	// kache's identity manifests), which are exact when nothing else moved.
	Identity bool `json:"identity"`
	// SkipUnseen leaves out crates none of whose locked versions was ever
	// built in the namespace: their keys cannot be in the bucket, so history
	// variants of other versions are pure waste.
	SkipUnseen bool `json:"skip_unseen"`
	// Toolchain adds the rustc version (a sidecar reads `rustc -vV`; sent as
	// runner label "rustc" in intent and manifest) to the identity and to
	// variant choice.
	Toolchain bool `json:"toolchain"`
}

// ParseProtoOptions reads a comma-separated list of option names
// (versions, identity, unseen, toolchain; "all" for every one).
func ParseProtoOptions(s string) (ProtoOptions, error) {
	var o ProtoOptions
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "", "none":
		case "all":
			o = FullProto()
		case "versions":
			o.PerCrateVersions = true
		case "identity":
			o.Identity = true
		case "unseen":
			o.SkipUnseen = true
		case "toolchain":
			o.Toolchain = true
		default:
			return o, fmt.Errorf("unknown prototype option %q", f)
		}
	}
	return o, nil
}

// FullProto is every prototype change.
func FullProto() ProtoOptions {
	return ProtoOptions{PerCrateVersions: true, Identity: true, SkipUnseen: true, Toolchain: true}
}

// proto is the prototype planner policy.
type proto struct {
	opts ProtoOptions
	st   *store.Store
	ids  identityIndex
	// toolchains remembers each key's rustc version (the store would keep it
	// with target and profile).
	toolchains map[string]string
}

func newProto(opts ProtoOptions) (*proto, error) {
	st, err := openMemStore()
	if err != nil {
		return nil, err
	}
	return &proto{opts: opts, st: st, ids: identityIndex{}, toolchains: map[string]string{}}, nil
}

func (*proto) Name() string { return PolicyPlannerProto }
func (*proto) remote()      {}

// Close closes the store.
func (p *proto) Close() error { return p.st.Close() }

func (p *proto) Learn(b *Build, m *wire.BuildManifest, endMs int64) error {
	obs, err := ingest.Manifest(m, time.UnixMilli(endMs))
	if err != nil {
		return fmt.Errorf("ingest manifest of build %d: %w", b.Seq, err)
	}
	if _, err := p.st.Apply(obs); err != nil {
		return fmt.Errorf("store manifest of build %d: %w", b.Seq, err)
	}
	tc := p.toolchain(b)
	for i := range m.Entries {
		p.toolchains[m.Entries[i].CacheKey] = tc
	}
	if m.Namespace != nil {
		p.ids.put(buildIdentity(*m.Namespace, m.CargoLockDeps, m.Target, m.Profile, tc), m.Entries)
	}
	return nil
}

func (p *proto) toolchain(b *Build) string {
	if p.opts.Toolchain {
		return b.Toolchain
	}
	return ""
}

func (p *proto) Plan(b *Build) (wire.PrefetchPlan, error) {
	in := sidecarIntent(b)
	in.CrateNames = make([]string, len(b.Intent.CrateNames))
	for i, n := range b.Intent.CrateNames {
		in.CrateNames[i] = cargolock.CrateName(n)
	}
	fallback := wire.PrefetchPlan{Planner: PolicyPlannerProto, Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}
	if p.st.ArtifactCount() == 0 {
		return fallback, nil
	}
	src := &protoSource{p: p, intent: &in, toolchain: p.toolchain(b)}
	lim := planner.DefaultLimits()
	if p.opts.SkipUnseen && in.Namespace != nil {
		// Crates the shard pass leaves unresolved were never built in this
		// namespace: nothing of theirs can be needed.
		src.noFallback = true
	}
	cands, _, err := planner.Compose(&in, src, lim)
	if err != nil {
		return fallback, fmt.Errorf("plan build %d: %w", b.Seq, err)
	}
	if len(cands) == 0 {
		return fallback, nil
	}
	return wire.PrefetchPlan{Planner: PolicyPlannerProto, Disposition: wire.Execute, Candidates: cands}, nil
}

// protoSource is the prototype's data source for composition.
type protoSource struct {
	p          *proto
	intent     *wire.BuildIntent
	toolchain  string
	noFallback bool
}

// ShardCandidates: the identity build's keys for the crates it built, then
// for every other crate the newest variants built with its locked versions.
func (s *protoSource) ShardCandidates(namespace string, deps []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	var out []wire.PrefetchCandidate
	covered := map[string]bool{}
	if s.p.opts.Identity {
		id := buildIdentity(namespace, deps, s.intent.Target, s.intent.Profile, s.toolchain)
		for _, e := range s.p.ids[id] {
			covered[e.CrateName] = true
			out = append(out, wire.PrefetchCandidate{CacheKey: e.CacheKey, CrateName: e.CrateName, CompileTimeMs: e.CompileTimeMs, SizeBytes: e.ArtifactSize})
		}
	}
	// Group the lock deps by crate, in lock order.
	var crates []string
	versions := map[string][]string{}
	for _, d := range deps {
		c := cargolock.CrateName(d.Name)
		if covered[c] {
			continue
		}
		if _, ok := versions[c]; !ok {
			crates = append(crates, c)
		}
		versions[c] = append(versions[c], d.Key())
	}
	for _, c := range crates {
		var vs []store.Variant
		seen := map[string]bool{}
		seenVersions := 0
		for _, dep := range versions[c] {
			dv, err := s.p.st.DepVariants(namespace, dep)
			if err != nil {
				return nil, err
			}
			if len(dv) > 0 {
				seenVersions++
			}
			for _, v := range dv {
				if !seen[v.CacheKey] {
					seen[v.CacheKey] = true
					vs = append(vs, v)
				}
			}
		}
		vs = s.rank(vs)
		n := s.p.perCrate(len(versions[c]), seenVersions)
		for i := range vs[:min(n, len(vs))] {
			out = append(out, wire.PrefetchCandidate{CacheKey: vs[i].CacheKey, CrateName: vs[i].CrateName, CompileTimeMs: vs[i].CompileTimeMs, SizeBytes: vs[i].SizeBytes})
		}
	}
	return out, nil
}

// perCrate is how many variants of one crate the shard pass takes.
func (p *proto) perCrate(versions, seenVersions int) int {
	switch {
	case !p.opts.PerCrateVersions:
		return versions // one per dep, as ShardPerDep: 1
	case p.opts.SkipUnseen:
		return seenVersions
	}
	return versions
}

// rank orders variants by how many of the build's dimensions they match
// (target, profile, and with Toolchain the rustc version), then newest
// first, then by key.
func (s *protoSource) rank(vs []store.Variant) []store.Variant {
	score := func(v *store.Variant) int {
		n := 0
		if s.toolchain != "" && s.p.toolchains[v.CacheKey] == s.toolchain {
			n += 4
		}
		if s.intent.Target != "" && v.Target == s.intent.Target {
			n += 2
		}
		if s.intent.Profile != "" && v.Profile == s.intent.Profile {
			n++
		}
		return n
	}
	slices.SortStableFunc(vs, func(a, b store.Variant) int {
		return cmp.Or(cmp.Compare(score(&b), score(&a)), cmp.Compare(b.LastSeenMs, a.LastSeenMs), cmp.Compare(a.CacheKey, b.CacheKey))
	})
	return vs
}

// HistoryCandidates is the real planner's history pass (newest variants of
// the crate, two per crate), unless the namespace already said the crate
// was never built.
func (s *protoSource) HistoryCandidates(crates []string) ([]wire.PrefetchCandidate, error) {
	if s.noFallback {
		return nil, nil
	}
	var out []wire.PrefetchCandidate
	for _, c := range crates {
		vs, err := s.p.st.Variants(c)
		if err != nil {
			return nil, err
		}
		vs = s.rank(slices.Clone(vs))
		for i := range vs {
			out = append(out, wire.PrefetchCandidate{CacheKey: vs[i].CacheKey, CrateName: vs[i].CrateName, CompileTimeMs: vs[i].CompileTimeMs, SizeBytes: vs[i].SizeBytes})
		}
	}
	return out, nil
}

// KeyCacheKeys: keys only listed, never built, are not worth a request.
func (*protoSource) KeyCacheKeys(string) ([]string, error) { return nil, nil }

// identityIndex maps a build identity to the entries of the latest build
// with it. In central it would be a store table written by ingest.
type identityIndex map[[32]byte][]wire.ManifestEntry

func (x identityIndex) put(id [32]byte, entries []wire.ManifestEntry) { x[id] = entries }

// buildIdentity hashes what makes two builds compile the same keys, except
// member sources: namespace, lock deps, target, profile, toolchain.
func buildIdentity(namespace string, deps []wire.LockDep, target, profile, toolchain string) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", namespace, target, profile, toolchain)
	for _, d := range deps {
		fmt.Fprintf(h, "%s@%s\n", d.Name, d.Version)
	}
	var id [32]byte
	h.Sum(id[:0])
	return id
}
