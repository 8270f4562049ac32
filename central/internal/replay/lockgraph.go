package replay

import (
	"cmp"
	"fmt"
	"slices"

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
	byName := make(map[string][]int, len(pkgs))
	for i, p := range pkgs {
		byName[p.Name] = append(byName[p.Name], i)
	}
	edges := make([][]int, len(pkgs))
	for i, p := range pkgs {
		for _, d := range p.Dependencies {
			if j, ok := lookup(pkgs, byName[d.Name], d); ok && j != i {
				edges[i] = append(edges[i], j)
			}
		}
		slices.Sort(edges[i])
		edges[i] = slices.Compact(edges[i])
	}

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
	reach := reachable(pkgs, edges, roots)
	for i, p := range pkgs {
		g.Demand[i] = -1
		if reach[i] {
			if d, ok := demandOf[p.Name]; ok {
				g.Demand[i] = d
			}
		}
	}

	comp, order := components(edges, reach)
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

// lookup resolves a dependency reference the way cargolock.Lookup does,
// given the file-order indices of the packages with its name.
func lookup(pkgs []cargolock.Package, sameName []int, d cargolock.DepRef) (int, bool) {
	if len(sameName) == 0 {
		return 0, false
	}
	if d.Version == "" {
		for _, i := range sameName[1:] {
			if pkgs[i].Version != pkgs[sameName[0]].Version {
				return 0, false
			}
		}
		return sameName[0], true
	}
	for _, i := range sameName {
		if pkgs[i].Version == d.Version {
			return i, true
		}
	}
	return 0, false
}

// reachable marks the packages reachable from the packages named in roots,
// or every package when there are no roots.
func reachable(pkgs []cargolock.Package, edges [][]int, roots []string) []bool {
	in := make([]bool, len(pkgs))
	var stack []int
	for i, p := range pkgs {
		if len(roots) == 0 || slices.Contains(roots, p.Name) {
			in[i] = true
			stack = append(stack, i)
		}
	}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, j := range edges[i] {
			if !in[j] {
				in[j] = true
				stack = append(stack, j)
			}
		}
	}
	return in
}

// components finds the strongly connected components of the included
// packages with an iterative Tarjan and returns each package's component and
// the packages in completion order. Tarjan completes a component only after
// every component it reaches, so completion order puts dependencies first.
// Packages of one component are ordered by index for determinism.
func components(edges [][]int, include []bool) (comp, order []int) {
	n := len(edges)
	index := make([]int, n)
	low := make([]int, n)
	onStack := make([]bool, n)
	comp = make([]int, n)
	for i := range comp {
		comp[i] = -1
	}
	type frame struct{ v, next int }
	var calls []frame
	var stack []int
	counter, ncomp := 0, 0
	for start := range n {
		if !include[start] || index[start] != 0 {
			continue
		}
		counter++
		index[start], low[start] = counter, counter
		stack = append(stack, start)
		onStack[start] = true
		calls = append(calls, frame{v: start})
		for len(calls) > 0 {
			top := len(calls) - 1
			v := calls[top].v
			if calls[top].next < len(edges[v]) {
				w := edges[v][calls[top].next]
				calls[top].next++
				switch {
				case index[w] == 0:
					counter++
					index[w], low[w] = counter, counter
					stack = append(stack, w)
					onStack[w] = true
					calls = append(calls, frame{v: w})
				case onStack[w]:
					low[v] = min(low[v], index[w])
				}
				continue
			}
			calls = calls[:top]
			if top > 0 {
				p := calls[top-1].v
				low[p] = min(low[p], low[v])
			}
			if low[v] != index[v] {
				continue
			}
			first := len(order)
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp[w] = ncomp
				order = append(order, w)
				if w == v {
					break
				}
			}
			slices.SortFunc(order[first:], cmp.Compare[int])
			ncomp++
		}
	}
	return comp, order
}
