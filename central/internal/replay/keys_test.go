package replay

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/layout"
)

// keyTestLock is app -> {log -> cfg-if, serde}, plus tool -> serde, with
// log's version and app's and tool's member trees as parameters.
func keyTestLock(t *testing.T, logVersion string) *LockGraph {
	t.Helper()
	src := `version = 3
[[package]]
name = "app"
version = "0.1.0"
dependencies = ["log", "serde", "tool"]
[[package]]
name = "tool"
version = "0.1.0"
dependencies = ["serde"]
[[package]]
name = "cfg-if"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
[[package]]
name = "log"
version = "` + logVersion + `"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = ["cfg-if"]
[[package]]
name = "serde"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
`
	l, err := cargolock.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	return NewLockGraph(l)
}

func TestUnitKeys(t *testing.T) {
	base := DefaultJobs()[0]
	members := map[string]string{"app": "tree-a", "tool": "tree-t"}
	type build struct {
		log       string
		members   map[string]string
		job       Job
		toolchain string
	}
	before := build{log: "0.4.0", members: members, job: base, toolchain: "1.80.0"}
	tests := []struct {
		name        string
		after       build
		wantChanged []string
	}{
		{"nothing changed", before, nil},
		{"dep bump changes every dependent", build{"0.4.1", members, base, "1.80.0"}, []string{"app", "log"}},
		{"member change keeps the other members", build{"0.4.0", map[string]string{"app": "tree-b", "tool": "tree-t"}, base, "1.80.0"}, []string{"app"}},
		{"member below another member", build{"0.4.0", map[string]string{"app": "tree-a", "tool": "tree-u"}, base, "1.80.0"}, []string{"app", "tool"}},
		{"toolchain changes everything", build{"0.4.0", members, base, "1.81.0"}, []string{"app", "cfg-if", "log", "serde", "tool"}},
		{"profile changes everything", build{"0.4.0", members, DefaultJobs()[1], "1.80.0"}, []string{"app", "cfg-if", "log", "serde", "tool"}},
		{"target changes everything", build{"0.4.0", members, DefaultJobs()[2], "1.80.0"}, []string{"app", "cfg-if", "log", "serde", "tool"}},
	}
	keysOf := func(b build) map[string]string {
		g := keyTestLock(t, b.log)
		keys := UnitKeys(g, b.members, b.job, b.toolchain, "lock")
		out := map[string]string{}
		for i, p := range g.Packages {
			if !layout.ValidCacheKey(keys[i]) {
				t.Fatalf("%s: key %q", p.Name, keys[i])
			}
			out[p.Name] = keys[i]
		}
		return out
	}
	old := keysOf(before)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var changed []string
			for name, k := range keysOf(tt.after) {
				if old[name] != k {
					changed = append(changed, name)
				}
			}
			slices.Sort(changed)
			if !slices.Equal(changed, tt.wantChanged) {
				t.Errorf("changed %v, want %v", changed, tt.wantChanged)
			}
		})
	}
}

func TestUnitKeysCycle(t *testing.T) {
	// A dev-dependency cycle between two members: both are built, keyed by
	// each other's identity, and a change to one changes both.
	src := `version = 3
[[package]]
name = "a"
version = "0.1.0"
dependencies = ["b"]
[[package]]
name = "b"
version = "0.1.0"
dependencies = ["a"]
`
	l, err := cargolock.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	g := NewLockGraph(l)
	if len(g.Units) != 2 || len(g.Deps[0])+len(g.Deps[1]) != 0 || len(g.Cyclic[0]) != 1 {
		t.Fatalf("units %v deps %v cyclic %v", g.Units, g.Deps, g.Cyclic)
	}
	k1 := UnitKeys(g, map[string]string{"a": "1", "b": "1"}, DefaultJobs()[0], "1.80.0", "x")
	k2 := UnitKeys(g, map[string]string{"a": "1", "b": "2"}, DefaultJobs()[0], "1.80.0", "x")
	if k1[0] == k2[0] || k1[1] == k2[1] {
		t.Errorf("a change in a cycle must change both keys: %v %v", k1, k2)
	}
}

func TestToolchain(t *testing.T) {
	tests := []struct {
		date string
		lag  time.Duration
		want string
	}{
		{"2015-05-15", 0, "1.0.0"},
		{"2015-06-25", 0, "1.1.0"},
		{"2023-05-31", 0, "1.69.0"},
		{"2023-06-01", 0, "1.70.0"},
		{"2023-06-05", 7 * 24 * time.Hour, "1.69.0"},
		{"2010-01-01", 0, "1.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.date, func(t *testing.T) {
			d, err := time.Parse(time.DateOnly, tt.date)
			if err != nil {
				t.Fatal(err)
			}
			if got := Toolchain(d.Unix(), int64(tt.lag.Seconds())); got != tt.want {
				t.Errorf("Toolchain = %s, want %s", got, tt.want)
			}
		})
	}
}
