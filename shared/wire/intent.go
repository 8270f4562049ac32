package wire

import (
	"encoding/json"
	"fmt"
)

// LockDep is one Cargo.lock package, `[name, version]` on the wire (a Rust
// tuple, not an object).
type LockDep struct {
	Name    string
	Version string
}

// Key is the dependency key kache stores: "name@version".
func (d LockDep) Key() string { return d.Name + "@" + d.Version }

// MarshalJSON writes the 2-element array.
func (d LockDep) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]string{d.Name, d.Version})
}

// UnmarshalJSON reads exactly a 2-element array of strings. Intents carry
// hundreds of deps, so the common shape without escapes is read directly.
func (d *LockDep) UnmarshalJSON(b []byte) error {
	if name, version, ok := plainPair(b); ok {
		d.Name, d.Version = name, version
		return nil
	}
	var v []string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode lock dep: %w", err)
	}
	if len(v) != 2 {
		return fmt.Errorf("decode lock dep: want [name, version], got %d elements", len(v))
	}
	d.Name, d.Version = v[0], v[1]
	return nil
}

// BuildIntent is the body of POST /v{1,2}/prefetch-plan (kache-protocol.md 1.1).
// The client sends only the first three fields; the rest are additive
// extensions sent by kache-sidecar.
type BuildIntent struct {
	CrateNames    []string  `json:"crate_names"`
	Namespace     *string   `json:"namespace"`
	CargoLockDeps []LockDep `json:"cargo_lock_deps"`

	// Target, Profile and Features narrow variant choice when known.
	Target   string   `json:"target,omitempty"`
	Profile  string   `json:"profile,omitempty"`
	Features []string `json:"features,omitempty"`
	// Toolchain is the rustc version (`rustc -vV`'s release line, e.g.
	// "1.82.0"). Every cache key depends on it, so a key built by another
	// toolchain is never the one a build needs.
	Toolchain string `json:"toolchain,omitempty"`
	// Runner describes where the build runs (repository, branch, commit...).
	Runner *RunnerContext `json:"runner,omitempty"`
	// Budget can only lower what the planner would return.
	Budget *Budget `json:"budget,omitempty"`
}

// Budget limits a plan. Zero means no limit from the requester.
type Budget struct {
	MaxKeys  int    `json:"max_keys,omitempty"`
	MaxBytes uint64 `json:"max_bytes,omitempty"`
}

// RunnerContext is the CI context of a build, with the field names of kache's
// build-timeline `context` object (kache-protocol.md 7). Every field is optional.
type RunnerContext struct {
	Repository string            `json:"repository,omitempty"`
	Workflow   string            `json:"workflow,omitempty"`
	Job        string            `json:"job,omitempty"`
	RunID      string            `json:"run_id,omitempty"`
	RunAttempt string            `json:"run_attempt,omitempty"`
	Event      string            `json:"event,omitempty"`
	GitRef     string            `json:"git_ref,omitempty"`
	Commit     string            `json:"commit,omitempty"`
	RunnerOS   string            `json:"runner_os,omitempty"`
	RunnerArch string            `json:"runner_arch,omitempty"`
	RunnerPool string            `json:"runner_pool,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// plainPair reads `["name","version"]` (whitespace allowed) when neither
// string has an escape or a control character; anything else is left to
// encoding/json. encoding/json has already checked that b is valid JSON.
func plainPair(b []byte) (string, string, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return "", "", false
	}
	first, i, ok := plainString(b, skipSpace(b, i+1))
	if !ok {
		return "", "", false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ',' {
		return "", "", false
	}
	second, i, ok := plainString(b, skipSpace(b, i+1))
	if !ok {
		return "", "", false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ']' || skipSpace(b, i+1) != len(b) {
		return "", "", false
	}
	return first, second, true
}

func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", i, false // escapes and non-ASCII: encoding/json's rules apply
		}
	}
	return "", i, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
