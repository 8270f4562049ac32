package cargolock

import (
	"cmp"
	"slices"
)

// Graph is a lock file's dependency graph between packages (a name at a
// version), the graph a build compiles. Indexes are into Lockfile.Packages.
type Graph struct {
	// Deps[i] are the packages package i depends on, resolved as Lookup
	// does, sorted, without duplicates or self-edges. References that
	// resolve to no package are left out.
	Deps   [][]int
	byName map[string][]int
}

// Graph derives the package dependency graph.
func (l *Lockfile) Graph() *Graph {
	pkgs := l.Packages
	g := &Graph{Deps: make([][]int, len(pkgs)), byName: make(map[string][]int, len(pkgs))}
	for i, p := range pkgs {
		g.byName[p.Name] = append(g.byName[p.Name], i)
	}
	for i, p := range pkgs {
		for _, d := range p.Dependencies {
			if j, ok := resolve(pkgs, g.byName[d.Name], d); ok && j != i {
				g.Deps[i] = append(g.Deps[i], j)
			}
		}
		slices.Sort(g.Deps[i])
		g.Deps[i] = slices.Compact(g.Deps[i])
	}
	return g
}

// Reachable marks the packages reachable from every package with one of the
// root names (unknown names are ignored), or every package without roots.
func (g *Graph) Reachable(roots ...string) []bool {
	in := make([]bool, len(g.Deps))
	if len(roots) == 0 {
		for i := range in {
			in[i] = true
		}
		return in
	}
	var stack []int
	for _, r := range roots {
		for _, i := range g.byName[r] {
			if !in[i] {
				in[i] = true
				stack = append(stack, i)
			}
		}
	}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, j := range g.Deps[i] {
			if !in[j] {
				in[j] = true
				stack = append(stack, j)
			}
		}
	}
	return in
}

// Components finds the dependency cycles (strongly connected components)
// among the included packages (every package when include is nil). comp[i]
// numbers package i's component (-1 when not included); order lists the
// included packages with every component after the components it depends on
// and the packages of one component adjacent, by index: an order in which
// a build can compile them.
func (g *Graph) Components(include []bool) (comp, order []int) {
	return components(g.Deps, include)
}

// components is an iterative Tarjan (a long dependency chain cannot exhaust
// the stack) over adj restricted to include (all nodes when nil). Tarjan
// completes a component only after every component it reaches, so
// completion order, and component numbers, put dependencies first.
func components(adj [][]int, include []bool) (comp, order []int) {
	n := len(adj)
	index := make([]int, n) // discovery number from 1; 0 = unvisited
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
	visit := func(v int) {
		counter++
		index[v], low[v] = counter, counter
		stack = append(stack, v)
		onStack[v] = true
		calls = append(calls, frame{v: v})
	}
	for start := range n {
		if include != nil && !include[start] || index[start] != 0 {
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
				case include != nil && !include[w]:
				case index[w] == 0:
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
