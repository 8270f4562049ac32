// Package cargolock reads Cargo.lock files (lock format versions 1 to 4) and
// maps Cargo package names to the rustc crate names kache's object layout is
// keyed by.
//
// The kache client sends the (name, version) pairs of Cargo.lock as
// cargo_lock_deps and computes its shards from them; Lockfile.Deps returns
// the same set. DependencyOrder gives the leaves-first order the client uses
// for crate_names.
package cargolock

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// MaxSize is the largest Cargo.lock Parse reads. Real lock files are well
// under 1 MiB; the cap keeps a hostile or corrupt input from exhausting
// memory, and matches the client's 64 MiB cap on manifest reads.
const MaxSize = 64 << 20

var (
	// ErrTooLarge is returned for an input over MaxSize.
	ErrTooLarge = errors.New("larger than 64 MiB")
	// ErrInvalid is returned for a well-formed TOML document that is not a
	// usable Cargo.lock: a package without name or version, a malformed
	// dependency, or a version below 1.
	ErrInvalid = errors.New("malformed lock file")
)

// Package is one [[package]] entry (or the [root] table of very old lock
// files).
type Package struct {
	Name    string
	Version string
	// Source is empty for workspace members and other path packages, else
	// e.g. "registry+https://github.com/rust-lang/crates.io-index" or
	// "git+https://...#<commit>".
	Source       string
	Dependencies []DepRef
}

// DepRef is one entry of a package's dependencies list. Cargo writes only as
// much as it needs to be unambiguous, so Version is "" when the lock file
// names the dependency alone. A "(source)" suffix is dropped: name and
// version identify a package in every real lock file; use Lookup to resolve.
type DepRef struct {
	Name    string
	Version string
}

// Lockfile is a parsed Cargo.lock.
type Lockfile struct {
	// Version is the lock format: the top-level `version` key when present,
	// else 2 when packages carry their own checksums and 1 otherwise (a
	// checksum-less v2 file cannot be told apart from v1; both parse the same).
	Version int
	// Packages are in file order, the [root] package of an old v1 file first.
	Packages []Package
}

type rawLock struct {
	Version *int64       `toml:"version"`
	Package []rawPackage `toml:"package"`
	Root    *rawPackage  `toml:"root"`
}

type rawPackage struct {
	Name         string   `toml:"name"`
	Version      string   `toml:"version"`
	Source       string   `toml:"source"`
	Checksum     string   `toml:"checksum"`
	Dependencies []string `toml:"dependencies"`
}

// Parse reads a Cargo.lock of any format version. Keys it does not need
// (checksum, [metadata], [patch], ...) are ignored. Unlike Cargo it accepts
// version numbers above 4, since the package tables it reads have not changed
// since version 1 and the kache client ignores the version too.
func Parse(r io.Reader) (*Lockfile, error) {
	l, err := parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse Cargo.lock: %w", err)
	}
	return l, nil
}

// ParseFile parses the Cargo.lock at path. A missing file is an error
// wrapping fs.ErrNotExist.
func ParseFile(path string) (*Lockfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open Cargo.lock: %w", err)
	}
	defer f.Close()
	// A regular file over the cap is refused from its size, not read.
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > MaxSize {
		return nil, fmt.Errorf("parse %s: %w", path, ErrTooLarge)
	}
	l, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return l, nil
}

func parse(r io.Reader) (*Lockfile, error) {
	var buf strings.Builder
	n, err := io.Copy(&buf, io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if n > MaxSize {
		return nil, ErrTooLarge
	}
	if tooDeep(buf.String(), maxNesting) {
		return nil, fmt.Errorf("%w: arrays or inline tables nested deeper than %d", ErrInvalid, maxNesting)
	}
	var raw rawLock
	if _, err := toml.Decode(buf.String(), &raw); err != nil {
		return nil, err
	}

	l := &Lockfile{Packages: make([]Package, 0, len(raw.Package)+1)}
	hasChecksums := false
	if raw.Root != nil {
		p, err := raw.Root.toPackage()
		if err != nil {
			return nil, fmt.Errorf("%w: [root]: %w", ErrInvalid, err)
		}
		l.Packages = append(l.Packages, p)
	}
	for i := range raw.Package {
		rp := &raw.Package[i]
		p, err := rp.toPackage()
		if err != nil {
			return nil, fmt.Errorf("%w: package %d: %w", ErrInvalid, i+1, err)
		}
		hasChecksums = hasChecksums || rp.Checksum != ""
		l.Packages = append(l.Packages, p)
	}

	switch {
	case raw.Version == nil && hasChecksums:
		l.Version = 2
	case raw.Version == nil:
		l.Version = 1
	case *raw.Version < 1 || *raw.Version > math.MaxInt32:
		return nil, fmt.Errorf("%w: version %d", ErrInvalid, *raw.Version)
	default:
		l.Version = int(*raw.Version)
	}
	return l, nil
}

func (rp *rawPackage) toPackage() (Package, error) {
	if rp.Name == "" {
		return Package{}, errors.New("no name")
	}
	if rp.Version == "" {
		return Package{}, fmt.Errorf("%s: no version", rp.Name)
	}
	p := Package{Name: rp.Name, Version: rp.Version, Source: rp.Source}
	if len(rp.Dependencies) > 0 {
		p.Dependencies = make([]DepRef, len(rp.Dependencies))
	}
	for i, s := range rp.Dependencies {
		d, ok := parseDepRef(s)
		if !ok {
			return Package{}, fmt.Errorf("%s %s: dependency %q", rp.Name, rp.Version, s)
		}
		p.Dependencies[i] = d
	}
	return p, nil
}

// parseDepRef reads "name", "name version" or "name version (source)", the
// three spellings Cargo writes in every format version.
func parseDepRef(s string) (DepRef, bool) {
	name, rest, hasVersion := strings.Cut(s, " ")
	if name == "" {
		return DepRef{}, false
	}
	if !hasVersion {
		return DepRef{Name: name}, true
	}
	version, source, hasSource := strings.Cut(rest, " ")
	if version == "" {
		return DepRef{}, false
	}
	if hasSource && (len(source) < 2 || source[0] != '(' || source[len(source)-1] != ')') {
		return DepRef{}, false
	}
	return DepRef{Name: name, Version: version}, true
}

// Deps returns every (name, version) pair, sorted by name then version
// bytewise and deduplicated: the client's cargo_lock_deps. The result is
// never nil, because the client rejects a JSON null where it expects a list.
func (l *Lockfile) Deps() []wire.LockDep {
	deps := make([]wire.LockDep, 0, len(l.Packages))
	for _, p := range l.Packages {
		deps = append(deps, wire.LockDep{Name: p.Name, Version: p.Version})
	}
	slices.SortFunc(deps, func(a, b wire.LockDep) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Version, b.Version)
	})
	return slices.Compact(deps)
}

// Members returns the packages without a source: the workspace members (and
// any other path dependencies), in file order. They share their Dependencies
// slices with l.
func (l *Lockfile) Members() []Package {
	var members []Package
	for _, p := range l.Packages {
		if p.Source == "" {
			members = append(members, p)
		}
	}
	return members
}

// Lookup resolves a dependency reference to the package it denotes: the
// package with that name and version, or with an omitted version the only
// package of that name. It reports false for an unknown package and for an
// omitted version that matches several versions. Packages that share a name
// and version (a second source, or a duplicated entry left by a bad merge)
// resolve to the first in file order.
func (l *Lockfile) Lookup(d DepRef) (Package, bool) {
	var sameName []int
	for i := range l.Packages {
		if l.Packages[i].Name == d.Name {
			sameName = append(sameName, i)
		}
	}
	i, ok := resolve(l.Packages, sameName, d)
	if !ok {
		return Package{}, false
	}
	return l.Packages[i], true
}

// maxNesting bounds how deep arrays and inline tables nest. Cargo writes
// two levels at most ([[package]] headers, dependency lists); the TOML
// decoder's time and memory grow steeply with depth (a 1 MB file of nested
// arrays cost it seconds and half a GiB), so deeper input is refused first.
const maxNesting = 32

// tooDeep reports whether s nests '[' or '{' more than limit deep outside
// strings and comments.
func tooDeep(s string, limit int) bool {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case '"', '\'':
			delim := s[i : i+1]
			if strings.HasPrefix(s[i:], strings.Repeat(delim, 3)) {
				delim = strings.Repeat(delim, 3)
			}
			i += len(delim)
			for i < len(s) && !strings.HasPrefix(s[i:], delim) {
				if c == '"' && s[i] == '\\' {
					i++
				}
				i++
			}
			i += len(delim) - 1
		case '[', '{':
			depth++
			if depth > limit {
				return true
			}
		case ']', '}':
			depth = max(depth-1, 0)
		}
	}
	return false
}
