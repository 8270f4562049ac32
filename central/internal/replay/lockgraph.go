package replay

import (
	"fmt"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// LockGraph is one parsed Cargo.lock with everything the harness derives
// from it once: the compile graph, the intent fields and the shard set.
// Builds of commits sharing a lock file share one LockGraph, which keeps the
// per-build work proportional to the number of crates.
type LockGraph struct {
	Packages []cargolock.Package
	// Units are the packages a build compiles (those reachable from the
	// workspace members), in an order where every package comes after its
	// dependencies; the packages of a dependency cycle are adjacent.
	Units []int
	// Deps[i] are the resolved dependencies of package i that a build
	// waits for: edges inside a cycle are left out (see Cyclic).
	Deps [][]int
	// Cyclic[i] are package i's dependencies in its own cycle (dev-
	// dependencies of workspace members can close one). They feed the key
	// by name and version instead of by key.
	Cyclic [][]int
	// CrateNames is the intent's crate_names: package names leaves first.
	CrateNames []string
	// Demand[i] is package i's demand index: its name's position in
	// CrateNames (-1 when not built).
	Demand []int
	// LockDeps is the intent's cargo_lock_deps (sorted, deduplicated).
	LockDeps []wire.LockDep
	// Shards is kache's shard set of LockDeps.
	Shards []layout.Shard
}

// LoadLockGraph parses a Cargo.lock file and derives its graph.
func LoadLockGraph(path string) (*LockGraph, error) {
	l, err := cargolock.ParseFile(path)
	if err != nil {
		return nil, fmt.Errorf("load lock graph: %w", err)
	}
	return NewLockGraph(l), nil
}

// NewLockGraph derives the compile graph of a parsed lock file.
func NewLockGraph(l *cargolock.Lockfile) *LockGraph {
	pkgs := l.Packages
	g := &LockGraph{Packages: pkgs, Deps: make([][]int, len(pkgs)), Cyclic: make([][]int, len(pkgs)), Demand: make([]int, len(pkgs))}
	graph := l.Graph()
	edges := graph.Deps

	var roots []string
	for _, p := range pkgs {
		if p.Source == "" {
			roots = append(roots, p.Name)
		}
	}
	g.CrateNames = l.DependencyOrder(roots...)
	demandOf := make(map[string]int, len(g.CrateNames))
	for i, n := range g.CrateNames {
		demandOf[n] = i
	}
	reach := graph.Reachable(roots...)
	for i, p := range pkgs {
		g.Demand[i] = -1
		if reach[i] {
			if d, ok := demandOf[p.Name]; ok {
				g.Demand[i] = d
			}
		}
	}

	comp, order := graph.Components(reach)
	for _, i := range order {
		for _, j := range edges[i] {
			if comp[j] == comp[i] {
				g.Cyclic[i] = append(g.Cyclic[i], j)
			} else {
				g.Deps[i] = append(g.Deps[i], j)
			}
		}
	}
	g.Units = order
	g.LockDeps = l.Deps()
	g.Shards = layout.Shards(g.LockDeps)
	return g
}
