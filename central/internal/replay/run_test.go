package replay

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSyntheticTrace writes a small history: twelve registry crates in a
// chain-like graph under two workspace members, a dep bump every fourth
// commit, and every fifth main commit followed by a one-commit branch (which
// bumps a dep of its own) merged by the next main commit.
func writeSyntheticTrace(t *testing.T, dir string, mainCommits int) {
	t.Helper()
	versions := make([]int, 12)
	lockOf := func() string {
		var b strings.Builder
		b.WriteString("version = 3\n")
		pkg := func(name, version, source string, deps ...string) {
			fmt.Fprintf(&b, "\n[[package]]\nname = %q\nversion = %q\n", name, version)
			if source != "" {
				fmt.Fprintf(&b, "source = %q\n", source)
			}
			if len(deps) > 0 {
				fmt.Fprintf(&b, "dependencies = [\n")
				for _, d := range deps {
					fmt.Fprintf(&b, " %q,\n", d)
				}
				b.WriteString("]\n")
			}
		}
		pkg("app", "0.1.0", "", "app-core", "r-8")
		pkg("app-core", "0.1.0", "", "r-5", "r-11")
		for i := range versions {
			var deps []string
			if i >= 1 {
				deps = append(deps, fmt.Sprintf("r-%d", i-1))
			}
			if i >= 3 {
				deps = append(deps, fmt.Sprintf("r-%d", i-3))
			}
			pkg(fmt.Sprintf("r-%d", i), fmt.Sprintf("1.0.%d", versions[i]), "registry+https://github.com/rust-lang/crates.io-index", deps...)
		}
		content := b.String()
		sum := sha1.Sum([]byte(content))
		sha := hex.EncodeToString(sum[:])
		writeFile(t, filepath.Join(dir, "locks", sha+".lock"), content)
		return sha
	}
	var lines []string
	add := func(c Commit) {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	tm := int64(1700000000)
	prev, branchTip := "", ""
	for i := range mainCommits {
		if i > 0 && i%4 == 0 {
			versions[i%12]++
		}
		sha := fmt.Sprintf("m%d", i)
		parents := []string{}
		if prev != "" {
			parents = append(parents, prev)
		}
		if branchTip != "" {
			parents = append(parents, branchTip)
			branchTip = ""
		}
		tm += 3600
		add(Commit{Commit: sha, Parents: parents, Time: tm, FirstParent: true, Lock: lockOf(),
			Members: map[string]string{"app": fmt.Sprintf("app-%d", i), "app-core": fmt.Sprintf("core-%d", i/3)}})
		prev = sha
		if i%5 == 4 {
			saved := versions[(i+7)%12]
			versions[(i+7)%12] += 100
			tm += 600
			branchTip = fmt.Sprintf("b%d", i)
			add(Commit{Commit: branchTip, Parents: []string{sha}, Time: tm, Lock: lockOf(),
				Members: map[string]string{"app": fmt.Sprintf("app-b%d", i), "app-core": fmt.Sprintf("core-%d", i/3)}})
			versions[(i+7)%12] = saved
		}
	}
	writeFile(t, filepath.Join(dir, "commits.jsonl"), strings.Join(lines, "\n")+"\n")
}

func TestRunSynthetic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	writeSyntheticTrace(t, dir, 40)
	tr, err := LoadTrace(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(7)
	res, err := Run(tr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Project != "synthetic" || res.Commits != 48 || res.Branches != 8 || res.Builds != 48*len(cfg.Jobs) {
		t.Fatalf("project %s, %d commits, %d branches, %d builds", res.Project, res.Commits, res.Branches, res.Builds)
	}
	for _, name := range []string{PolicyNone, PolicyKacheFallback, PolicyKacheService, PolicyLockfileAll, PolicyPlanner, PolicyOracle} {
		pr, ok := res.Policies[name]
		if !ok {
			t.Fatalf("no results for %s", name)
		}
		if pr.Overall.Builds != res.Builds || pr.FirstBuild.Builds != 8*len(cfg.Jobs) {
			t.Errorf("%s: %d builds, %d first builds", name, pr.Overall.Builds, pr.FirstBuild.Builds)
		}
	}
	for _, scope := range []struct {
		name string
		s    func(PolicyResult) Summary
	}{{"overall", func(p PolicyResult) Summary { return p.Overall }}, {"first_build", func(p PolicyResult) Summary { return p.FirstBuild }}} {
		o := scope.s(res.Policies[PolicyOracle])
		if o.NeededAvailable == 0 || o.Recall != 1 || o.BytePrecision != 1 || o.MissedBytes != 0 || o.WasteBytes != (Waste{}) {
			t.Errorf("oracle %s: %+v, want recall and byte precision 1", scope.name, o)
		}
		n := scope.s(res.Policies[PolicyNone])
		if n.Recall != 0 || n.Requests != 0 || n.BytesFetched != 0 || n.OnTime != 0 || n.CompileMsSaved != 0 {
			t.Errorf("none %s: %+v, want nothing fetched", scope.name, n)
		}
	}
	for name, pr := range res.Policies {
		if s := pr.Overall; s.Recall > 1 || s.BytePrecision > 1 || s.OnTime > 1 {
			t.Errorf("%s: ratio above 1: %+v", name, s)
		}
	}

	png := filepath.Join(t.TempDir(), "chart.png")
	if err := WriteChart(png, res); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, png)
	var table bytes.Buffer
	if err := WriteTable(&table, res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "kache_fallback") {
		t.Errorf("table:\n%s", table.String())
	}
}

func TestRunDeterministic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	writeSyntheticTrace(t, dir, 25)
	run := func(seed uint64) []byte {
		tr, err := LoadTrace(dir)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(tr, DefaultConfig(seed))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "r.json")
		if err := WriteJSON(out, res); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := run(3), run(3)
	if !bytes.Equal(a, b) {
		t.Error("two runs with the same seed wrote different results")
	}
	if bytes.Equal(a, run(4)) {
		t.Error("another seed wrote the same results")
	}
	var decoded struct {
		Project  string `json:"project"`
		Policies map[string]map[string]map[string]any
	}
	if err := json.Unmarshal(a, &decoded); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"none", "kache_fallback", "kache_service", "lockfile_all", "planner", "oracle"} {
		for _, scope := range []string{"first_build", "overall"} {
			for _, field := range []string{"builds", "recall", "byte_precision", "bytes_fetched", "requests", "on_time", "compile_ms_saved"} {
				if _, ok := decoded.Policies[p][scope][field]; !ok {
					t.Errorf("results file lacks policies.%s.%s.%s", p, scope, field)
				}
			}
		}
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != chartW || b.Dy() != chartH {
		t.Errorf("chart is %v", b)
	}
}
