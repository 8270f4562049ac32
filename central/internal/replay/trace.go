package replay

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrTrace marks a trace directory that does not follow the traces format.
var ErrTrace = errors.New("malformed trace")

// Commit is one line of commits.jsonl.
type Commit struct {
	Commit  string   `json:"commit"`
	Parents []string `json:"parents"`
	// Time is the committer time in unix seconds.
	Time int64 `json:"time"`
	// FirstParent is true on the first-parent line of the default branch.
	FirstParent bool `json:"first_parent"`
	// Lock is the git blob sha of the commit's Cargo.lock; the file is
	// locks/<Lock>.lock.
	Lock string `json:"lock"`
	// Members maps each workspace package to the git tree sha of its
	// directory: an unchanged hash means unchanged source.
	Members map[string]string `json:"members"`
}

// Trace is one project's history in the traces format.
type Trace struct {
	// Project is the trace directory's base name.
	Project string
	Dir     string
	// Commits are in file order: parents before children, oldest first.
	Commits []Commit
	// index maps a commit sha to its position in Commits.
	index map[string]int
	locks map[string]*LockGraph
}

// LoadTrace reads dir/commits.jsonl and checks what the harness relies on:
// every line decodes, commits are unique, known parents come before their
// children and every lock file exists. Lock files are parsed lazily, once
// each, by (*Trace).Lock.
func LoadTrace(dir string) (*Trace, error) {
	f, err := os.Open(filepath.Join(dir, "commits.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve trace dir: %w", err)
	}
	t := &Trace{Project: filepath.Base(abs), Dir: dir, index: map[string]int{}, locks: map[string]*LockGraph{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	line := 0
	checked := map[string]bool{}
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var c Commit
		if err := json.Unmarshal([]byte(text), &c); err != nil {
			return nil, fmt.Errorf("%w: commits.jsonl line %d: %w", ErrTrace, line, err)
		}
		if err := t.check(&c, line, checked); err != nil {
			return nil, err
		}
		t.index[c.Commit] = len(t.Commits)
		t.Commits = append(t.Commits, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read commits.jsonl: %w", err)
	}
	if len(t.Commits) == 0 {
		return nil, fmt.Errorf("%w: commits.jsonl has no commits", ErrTrace)
	}
	if err := t.checkOrder(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Trace) check(c *Commit, line int, checked map[string]bool) error {
	switch {
	case c.Commit == "":
		return fmt.Errorf("%w: line %d: no commit", ErrTrace, line)
	case c.Lock == "" || strings.ContainsAny(c.Lock, `/\`) || strings.Contains(c.Lock, ".."):
		return fmt.Errorf("%w: line %d: bad lock %q", ErrTrace, line, c.Lock)
	}
	if _, dup := t.index[c.Commit]; dup {
		return fmt.Errorf("%w: line %d: commit %s listed twice", ErrTrace, line, c.Commit)
	}
	for _, p := range c.Parents {
		if p == c.Commit {
			return fmt.Errorf("%w: line %d: commit %s is its own parent", ErrTrace, line, c.Commit)
		}
	}
	if !checked[c.Lock] {
		if _, err := os.Stat(t.lockPath(c.Lock)); err != nil {
			return fmt.Errorf("%w: line %d: %w", ErrTrace, line, err)
		}
		checked[c.Lock] = true
	}
	return nil
}

// checkOrder reports a parent listed after its child; parents outside the
// trace (history cut off, or commits without a Cargo.lock) are allowed.
func (t *Trace) checkOrder() error {
	for i, c := range t.Commits {
		for _, p := range c.Parents {
			if j, ok := t.index[p]; ok && j > i {
				return fmt.Errorf("%w: commit %s comes before its parent %s", ErrTrace, c.Commit, p)
			}
		}
	}
	return nil
}

func (t *Trace) lockPath(sha string) string {
	return filepath.Join(t.Dir, "locks", sha+".lock")
}

// Lock returns the parsed lock file with this blob sha, parsing it on first
// use only: histories have thousands of commits but a few hundred distinct
// lock files.
func (t *Trace) Lock(sha string) (*LockGraph, error) {
	if g, ok := t.locks[sha]; ok {
		return g, nil
	}
	g, err := LoadLockGraph(t.lockPath(sha))
	if err != nil {
		return nil, err
	}
	t.locks[sha] = g
	return g, nil
}
