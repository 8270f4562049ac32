package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/api"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

func testConfig(t *testing.T, cmd string, args ...string) config.Config {
	t.Helper()
	args = append([]string{"--store-dir", t.TempDir(), "--planner-listen", "127.0.0.1:0"}, args...)
	cfg, err := config.Parse(cmd, args, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestWiring(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--central-endpoint", "http://127.0.0.1:1", "--s3-bucket", "kache", "--s3-endpoint", "http://127.0.0.1:1"},
	} {
		cfg := testConfig(t, "serve", args...)
		if err := fx.ValidateApp(opts(cfg, slog.New(slog.DiscardHandler))); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
}

const lockFile = `version = 3

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde", "proc-macro2"]

[[package]]
name = "proc-macro2"
version = "1.0.86"

[[package]]
name = "serde"
version = "1.0.210"
dependencies = ["proc-macro2"]
`

// A central that answers every plan with one candidate; it records intents.
func fakeCentral(t *testing.T, intents chan<- wire.BuildIntent) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in wire.BuildIntent
		json.NewDecoder(r.Body).Decode(&in)
		select {
		case intents <- in:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"plan_id":"plan-42","planner":"central","disposition":"execute","candidates":[`+
			`{"cache_key":"`+strings.Repeat("a", 64)+`","crate_name":"serde","source":"shard","demand_index":0}]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// The whole serve graph starts, answers a kache intent from central with the
// runner context added, and stops.
func TestServeProxiesCentral(t *testing.T) {
	intents := make(chan wire.BuildIntent, 4)
	cfg := testConfig(t, "serve", "--central-endpoint", fakeCentral(t, intents), "--repository", "acme/app", "--target", "x86_64-unknown-linux-gnu")
	var srv *api.Server
	app := fxtest.New(t, opts(cfg, slog.New(slog.DiscardHandler)), fx.Populate(&srv))
	app.RequireStart()
	defer app.RequireStop()
	body := `{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[]}`
	resp, err := http.Post("http://"+srv.Addr()+"/v2/prefetch-plan", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	plan, err := wire.DecodePlan(mustRead(t, resp.Body))
	if err != nil || plan.Disposition != wire.Execute || len(plan.Candidates) != 1 || !strings.HasPrefix(plan.PlanID, "plan-42.") {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	in := <-intents
	if in.Runner == nil || in.Runner.Repository != "acme/app" || in.Target != "x86_64-unknown-linux-gnu" {
		t.Fatalf("central got %+v runner %+v", in, in.Runner)
	}
}

func mustRead(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWorkspaceIntent(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Cargo.lock"), []byte(lockFile), 0o644)
	cases := []struct {
		name      string
		namespace string
		deps      int
	}{
		{"no namespace: no lock deps, as kache", "", 0},
		{"namespace: every lock dep", "ci-main", 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "warm", "--workspace", dir, "--namespace", tc.namespace)
			in, err := workspaceIntent(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(in.CrateNames, ","); got != "proc-macro2,serde,app" {
				t.Fatalf("crate order %s", got)
			}
			if len(in.CargoLockDeps) != tc.deps || (tc.namespace == "") != (in.Namespace == nil) {
				t.Fatalf("intent %+v", in)
			}
			b, _ := json.Marshal(in)
			if !bytes.Contains(b, []byte(`"cargo_lock_deps":[`)) {
				t.Fatalf("cargo_lock_deps must be an array: %s", b)
			}
		})
	}
}

// warm never fails a build unless --strict.
func TestWarmExitCodes(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Cargo.lock"), []byte(lockFile), 0o644)
	// Nothing listens on this planner address, so warm runs standalone with
	// no central and no bucket: no plan.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"nothing available", nil, 0},
		{"nothing available, strict", []string{"--strict"}, exitUnavailable},
		{"central down, strict", []string{"--strict", "--central-endpoint", "http://" + addr}, exitUnavailable},
		{"no Cargo.lock", []string{"--workspace", t.TempDir()}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"warm", "--workspace", dir, "--store-dir", t.TempDir(), "--planner-listen", addr, "--progress", "never"}, tc.args...)
			var stderr bytes.Buffer
			if got := run(args, io.Discard, &stderr); got != tc.want {
				t.Fatalf("exit %d, want %d; stderr:\n%s", got, tc.want, stderr.String())
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	cases := []struct {
		args []string
		want int
		out  string
	}{
		{nil, 2, "usage"},
		{[]string{"version"}, 0, "kache-sidecar "},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"serve", "--planner-listen", "0.0.0.0:7070"}, 2, "not loopback"},
		{[]string{"serve", "--plan-deadline", "2s"}, 2, "plan-deadline"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		if got := run(tc.args, &out, &out); got != tc.want || !strings.Contains(out.String(), tc.out) {
			t.Errorf("run(%v) = %d %q, want %d containing %q", tc.args, got, out.String(), tc.want, tc.out)
		}
	}
}

func TestParseRustcRelease(t *testing.T) {
	out := "rustc 1.82.0 (f6e511eec 2024-10-15)\nbinary: rustc\ncommit-hash: f6e511eec\nhost: x86_64-unknown-linux-gnu\nrelease: 1.82.0\nLLVM version: 19.1.1\n"
	if got := parseRustcRelease(out); got != "1.82.0" {
		t.Fatalf("release %q", got)
	}
	if got := parseRustcRelease("error: no toolchain"); got != "" {
		t.Fatalf("release of garbage %q", got)
	}
}

// warm through a running sidecar that has no bucket: the plan is answered,
// the sidecar says at once that it cannot prefetch, and warm does not hang.
func TestWarmThroughSidecarWithoutBucket(t *testing.T) {
	intents := make(chan wire.BuildIntent, 4)
	cfg := testConfig(t, "serve", "--central-endpoint", fakeCentral(t, intents))
	var srv *api.Server
	app := fxtest.New(t, opts(cfg, slog.New(slog.DiscardHandler)), fx.Populate(&srv))
	app.RequireStart()
	defer app.RequireStop()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Cargo.lock"), []byte(lockFile), 0o644)
	for _, tc := range []struct {
		strict bool
		want   int
	}{{false, 0}, {true, exitUnavailable}} {
		args := []string{"warm", "--workspace", dir, "--store-dir", t.TempDir(), "--planner-listen", srv.Addr(), "--progress", "never"}
		if tc.strict {
			args = append(args, "--strict")
		}
		var stderr bytes.Buffer
		start := time.Now()
		if got := run(args, io.Discard, &stderr); got != tc.want || !strings.Contains(stderr.String(), "cannot prefetch") {
			t.Fatalf("strict=%v: exit %d, want %d; stderr:\n%s", tc.strict, got, tc.want, stderr.String())
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("warm took %s", took)
		}
	}
	if in := <-intents; len(in.CrateNames) != 3 {
		t.Fatalf("central got %+v", in)
	}
}

// A store directory held by another process (a sidecar that missed the
// probe) is never prefetched into beside it: warm waits for that sidecar,
// then says clearly why it did nothing.
func TestWarmStandaloneRefusesALockedStore(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Cargo.lock"), []byte(lockFile), 0o644)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	storeDir := t.TempDir()
	held, err := store.Open(store.Config{Dir: storeDir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	args := []string{"warm", "--workspace", dir, "--store-dir", storeDir, "--planner-listen", addr, "--progress", "never",
		"--strict", "--s3-bucket", "b", "--s3-endpoint", "http://" + addr}
	var stderr bytes.Buffer
	if got := run(args, io.Discard, &stderr); got != exitUnavailable {
		t.Fatalf("exit %d, want %d; stderr:\n%s", got, exitUnavailable, stderr.String())
	}
	if !strings.Contains(stderr.String(), "belongs to a running kache-sidecar") {
		t.Fatalf("no clear reason in stderr:\n%s", stderr.String())
	}
}
