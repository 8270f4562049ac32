package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	jsonOut, pngOut := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.png")
	var stdout, stderr bytes.Buffer
	err := run([]string{"--trace", "../../internal/replay/testdata/tiny", "--json", jsonOut, "--png", pngOut, "--seed", "5", "--quiet"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Project  string                    `json:"project"`
		Policies map[string]map[string]any `json:"policies"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Project != "tiny" || len(res.Policies) != 8 { // oracle_sidecar without a lead
		t.Errorf("project %q with %d policies", res.Project, len(res.Policies))
	}
	if _, err := os.Stat(pngOut); err != nil {
		t.Error(err)
	}
	if !strings.Contains(stdout.String(), "oracle") {
		t.Errorf("table:\n%s", stdout.String())
	}
}

func TestRunContextFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--context", "none", "--namespace", ""},
		{"--context", "warm", "--commits", "3", "--no-family-split"},
		{"--context", "warm", "--warm-lead", "20s"},
	} {
		out := filepath.Join(dir, "r.json")
		var stdout, stderr bytes.Buffer
		err := run(append([]string{"--trace", "../../internal/replay/testdata/tiny", "--json", out, "--quiet"}, args...), &stdout, &stderr)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Model struct {
				Context   string `json:"context"`
				Namespace string `json:"namespace"`
			} `json:"model"`
		}
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatal(err)
		}
		if res.Model.Context != args[1] || args[2] == "--namespace" && res.Model.Namespace != "" {
			t.Errorf("%v: model %+v", args, res.Model)
		}
		if !strings.Contains(stdout.String(), "context "+args[1]) {
			t.Errorf("table header:\n%s", stdout.String())
		}
	}
}

func TestRunRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no flags", nil},
		{"no json", []string{"--trace", "x"}},
		{"missing trace", []string{"--trace", "does-not-exist", "--json", "x.json"}},
		{"unknown flag", []string{"--trace", "../../internal/replay/testdata/tiny", "--json", "x.json", "--experimental"}},
		{"unknown context", []string{"--trace", "../../internal/replay/testdata/tiny", "--json", "x.json", "--context", "full"}},
		{"warm lead without warm", []string{"--trace", "../../internal/replay/testdata/tiny", "--json", "x.json", "--context", "none", "--warm-lead", "20s"}},
		{"negative look-ahead", []string{"--trace", "../../internal/replay/testdata/tiny", "--json", "x.json", "--lookahead", "-1"}},
		{"no split parts", []string{"--trace", "../../internal/replay/testdata/tiny", "--json", "x.json", "--split-parts", "0"}},
		{"from-git without repo", []string{"from-git", "--out", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := run(tt.args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
				t.Error("run succeeded")
			}
		})
	}
}

func TestExportBuilds(t *testing.T) {
	out := filepath.Join(t.TempDir(), "builds.jsonl")
	var stdout, stderr bytes.Buffer
	err := run([]string{"--trace", "../../internal/replay/testdata/tiny", "--export-builds", out, "--commits", "4", "--quiet"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 0 || len(lines)%4 != 0 {
		t.Fatalf("%d lines, want a multiple of the 4 default jobs", len(lines))
	}
	for i, l := range lines {
		var build struct {
			Seq    int    `json:"seq"`
			Commit string `json:"commit"`
			Intent struct {
				CrateNames []string `json:"crate_names"`
			} `json:"intent"`
			Units []struct {
				Key string `json:"key"`
			} `json:"units"`
		}
		if err := json.Unmarshal([]byte(l), &build); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if build.Seq != i || build.Commit == "" || len(build.Units) == 0 || len(build.Intent.CrateNames) == 0 || len(build.Units[0].Key) != 64 {
			t.Errorf("line %d: %s", i+1, l)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("an export printed a table:\n%s", stdout.String())
	}
}
