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
	byName := make(map[string][]int, len(pkgs))
	for i, p := range pkgs {
		byName[p.Name] = append(byName[p.Name], i)
	}
	edges := make([][]int, len(pkgs))
	for i, p := range pkgs {
		for _, d := range p.Dependencies {
			if j, ok := resolve(pkgs, byName[d.Name], d); ok {
				edges[i] = append(edges[i], j)
			}
		}
	}
	included := closure(pkgs, byName, edges, roots)

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

// closure marks the packages reachable from the packages named in roots, or
// every package when roots is empty.
func closure(pkgs []Package, byName map[string][]int, edges [][]int, roots []string) []bool {
	included := make([]bool, len(pkgs))
	if len(roots) == 0 {
		for i := range included {
			included[i] = true
		}
		return included
	}
	var stack []int
	for _, r := range roots {
		for _, i := range byName[r] {
			if !included[i] {
				included[i] = true
				stack = append(stack, i)
			}
		}
	}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, j := range edges[i] {
			if !included[j] {
				included[j] = true
				stack = append(stack, j)
			}
		}
	}
	return included
}

// depths returns, per node, the longest chain of edges below it in the graph
// whose cycles are collapsed to single nodes. It finds the strongly connected
// components with Tarjan's algorithm (iteratively, so a long dependency chain
// cannot exhaust the stack); Tarjan completes a component only after every
// component it reaches, so depths can be filled in completion order.
func depths(adj [][]int) []int {
	n := len(adj)
	const unvisited = 0
	index := make([]int, n) // discovery number, from 1
	low := make([]int, n)
	onStack := make([]bool, n)
	comp := make([]int, n)
	var compDepth []int
	var sccStack, members []int
	type frame struct{ v, next int }
	var calls []frame
	counter := 0

	visit := func(v int) {
		counter++
		index[v], low[v] = counter, counter
		sccStack = append(sccStack, v)
		onStack[v] = true
		calls = append(calls, frame{v: v})
	}
	for start := range n {
		if index[start] != unvisited {
			continue
		}
		visit(start)
		for len(calls) > 0 {
			top := len(calls) - 1
			v := calls[top].v
			if calls[top].next < len(adj[v]) {
				w := adj[v][calls[top].next]
				calls[top].next++
				switch {
				case index[w] == unvisited:
					visit(w)
				case onStack[w]:
					low[v] = min(low[v], index[w])
				}
				continue
			}
			calls = calls[:top]
			if top > 0 {
				parent := calls[top-1].v
				low[parent] = min(low[parent], low[v])
			}
			if low[v] != index[v] {
				continue
			}
			// v roots a component: pop it and compute its depth from the
			// components it reaches, all of which are complete.
			c := len(compDepth)
			members = members[:0]
			for {
				w := sccStack[len(sccStack)-1]
				sccStack = sccStack[:len(sccStack)-1]
				onStack[w] = false
				comp[w] = c
				members = append(members, w)
				if w == v {
					break
				}
			}
			d := 0
			for _, m := range members {
				for _, w := range adj[m] {
					if comp[w] != c {
						d = max(d, compDepth[comp[w]]+1)
					}
				}
			}
			compDepth = append(compDepth, d)
		}
	}
	out := make([]int, n)
	for v := range n {
		out[v] = compDepth[comp[v]]
	}
	return out
}
