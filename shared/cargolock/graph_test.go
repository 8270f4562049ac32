package cargolock

import (
	"slices"
	"testing"
)

func TestGraphDeps(t *testing.T) {
	l := &Lockfile{Packages: []Package{
		pkg("app", "0.1.0", "syn 2.0.0", "syn 2.0.0", "app", "missing", "log"),
		pkg("syn", "1.0.0"),
		pkg("syn", "2.0.0"),
		pkg("log", "0.4.0"),
		pkg("tool", "0.1.0", "syn"), // ambiguous: two versions of syn
	}}
	tests := []struct {
		name string
		pkg  int
		want []int
	}{
		// Versions are resolved, duplicates and self-edges dropped, unknown
		// references left out, and the result is sorted.
		{"resolved by version", 0, []int{2, 3}},
		{"leaf", 1, nil},
		{"ambiguous reference", 4, nil},
	}
	g := l.Graph()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.Deps[tt.pkg]; !slices.Equal(got, tt.want) {
				t.Errorf("Deps[%d] = %v, want %v", tt.pkg, got, tt.want)
			}
		})
	}
}

func TestGraphReachable(t *testing.T) {
	tests := []struct {
		name  string
		lock  *Lockfile
		roots []string
		want  []bool
	}{
		{"no roots: everything", diamond, nil, []bool{true, true, true, true}},
		{"one side", diamond, []string{"left"}, []bool{false, false, true, true}},
		{"unknown root", diamond, []string{"nope"}, []bool{false, false, false, false}},
		// Only syn 2 is reachable from app, so old-dep (syn 1's) is not.
		{"by version", twoVersions, []string{"app"}, []bool{true, false, true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.lock.Graph().Reachable(tt.roots...); !slices.Equal(got, tt.want) {
				t.Errorf("Reachable(%v) = %v, want %v", tt.roots, got, tt.want)
			}
		})
	}
}

func TestGraphComponents(t *testing.T) {
	tests := []struct {
		name      string
		lock      *Lockfile
		include   []bool
		wantOrder []int
		// sameComp lists pairs of packages that must share a component.
		sameComp [][2]int
	}{
		{"diamond", diamond, nil, []int{3, 1, 2, 0}, nil},
		{"cycle adjacent, by index, after its dependencies", cycle, nil, []int{3, 1, 2, 0}, [][2]int{{1, 2}}},
		{"excluded packages left out", diamond, []bool{false, false, true, true}, []int{3, 2}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comp, order := tt.lock.Graph().Components(tt.include)
			if !slices.Equal(order, tt.wantOrder) {
				t.Errorf("order = %v, want %v", order, tt.wantOrder)
			}
			for _, p := range tt.sameComp {
				if comp[p[0]] != comp[p[1]] {
					t.Errorf("packages %d and %d in components %d and %d", p[0], p[1], comp[p[0]], comp[p[1]])
				}
			}
			for i, c := range comp {
				if tt.include != nil && !tt.include[i] && c != -1 {
					t.Errorf("excluded package %d in component %d", i, c)
				}
			}
		})
	}
}
