package replay

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTraceFromGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(p, content string) { writeFile(t, filepath.Join(repo, p), content) }
	commit := func(msg string, date string) string {
		git("add", "-A")
		git("-c", "core.hooksPath=/dev/null", "commit", "-q", "-m", msg, "--date", date)
		return git("rev-parse", "HEAD")
	}

	git("init", "-q", "-b", "main")
	write("README", "no lock yet\n")
	c0 := commit("no lock", "2024-01-01T00:00:00Z")
	write("Cargo.toml", "[package]\nname = \"demo\"\nversion = \"0.1.0\"\n[workspace]\nmembers = [\"crates/util\"]\n")
	write("crates/util/Cargo.toml", "[package]\nname = \"demo-util\"\nversion = \"0.1.0\"\n")
	write("crates/util/src/lib.rs", "pub fn f() {}\n")
	write("testdata/fixture/Cargo.toml", "[package]\nname = \"demo-util\"\nversion = \"9.0.0\"\n")
	write("src/lib.rs", "pub fn a() {}\n")
	write("Cargo.lock", `version = 3

[[package]]
name = "demo"
version = "0.1.0"
dependencies = ["demo-util", "itoa"]

[[package]]
name = "demo-util"
version = "0.1.0"

[[package]]
name = "itoa"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
`)
	c1 := commit("add lock", "2024-01-02T00:00:00Z")
	write("src/lib.rs", "pub fn b() {}\n")
	c2 := commit("change root", "2024-01-03T00:00:00Z")
	git("checkout", "-q", "-b", "topic")
	write("src/lib.rs", "pub fn c() {}\n")
	c3 := commit("on a branch", "2024-01-04T00:00:00Z")
	git("checkout", "-q", "main")
	git("-c", "core.hooksPath=/dev/null", "merge", "-q", "--no-ff", "-m", "merge topic", "topic")
	c4 := git("rev-parse", "HEAD")

	out := filepath.Join(t.TempDir(), "trace")
	n, err := TraceFromGit(repo, out, "main")
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("wrote %d commits, want 4", n)
	}
	tr, err := LoadTrace(out)
	if err != nil {
		t.Fatal(err)
	}
	var shas []string
	for _, c := range tr.Commits {
		shas = append(shas, c.Commit)
	}
	if !slices.Equal(shas[:2], []string{c1, c2}) || !slices.Contains(shas, c3) || shas[3] != c4 {
		t.Fatalf("commits %v, want %v then %v and %v, then %v", shas, c1, c2, c3, c4)
	}
	byID := map[string]Commit{}
	for _, c := range tr.Commits {
		byID[c.Commit] = c
	}
	lockBlob := git("rev-parse", c1+":Cargo.lock")
	utilTree := git("rev-parse", c1+":crates/util")
	tests := []struct {
		name        string
		commit      Commit
		parents     []string
		firstParent bool
		rootTree    string
	}{
		{"first commit with a lock", byID[c1], []string{c0}, true, git("rev-parse", c1+"^{tree}")},
		{"second commit", byID[c2], []string{c1}, true, git("rev-parse", c2+"^{tree}")},
		{"branch commit", byID[c3], []string{c2}, false, git("rev-parse", c3+"^{tree}")},
		{"merge", byID[c4], []string{c2, c3}, true, git("rev-parse", c4+"^{tree}")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.commit
			if !slices.Equal(c.Parents, tt.parents) || c.FirstParent != tt.firstParent || c.Lock != lockBlob || c.Time == 0 {
				t.Errorf("commit %+v", c)
			}
			if c.Members["demo"] != tt.rootTree || c.Members["demo-util"] != utilTree || len(c.Members) != 2 {
				t.Errorf("members %v, want demo=%s demo-util=%s", c.Members, tt.rootTree, utilTree)
			}
		})
	}
	if byID[c1].Members["demo"] == byID[c2].Members["demo"] {
		t.Error("root member tree did not change with its source")
	}
	g, err := tr.Lock(lockBlob)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Packages) != 3 {
		t.Errorf("lock has %d packages", len(g.Packages))
	}
}
