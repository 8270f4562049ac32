package replay

import (
	"fmt"
	"github.com/kache-planner/kache-planner/shared/compose"
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
// same store central builds from the same manifests; what it needs beyond
// the store (the identity index, each key's toolchain, churn and co-change
// statistics) it keeps itself, as the tables central's store would gain.
type ProtoOptions struct {
	// ShardPerDep1 is the baseline: central's own planner with
	// Config.ShardPerDep 1 instead of its default 2. The other options are
	// ignored.
	ShardPerDep1 bool `json:"shard_per_dep_1,omitempty"`
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
	// Toolchain adds the rustc version (a sidecar reads `rustc -vV` and
	// sends it as runner label "rustc" with intent and manifest) to the
	// identity and to variant choice.
	Toolchain bool `json:"toolchain"`
	// Churn learns, per namespace and crate, how often a build reused the
	// previous build's key, and leaves out crates that almost never do
	// (the root package of a repository changes with every commit).
	Churn bool `json:"churn"`
	// CoChange learns which locked packages a crate's key depends on from
	// consecutive builds (a bump of x changed the keys of c), and skips a
	// variant built with another version of such a package, trying an older
	// variant instead.
	CoChange bool `json:"cochange"`
}

// Churn admission: a crate seen in at least churnMinBuilds consecutive
// build pairs of a namespace whose key was reused in fewer than
// churnMinReuse of them is not fetched.
const (
	churnMinBuilds = 5
	churnMinReuse  = 0.25
)

// ParseProtoOptions reads a comma-separated list of option names
// (versions, unseen, identity, toolchain, churn, cochange; "all" for every
// one; shardperdep1 for the baseline).
func ParseProtoOptions(s string) (ProtoOptions, error) {
	var o ProtoOptions
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "", "none":
		case "all":
			o = FullProto()
		case "shardperdep1":
			o.ShardPerDep1 = true
		case "versions":
			o.PerCrateVersions = true
		case "identity":
			o.Identity = true
		case "unseen":
			o.SkipUnseen = true
		case "toolchain":
			o.Toolchain = true
		case "churn":
			o.Churn = true
		case "cochange":
			o.CoChange = true
		default:
			return o, fmt.Errorf("unknown prototype option %q", f)
		}
	}
	return o, nil
}

// FullProto is every prototype change.
func FullProto() ProtoOptions {
	return ProtoOptions{PerCrateVersions: true, Identity: true, SkipUnseen: true, Toolchain: true, Churn: true, CoChange: true}
}

// proto is the prototype planner policy.
type proto struct {
	opts ProtoOptions
	// central, with ShardPerDep1, answers instead.
	central *planner.Planner
	st      *store.Store
	ids     identityIndex
	// toolchains remembers each key's rustc version (the store would keep it
	// with target and profile).
	toolchains map[string]string
	churn      churnIndex
	deps       *coChange
}

func newProto(opts ProtoOptions) (*proto, error) {
	st, err := openMemStore()
	if err != nil {
		return nil, err
	}
	p := &proto{opts: opts, st: st, ids: identityIndex{}, toolchains: map[string]string{}, churn: churnIndex{}, deps: newCoChange()}
	if opts.ShardPerDep1 {
		p.central = planner.New(st, planner.Config{ShardPerDep: 1})
	}
	return p, nil
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
	tc := p.toolchain(m.Runner)
	for i := range m.Entries {
		p.toolchains[m.Entries[i].CacheKey] = tc
	}
	if m.Namespace != nil {
		p.churn.learn(*m.Namespace, m.Entries)
		p.deps.learn(*m.Namespace, tc, m.CargoLockDeps, m.Entries)
		p.ids.put(buildIdentity(*m.Namespace, m.CargoLockDeps, m.Target, m.Profile, tc), m.Entries)
	}
	return nil
}

// toolchain reads the rustc label, when the option uses it.
func (p *proto) toolchain(r *wire.RunnerContext) string {
	if !p.opts.Toolchain || r == nil {
		return ""
	}
	return r.Labels["rustc"]
}

func (p *proto) Plan(b *Build) (wire.PrefetchPlan, error) {
	if p.central != nil {
		in := sidecarIntent(b)
		plan, _, err := p.central.Plan(&in)
		return plan, err
	}
	in := sidecarIntent(b)
	in.Runner = runnerContext(b)
	in.CrateNames = make([]string, len(b.Intent.CrateNames))
	for i, n := range b.Intent.CrateNames {
		in.CrateNames[i] = cargolock.CrateName(n)
	}
	fallback := wire.PrefetchPlan{Planner: PolicyPlannerProto, Disposition: wire.UseFallback, Candidates: []wire.PrefetchCandidate{}}
	if p.st.ArtifactCount() == 0 {
		return fallback, nil
	}
	src := &protoSource{p: p, intent: &in, toolchain: p.toolchain(in.Runner)}
	lim := compose.DefaultLimits()
	if p.opts.SkipUnseen && in.Namespace != nil {
		// Crates the shard pass leaves unresolved were never built in this
		// namespace: nothing of theirs can be needed.
		src.noFallback = true
	}
	cands, _, err := compose.Compose(&in, src, lim)
	if err != nil {
		return fallback, fmt.Errorf("plan build %d: %w", b.Seq, err)
	}
	if len(cands) == 0 {
		return fallback, nil
	}
	return wire.PrefetchPlan{Planner: PolicyPlannerProto, Disposition: wire.Execute, Candidates: cands}, nil
}
