package planner

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func key(i int) string { return fmt.Sprintf("%064x", i) }

// build is a manifest as a sidecar posts it: entries map a crate name to a
// key index ("syn#2" is a second key of syn), lock deps are "name@version".
type build struct {
	ns, target, profile, toolchain string
	entries                        map[string]int
	deps                           []string
}

func lockDeps(deps []string) []wire.LockDep {
	out := make([]wire.LockDep, len(deps))
	for i, d := range deps {
		name, version, _ := strings.Cut(d, "@")
		out[i] = wire.LockDep{Name: name, Version: version}
	}
	return out
}

func (b *build) manifest(at int64) *wire.BuildManifest {
	m := &wire.BuildManifest{
		Version: 3, Created: time.UnixMilli(at).UTC().Format(time.RFC3339Nano),
		Target: b.target, Profile: b.profile, Toolchain: b.toolchain, CargoLockDeps: lockDeps(b.deps),
	}
	if b.ns != "" {
		m.Namespace = &b.ns
	}
	crates := make([]string, 0, len(b.entries))
	for c := range b.entries {
		crates = append(crates, c)
	}
	slices.Sort(crates)
	for _, c := range crates {
		crate, _, _ := strings.Cut(c, "#")
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: key(b.entries[c]), CrateName: crate, CompileTimeMs: 100, ArtifactSize: 1000})
	}
	return m
}

func TestPlanVariantChoice(t *testing.T) {
	const (
		linux = "x86_64-unknown-linux-gnu"
		mac   = "aarch64-apple-darwin"
	)
	job := func(tc string, entries map[string]int, deps ...string) build {
		return build{ns: "ci", target: linux, profile: "debug", toolchain: tc, entries: entries, deps: deps}
	}
	tests := []struct {
		name   string
		builds []build // ingested in order, one second apart
		intent wire.BuildIntent
		want   []int // keys planned, as key indexes, sorted
	}{
		{
			// Two builds with serde 1.0.0: the older key is not needed
			// again, so only the newest is planned.
			name: "one key per locked version",
			builds: []build{
				job("1.82.0", map[string]int{"serde": 1, "app": 2}, "serde@1.0.0", "app@0.1.0"),
				job("1.82.0", map[string]int{"serde": 3, "app": 4}, "serde@1.0.0", "app@0.1.0", "log@0.4.0"),
			},
			intent: intent("ci", linux, "debug", "1.82.0", "serde@1.0.0", "app@0.1.0", "log@0.4.1"),
			want:   []int{3, 4},
		},
		{
			// Ingest links both syn keys to both syn deps: a crate locked
			// at two versions gets two keys, not the same one twice.
			name: "a key per version of a crate locked twice",
			builds: []build{
				job("1.82.0", map[string]int{"syn": 1, "syn#2": 2}, "syn@1.0.109", "syn@2.0.0"),
			},
			intent: intent("ci", linux, "debug", "1.82.0", "syn@1.0.109", "syn@2.0.0", "quote@1.0.0"),
			want:   []int{1, 2},
		},
		{
			// log was built only in another namespace: in a namespace the
			// planner knows, history of other jobs is not offered.
			name: "crate never built in the namespace",
			builds: []build{
				job("1.82.0", map[string]int{"serde": 1}, "serde@1.0.0"),
				{ns: "other", target: linux, profile: "debug", toolchain: "1.82.0", entries: map[string]int{"log": 2}, deps: []string{"log@0.4.0"}},
			},
			intent: intent("ci", linux, "debug", "1.82.0", "serde@1.0.0", "log@0.4.0"),
			want:   []int{1},
		},
		{
			name: "unknown namespace falls back to history of the same dimensions",
			builds: []build{
				job("1.82.0", map[string]int{"serde": 1}, "serde@1.0.0"),
				{ns: "mac", target: mac, profile: "debug", toolchain: "1.82.0", entries: map[string]int{"serde": 2}, deps: []string{"serde@1.0.0"}},
			},
			intent: intent("fresh", linux, "debug", "1.82.0", "serde@1.0.0"),
			want:   []int{1},
		},
		{
			// Every key hashes the toolchain: after an update nothing
			// built by the old one is needed.
			name: "keys of another toolchain dropped",
			builds: []build{
				job("1.81.0", map[string]int{"serde": 1}, "serde@1.0.0"),
			},
			intent: intent("ci", linux, "debug", "1.82.0", "serde@1.0.0", "log@0.4.0"),
			want:   nil,
		},
		{
			name: "keys of unknown toolchain kept",
			builds: []build{
				job("", map[string]int{"serde": 1}, "serde@1.0.0"),
			},
			intent: intent("ci", linux, "debug", "1.82.0", "serde@1.0.0", "log@0.4.0"),
			want:   []int{1},
		},
		{
			// The same lock, target, profile and toolchain built before:
			// its keys are exact even when a newer build of another lock
			// linked other keys to the same deps.
			name: "identity build first",
			builds: []build{
				job("1.82.0", map[string]int{"serde": 1, "app": 2}, "serde@1.0.0", "app@0.1.0"),
				job("1.82.0", map[string]int{"serde": 3, "app": 4}, "serde@1.0.0", "app@0.1.0", "log@0.4.0"),
			},
			intent: intent("ci", linux, "debug", "1.82.0", "serde@1.0.0", "app@0.1.0"),
			want:   []int{1, 2},
		},
		{
			// What kache itself sends: no namespace, no dimensions. History
			// by recency, two per crate, nothing dropped.
			name: "kache's three-field intent",
			builds: []build{
				job("1.81.0", map[string]int{"serde": 1}, "serde@1.0.0"),
				{ns: "mac", target: mac, profile: "release", toolchain: "1.82.0", entries: map[string]int{"serde": 2}, deps: []string{"serde@1.0.0"}},
				job("1.82.0", map[string]int{"serde": 3}, "serde@1.0.0"),
			},
			intent: wire.BuildIntent{CrateNames: []string{"serde"}, CargoLockDeps: []wire.LockDep{}},
			want:   []int{2, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for i, b := range tt.builds {
				obs, err := ingest.Manifest(b.manifest(int64(1000*(i+1))), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Apply(obs); err != nil {
					t.Fatal(err)
				}
			}
			plan, outcome, err := New(st, Config{}).Plan(&tt.intent)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, c := range plan.Candidates {
				var k int
				fmt.Sscanf(c.CacheKey, "%x", &k)
				got = append(got, k)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("planned keys %v, want %v", got, tt.want)
			}
			wantOutcome := OutcomeExecute
			if len(tt.want) == 0 {
				wantOutcome = OutcomeNoCandidates
			}
			if outcome != wantOutcome {
				t.Errorf("outcome %s, want %s", outcome, wantOutcome)
			}
		})
	}
}

// TestPlanWithoutNamespace covers intents with KACHE_NAMESPACE unset,
// kache's default: kache-sidecar adds the job's dimensions and, after warm,
// the workspace's lock deps, which ingest links under the empty namespace.
func TestPlanWithoutNamespace(t *testing.T) {
	const (
		linux = "x86_64-unknown-linux-gnu"
		mac   = "aarch64-apple-darwin"
	)
	b := func(target, profile string, entries map[string]int, deps ...string) build {
		return build{target: target, profile: profile, toolchain: "1.82.0", entries: entries, deps: deps}
	}
	noNS := func(target, profile string, deps ...string) wire.BuildIntent {
		in := intent("", target, profile, "1.82.0", deps...)
		in.Namespace = nil
		return in
	}
	tests := []struct {
		name   string
		builds []build
		intent wire.BuildIntent
		want   []int
	}{
		{
			name: "lock deps pick the job's key per locked version",
			builds: []build{
				b(linux, "debug", map[string]int{"serde": 1, "log": 5}, "serde@1.0.0", "log@0.4.0"),
				b(linux, "release", map[string]int{"serde": 2, "log": 6}, "serde@1.0.0", "log@0.4.0"),
				b(linux, "release", map[string]int{"serde": 3, "log": 7}, "serde@1.0.1", "log@0.4.0"),
			},
			intent: noNS(linux, "release", "serde@1.0.0", "log@0.4.0"),
			want:   []int{2, 7},
		},
		{
			// The empty namespace keeps a few newest keys per dep across
			// every job; when they are all other jobs', history may still
			// hold the job's.
			name: "dep keys all of other jobs: history",
			builds: []build{
				b(linux, "release", map[string]int{"serde": 1}, "serde@1.0.0"),
				b(mac, "debug", map[string]int{"serde": 2}, "serde@1.0.0"),
				b(mac, "debug", map[string]int{"serde": 3}, "serde@1.0.0"),
				b(mac, "debug", map[string]int{"serde": 4}, "serde@1.0.0"),
				b(mac, "debug", map[string]int{"serde": 5}, "serde@1.0.0"),
			},
			intent: noNS(linux, "release", "serde@1.0.0"),
			want:   []int{1},
		},
		{
			// No lock deps, no profile: the newest build of each profile,
			// not the two newest keys (3 and 1, both debug).
			name: "history: the newest build of each family",
			builds: []build{
				b(linux, "release", map[string]int{"serde": 2}),
				b(linux, "debug", map[string]int{"serde": 1}),
				b(linux, "debug", map[string]int{"serde": 3}),
			},
			intent: wire.BuildIntent{CrateNames: []string{"serde"}, CargoLockDeps: []wire.LockDep{}, Target: linux},
			want:   []int{2, 3},
		},
		{
			// A crate locked at two versions: the family's newest build
			// used two keys, and both are planned.
			name: "history: every key of the family's newest build",
			builds: []build{
				b(linux, "debug", map[string]int{"syn": 4}),
				b(linux, "debug", map[string]int{"syn": 1, "syn#2": 2}),
			},
			intent: wire.BuildIntent{CrateNames: []string{"syn"}, CargoLockDeps: []wire.LockDep{}, Target: linux, Profile: "debug"},
			want:   []int{1, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for i, b := range tt.builds {
				obs, err := ingest.Manifest(b.manifest(int64(1000*(i+1))), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Apply(obs); err != nil {
					t.Fatal(err)
				}
			}
			in := tt.intent
			plan, _, err := New(st, Config{}).Plan(&in)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, c := range plan.Candidates {
				var k int
				fmt.Sscanf(c.CacheKey, "%x", &k)
				got = append(got, k)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("planned keys %v, want %v", got, tt.want)
			}
			if tt.intent.Namespace != nil || in.Namespace != nil {
				t.Error("the caller's intent gained a namespace")
			}
		})
	}
}

// intent is what kache-sidecar sends: kache's fields plus the dimensions.
func intent(ns, target, profile, toolchain string, deps ...string) wire.BuildIntent {
	in := wire.BuildIntent{Namespace: &ns, CargoLockDeps: lockDeps(deps), Target: target, Profile: profile, Toolchain: toolchain}
	for _, d := range in.CargoLockDeps {
		in.CrateNames = append(in.CrateNames, d.Name)
	}
	return in
}
