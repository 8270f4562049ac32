package replay

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadTrace(t *testing.T) {
	tr, err := LoadTrace("testdata/tiny")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Project != "tiny" || len(tr.Commits) != 5 {
		t.Fatalf("project %q with %d commits, want tiny with 5", tr.Project, len(tr.Commits))
	}
	c4 := tr.Commits[3]
	if c4.Commit != "c4" || !slices.Equal(c4.Parents, []string{"c2", "c3"}) || !c4.FirstParent || c4.Time != 1700010800 || c4.Members["app"] != "tree3" {
		t.Errorf("c4 = %+v", c4)
	}
	g, err := tr.Lock(c4.Lock)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cfg-if", "serde", "log", "app"}; !slices.Equal(g.CrateNames, want) {
		t.Errorf("crate names %v, want %v", g.CrateNames, want)
	}
	if len(g.Units) != 4 || len(g.LockDeps) != 4 || len(g.Shards) == 0 {
		t.Errorf("%d units, %d lock deps, %d shards", len(g.Units), len(g.LockDeps), len(g.Shards))
	}
	again, _ := tr.Lock(c4.Lock)
	if again != g {
		t.Error("lock parsed twice")
	}
}

func TestLoadTraceRejects(t *testing.T) {
	const lock = "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a"
	line := func(commit, parent string) string {
		p := "[]"
		if parent != "" {
			p = `["` + parent + `"]`
		}
		return `{"commit":"` + commit + `","parents":` + p + `,"time":1,"first_parent":true,"lock":"` + lock + `","members":{}}` + "\n"
	}
	tests := []struct {
		name    string
		commits string
	}{
		{"empty", ""},
		{"not json", "{\n"},
		{"duplicate commit", line("a", "") + line("a", "")},
		{"parent after child", line("b", "a") + line("a", "")},
		{"missing lock file", `{"commit":"a","parents":[],"time":1,"lock":"ffff"}` + "\n"},
		{"lock path escapes", `{"commit":"a","parents":[],"time":1,"lock":"../x"}` + "\n"},
		{"no commit id", `{"parents":[],"time":1,"lock":"` + lock + `"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "commits.jsonl"), tt.commits)
			writeFile(t, filepath.Join(dir, "locks", lock+".lock"), "version = 3\n")
			if _, err := LoadTrace(dir); !errors.Is(err, ErrTrace) {
				t.Errorf("error %v, want ErrTrace", err)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	tr, err := LoadTrace("testdata/tiny")
	if err != nil {
		t.Fatal(err)
	}
	s := NewSchedule(tr)
	if !slices.Equal(s.Branch, []int{-1, -1, 0, -1, -1}) || s.Branches != 1 {
		t.Errorf("branches %v (%d)", s.Branch, s.Branches)
	}
	if !slices.Equal(s.FirstOfBranch, []bool{false, false, true, false, false}) {
		t.Errorf("first of branch %v", s.FirstOfBranch)
	}
	if !slices.IsSorted(s.StartMs) || s.StartMs[0] != 1700000000000 {
		t.Errorf("start times %v", s.StartMs)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScheduleTimeOrder(t *testing.T) {
	// c was pushed before b but is listed after it; e's clock is behind its
	// parent's.
	tr := traceOf(t, []Commit{
		{Commit: "a", Time: 1, FirstParent: true},
		{Commit: "b", Parents: []string{"a"}, Time: 10, FirstParent: true},
		{Commit: "c", Parents: []string{"a"}, Time: 5},
		{Commit: "d", Parents: []string{"b", "c"}, Time: 11, FirstParent: true},
		{Commit: "e", Parents: []string{"d"}, Time: 3, FirstParent: true},
	})
	s := NewSchedule(tr)
	if want := []int{0, 2, 1, 3, 4}; !slices.Equal(s.Order, want) {
		t.Errorf("order %v, want %v", s.Order, want)
	}
	if want := []int64{1000, 10000, 5000, 11000, 11001}; !slices.Equal(s.StartMs, want) {
		t.Errorf("start times %v, want %v", s.StartMs, want)
	}
	if !s.FirstOfBranch[2] || s.Branches != 1 {
		t.Errorf("first of branch %v, %d branches", s.FirstOfBranch, s.Branches)
	}
}

// traceOf writes commits (all with one empty lock file) and loads them.
func traceOf(t *testing.T, commits []Commit) *Trace {
	t.Helper()
	const lock = "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a"
	var lines strings.Builder
	for _, c := range commits {
		c.Lock = lock
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		lines.Write(append(b, '\n'))
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "commits.jsonl"), lines.String())
	writeFile(t, filepath.Join(dir, "locks", lock+".lock"), "version = 3\n")
	tr, err := LoadTrace(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestScheduleSameTimeRuns(t *testing.T) {
	tr := traceOf(t, []Commit{
		{Commit: "a", Time: 1, FirstParent: true},
		{Commit: "b", Parents: []string{"a"}, Time: 2, FirstParent: true},
		{Commit: "c", Parents: []string{"b"}, Time: 2, FirstParent: true},
		{Commit: "d", Parents: []string{"c"}, Time: 3, FirstParent: true},
		{Commit: "e", Parents: []string{"d"}, Time: 4},
		{Commit: "f", Parents: []string{"e"}, Time: 4},
		{Commit: "g", Parents: []string{"d", "f"}, Time: 4, FirstParent: true},
	})
	s := NewSchedule(tr)
	if want := []bool{true, false, true, true, false, true, true}; !slices.Equal(s.Built, want) {
		t.Errorf("built %v, want %v", s.Built, want)
	}
	if want := []bool{false, false, false, false, false, true, false}; !slices.Equal(s.FirstOfBranch, want) {
		t.Errorf("first of branch %v, want %v", s.FirstOfBranch, want)
	}
}
