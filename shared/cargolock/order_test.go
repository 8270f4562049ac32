package cargolock

import (
	"slices"
	"testing"
)

// pkg builds a package whose dependencies are written as in a lock file.
func pkg(name, version string, deps ...string) Package {
	p := Package{Name: name, Version: version}
	for _, s := range deps {
		d, ok := parseDepRef(s)
		if !ok {
			panic("bad dependency in test: " + s)
		}
		p.Dependencies = append(p.Dependencies, d)
	}
	return p
}

var (
	diamond = &Lockfile{Packages: []Package{
		pkg("app", "0.1.0", "right", "left"),
		pkg("right", "1.0.0", "base"),
		pkg("left", "1.0.0", "base"),
		pkg("base", "1.0.0"),
	}}
	// syn 1 and syn 2 are one name; only syn 1 needs old-dep.
	twoVersions = &Lockfile{Packages: []Package{
		pkg("app", "0.1.0", "syn 2.0.0"),
		pkg("syn", "1.0.0", "old-dep"),
		pkg("syn", "2.0.0", "quote"),
		pkg("quote", "1.0.0", "proc-macro2"),
		pkg("proc-macro2", "1.0.0"),
		pkg("old-dep", "1.0.0"),
	}}
	cycle = &Lockfile{Packages: []Package{
		pkg("app", "0.1.0", "b"),
		pkg("b", "1.0.0", "a"),
		pkg("a", "1.0.0", "b", "leaf"),
		pkg("leaf", "1.0.0"),
	}}
)

func TestDependencyOrder(t *testing.T) {
	tests := []struct {
		name  string
		lock  *Lockfile
		roots []string
		want  []string
	}{
		{"diamond", diamond, nil, []string{"base", "left", "right", "app"}},
		{"diamond from one side", diamond, []string{"left"}, []string{"base", "left"}},
		{"diamond from both sides", diamond, []string{"right", "left"}, []string{"base", "left", "right"}},
		{"diamond from the top", diamond, []string{"app"}, []string{"base", "left", "right", "app"}},
		{"unknown root", diamond, []string{"nope"}, []string{}},
		{"unknown root ignored", diamond, []string{"nope", "right"}, []string{"base", "right"}},
		{"cycle collapsed, leaves first", cycle, nil, []string{"leaf", "a", "b", "app"}},
		{"cycle from inside", cycle, []string{"b"}, []string{"leaf", "a", "b"}},
		{"versions merged by name", twoVersions, nil, []string{"old-dep", "proc-macro2", "quote", "syn", "app"}},
		{"closure follows versions", twoVersions, []string{"app"}, []string{"proc-macro2", "quote", "syn", "app"}},
		{"longest chain decides", &Lockfile{Packages: []Package{
			pkg("a", "1", "b", "c"),
			pkg("b", "1", "c"),
			pkg("c", "1"),
		}}, nil, []string{"c", "b", "a"}},
		{"self dependency ignored", &Lockfile{Packages: []Package{
			pkg("a", "1", "a"),
		}}, nil, []string{"a"}},
		{"two-package cycle", &Lockfile{Packages: []Package{
			pkg("y", "1", "x"),
			pkg("x", "1", "y"),
		}}, nil, []string{"x", "y"}},
		{"unresolved dependency ignored", &Lockfile{Packages: []Package{
			pkg("app", "1", "missing", "dep 9.9.9"),
			pkg("dep", "1.0.0"),
		}}, nil, []string{"app", "dep"}},
		{"ambiguous dependency ignored", &Lockfile{Packages: []Package{
			pkg("app", "1", "syn"),
			pkg("syn", "1.0.0"),
			pkg("syn", "2.0.0"),
		}}, nil, []string{"app", "syn"}},
		{"empty", &Lockfile{}, nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.lock.DependencyOrder(tt.roots...)
			if got == nil || !slices.Equal(got, tt.want) {
				t.Fatalf("DependencyOrder(%q) = %#v, want %#v", tt.roots, got, tt.want)
			}
		})
	}
}

func TestDependencyOrderFixtures(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"v1", "v1.lock", []string{"libc", "memchr", "aho-corasick", "regex", "grep", "ripgrep"}},
		{"v1 root table", "v1_root.lock", []string{"libc", "memchr", "aho-corasick", "regex", "grep", "ripgrep"}},
		{"v2", "v2.lock", []string{"cfg-if", "log", "app"}},
		{"v3", "v3.lock", []string{"serde", "tokio", "unicode-ident", "proc-macro2", "my-crate"}},
		{"v4", "v4.lock", []string{"windows-sys", "syntect", "bat-macros", "bat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseFile("testdata/" + tt.file)
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if got := l.DependencyOrder(); !slices.Equal(got, tt.want) {
				t.Fatalf("DependencyOrder() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDependencyOrderLongChain(t *testing.T) {
	// Deep enough that a recursive walk would be a risk on small stacks.
	const n = 100_000
	l := &Lockfile{Packages: make([]Package, n)}
	names := make([]string, n)
	for i := range n {
		names[i] = string(rune('a'+i%26)) + itoa(i)
	}
	for i := range n {
		l.Packages[i] = Package{Name: names[i], Version: "1"}
		if i+1 < n {
			l.Packages[i].Dependencies = []DepRef{{Name: names[i+1]}}
		}
	}
	got := l.DependencyOrder()
	for i, name := range got {
		if name != names[n-1-i] {
			t.Fatalf("position %d = %s, want %s", i, name, names[n-1-i])
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// checkOrder asserts that order lists every package name exactly once and
// puts each dependency before its dependent, except inside a cycle.
func checkOrder(t *testing.T, l *Lockfile, order []string) {
	t.Helper()
	pos := make(map[string]int, len(order))
	for i, n := range order {
		if _, dup := pos[n]; dup {
			t.Fatalf("%s listed twice in %v", n, order)
		}
		pos[n] = i
	}
	adj := make(map[string][]string)
	for _, p := range l.Packages {
		if _, ok := pos[p.Name]; !ok {
			t.Fatalf("%s missing from %v", p.Name, order)
		}
		for _, d := range p.Dependencies {
			if q, ok := l.Lookup(d); ok && q.Name != p.Name {
				adj[p.Name] = append(adj[p.Name], q.Name)
			}
		}
	}
	if len(pos) != len(order) {
		t.Fatalf("order %v has names that are no package", order)
	}
	for from, tos := range adj {
		for _, to := range tos {
			if pos[to] > pos[from] && !reaches(adj, to, from) {
				t.Fatalf("%s comes after %s, which depends on it, and they form no cycle", to, from)
			}
		}
	}
}

func reaches(adj map[string][]string, from, to string) bool {
	seen := map[string]bool{from: true}
	stack := []string{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == to {
			return true
		}
		for _, m := range adj[n] {
			if !seen[m] {
				seen[m] = true
				stack = append(stack, m)
			}
		}
	}
	return false
}

func BenchmarkDependencyOrder(b *testing.B) {
	var largest *Lockfile
	for _, path := range realLocks(b) {
		l, err := ParseFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if largest == nil || len(l.Packages) > len(largest.Packages) {
			largest = l
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		largest.DependencyOrder()
	}
}
