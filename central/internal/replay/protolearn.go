package replay

import (
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// identityIndex maps a build identity to the entries of the latest build
// with it. In central it would be a store table written by ingest.
type identityIndex map[[32]byte][]wire.ManifestEntry

func (x identityIndex) put(id [32]byte, entries []wire.ManifestEntry) { x[id] = entries }

// buildIdentity hashes what makes two builds compile the same keys, except
// member sources: namespace, lock deps, target, profile, toolchain.
func buildIdentity(namespace string, deps []wire.LockDep, target, profile, toolchain string) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", namespace, target, profile, toolchain)
	for _, d := range deps {
		fmt.Fprintf(h, "%s@%s\n", d.Name, d.Version)
	}
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// churnIndex learns per namespace and crate how often consecutive builds
// (in completion order) used the same keys.
type churnIndex map[string]*nsChurn

type nsChurn struct {
	last  map[string]string // crate -> its keys in the last build, joined
	pairs map[string]int
	reuse map[string]int
}

func (x churnIndex) learn(namespace string, entries []wire.ManifestEntry) {
	n := x[namespace]
	if n == nil {
		n = &nsChurn{pairs: map[string]int{}, reuse: map[string]int{}}
		x[namespace] = n
	}
	cur := make(map[string]string, len(entries))
	for _, e := range entries {
		cur[e.CrateName] += e.CacheKey
	}
	for crate, keys := range cur {
		prev, ok := n.last[crate]
		if !ok {
			continue
		}
		n.pairs[crate]++
		if prev == keys {
			n.reuse[crate]++
		}
	}
	n.last = cur
}

func (x churnIndex) churny(namespace, crate string) bool {
	n := x[namespace]
	if n == nil || n.pairs[crate] < churnMinBuilds {
		return false
	}
	return float64(n.reuse[crate]) < churnMinReuse*float64(n.pairs[crate])
}

// lockID names a set of lock deps.
type lockID [32]byte

func lockIDOf(deps []wire.LockDep) lockID {
	h := sha256.New()
	for _, d := range deps {
		fmt.Fprintf(h, "%s@%s\n", d.Name, d.Version)
	}
	var id lockID
	h.Sum(id[:0])
	return id
}

// coChangeMaxDiff bounds how many packages may change between two builds
// for their key changes to be attributed: beyond it, a `cargo update`
// would blame every changed package for every changed key.
const coChangeMaxDiff = 4

// coChange learns which locked packages each crate's keys depend on, from
// consecutive builds of a namespace with the same toolchain: when packages
// X changed version and crate c's keys changed, c depends on each of X built
// before it (an over-approximation when X has several members).
type coChange struct {
	// affects[x][c]: a version change of package x changed crate c's keys.
	affects map[string]map[string]bool
	// keyLock is the lock of the latest build that used each key; locks
	// holds each lock's versions by package name.
	keyLock map[string]lockID
	locks   map[lockID]map[string]string
	last    map[string]*lastBuild
}

type lastBuild struct {
	toolchain string
	lock      lockID
	keys      map[string]string // crate -> its keys, joined
}

func newCoChange() *coChange {
	return &coChange{affects: map[string]map[string]bool{}, keyLock: map[string]lockID{}, locks: map[lockID]map[string]string{}, last: map[string]*lastBuild{}}
}

func (x *coChange) learn(namespace, toolchain string, deps []wire.LockDep, entries []wire.ManifestEntry) {
	id := lockIDOf(deps)
	if _, ok := x.locks[id]; !ok {
		x.locks[id] = versionsByName(deps)
	}
	cur := &lastBuild{toolchain: toolchain, lock: id, keys: make(map[string]string, len(entries))}
	for _, e := range entries {
		x.keyLock[e.CacheKey] = id
		cur.keys[e.CrateName] += e.CacheKey
	}
	prev := x.last[namespace]
	x.last[namespace] = cur
	if prev == nil || prev.toolchain != toolchain || prev.lock == id {
		return
	}
	changed := diffLocks(x.locks[id], x.locks[prev.lock])
	if len(changed) == 0 || len(changed) > coChangeMaxDiff {
		return
	}
	// Entries come in build order, dependencies first: a crate built before
	// a changed package cannot depend on it.
	pos := make(map[string]int, len(entries))
	for i, e := range entries {
		if _, ok := pos[e.CrateName]; !ok {
			pos[e.CrateName] = i
		}
	}
	for crate, keys := range cur.keys {
		if old, ok := prev.keys[crate]; ok && old != keys {
			for _, name := range changed {
				if p, ok := pos[cargolock.CrateName(name)]; ok && pos[crate] < p {
					continue
				}
				if x.affects[name] == nil {
					x.affects[name] = map[string]bool{}
				}
				x.affects[name][crate] = true
			}
		}
	}
}

// versionsByName maps each package name to its locked versions, joined.
func versionsByName(deps []wire.LockDep) map[string]string {
	m := make(map[string]string, len(deps))
	for _, d := range deps {
		if v, ok := m[d.Name]; ok {
			m[d.Name] = v + "," + d.Version
		} else {
			m[d.Name] = d.Version
		}
	}
	return m
}

// diffLocks lists the package names whose versions differ, sorted.
func diffLocks(a, b map[string]string) []string {
	var out []string
	for n, v := range a {
		if b[n] != v {
			out = append(out, n)
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
