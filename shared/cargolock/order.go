package cargolock

import (
	"cmp"
	"slices"
)

// DependencyOrder returns package names leaves first: every name comes after
// the names of everything it depends on, so the order approximates when a
// build first needs each crate (the client sends crate_names in this order
// and planners use the position as demand).
//
// The order is computed on names, because the client's crate_names carry no
// versions: all versions of a package are one node, depending on what any of
// them depends on. Names are sorted by depth (the longest chain of
// dependencies below them; 0 for leaves), then by name, so the result is
// deterministic. Dependency cycles (dev-dependencies can create them, and
// merging versions can too) are collapsed: the names of a cycle share one
// depth and are ordered by name. Dependencies that resolve to no package in
// the lock file are ignored.
//
// With roots, only the packages reachable from packages with those names are
// returned (unknown roots are ignored); reachability follows resolved
// package versions, so an older version of a name outside the closure does
// not pull in its own dependencies. The result is never nil.
func (l *Lockfile) DependencyOrder(roots ...string) []string {
	pkgs := l.Packages
	g := l.Graph()
	edges := g.Deps
	included := g.Reachable(roots...)

	// Collapse packages to names; ids follow name order.
	var names []string
	for i, p := range pkgs {
		if included[i] {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	id := make(map[string]int, len(names))
	for i, n := range names {
		id[n] = i
	}
	adj := make([][]int, len(names))
	for i, p := range pkgs {
		if !included[i] {
			continue
		}
		from := id[p.Name]
		for _, j := range edges[i] {
			if to := id[pkgs[j].Name]; to != from {
				adj[from] = append(adj[from], to)
			}
		}
	}
	for i := range adj {
		slices.Sort(adj[i])
		adj[i] = slices.Compact(adj[i])
	}

	depth := depths(adj)
	order := make([]int, len(names))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(depth[a], depth[b]) })
	out := make([]string, len(order))
	for i, n := range order {
		out[i] = names[n]
	}
	return out
}

// resolve implements Lookup given the indices, in file order, of the
// packages named d.Name.
func resolve(pkgs []Package, sameName []int, d DepRef) (int, bool) {
	if len(sameName) == 0 {
		return 0, false
	}
	if d.Version == "" {
		first := pkgs[sameName[0]].Version
		for _, i := range sameName[1:] {
			if pkgs[i].Version != first {
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

// depths returns, per node, the longest chain of edges below it in the graph
// whose cycles are collapsed to single nodes. Components come dependencies
// first, so each one's depth is known from those it reaches.
func depths(adj [][]int) []int {
	comp, order := components(adj, nil)
	var compDepth []int
	for _, v := range order {
		c := comp[v]
		if c == len(compDepth) {
			compDepth = append(compDepth, 0)
		}
		for _, w := range adj[v] {
			if comp[w] != c {
				compDepth[c] = max(compDepth[c], compDepth[comp[w]]+1)
			}
		}
	}
	out := make([]int, len(adj))
	for v := range out {
		out[v] = compDepth[comp[v]]
	}
	return out
}
