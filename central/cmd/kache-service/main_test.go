package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/kache-planner/kache-planner/central/internal/api"
	"github.com/kache-planner/kache-planner/central/internal/config"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// The test binary doubles as kache-service for the process tests.
func TestMain(m *testing.M) {
	if os.Getenv("KACHE_SERVICE_TEST_CHILD") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func testConfig(t *testing.T, args ...string) config.Config {
	t.Helper()
	cfg, err := config.Parse(args, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestWiring(t *testing.T) {
	cfg := testConfig(t, "--bind", "127.0.0.1:0")
	if err := fx.ValidateApp(opts(cfg, slog.New(slog.DiscardHandler))); err != nil {
		t.Fatal(err)
	}
}

// Start and stop the whole graph: the server answers, and the ephemeral
// database directory is gone after stop.
func TestStartStop(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	cfg := testConfig(t, "--bind", "127.0.0.1:0")
	var addr string
	app := fxtest.New(t, opts(cfg, slog.New(slog.DiscardHandler)), fx.Invoke(func(lc fx.Lifecycle, s *api.Server) {
		lc.Append(fx.StartHook(func() { addr = s.Addr() }))
	}))
	app.RequireStart()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	entries, _ := os.ReadDir(tmp)
	if len(entries) != 1 {
		t.Fatalf("want one ephemeral db dir, have %d", len(entries))
	}
	app.RequireStop()
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("ephemeral db dir left behind: %v", entries)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--version"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if out.String() != "kache-service "+buildinfo.DefaultVersion+" (kache_compat 0.15.0-rc.2)\n" {
		t.Fatalf("version output %q", out.String())
	}
}

func TestBadConfigExits2(t *testing.T) {
	var errOut bytes.Buffer
	if code := run([]string{"--bind", "nonsense"}, io.Discard, &errOut); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(errOut.String(), "--bind") {
		t.Fatalf("stderr %q", errOut.String())
	}
}

// child is a kache-service process started from the test binary.
type child struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "KACHE_SERVICE_TEST_CHILD=1", "KACHE_LOG=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addrc <- line.Addr
			}
		}
	}()
	select {
	case addr := <-addrc:
		return &child{cmd: cmd, addr: addr}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child did not start listening")
		return nil
	}
}

func (c *child) post(t *testing.T, path string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+c.addr+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// An acknowledged ingest survives kill -9: every manifest the service
// answered 200 to is in the database when it is reopened.
func TestAcknowledgedIngestSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	db := filepath.Join(t.TempDir(), "planner.db")
	c := startChild(t, "--bind", "127.0.0.1:0", "--db-path", db)
	var acked []string
	for m := range 40 {
		var entries []wire.ManifestEntry
		for i := range 50 {
			entries = append(entries, wire.ManifestEntry{CacheKey: fmt.Sprintf("%032x%032x", m+1, i+1), CrateName: fmt.Sprintf("crate_%d", i), CompileTimeMs: 10, ArtifactSize: 100})
		}
		body, _ := json.Marshal(wire.BuildManifest{Version: 3, Entries: entries})
		status, reply := c.post(t, "/v1/manifests", body)
		if status != 200 {
			t.Fatalf("ingest %d: %s", status, reply)
		}
		for _, e := range entries {
			acked = append(acked, e.CacheKey)
		}
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()

	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer st.Close()
	for _, k := range acked {
		if _, err := st.Artifact(k); err != nil {
			t.Fatalf("acknowledged key %s lost: %v", k, err)
		}
	}
	if st.ArtifactCount() != uint64(len(acked)) {
		t.Fatalf("count %d, want %d", st.ArtifactCount(), len(acked))
	}
}

// SIGTERM shuts down gracefully with exit 0, and the database reopens with
// what was stored; a seed file is imported once across restarts.
func TestSigtermAndSeedImportedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "planner.db")
	seed := filepath.Join(dir, "seed.json")
	k := strings.Repeat("ab", 32)
	if err := os.WriteFile(seed, []byte(`{"history":{"serde":[{"cache_key":"`+k+`","crate_name":"serde","compile_time_ms":77,"size_bytes":88},{"cache_key":"serde-key","crate_name":"serde"}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		c := startChild(t, "--bind", "127.0.0.1:0", "--db-path", db, "--seed-state-file", seed)
		status, body := c.post(t, "/v2/prefetch-plan", []byte(`{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[]}`))
		if status != 200 {
			t.Fatalf("round %d: %d %s", round, status, body)
		}
		p, err := wire.DecodePlan(body)
		if err != nil || p.Disposition != wire.Execute || len(p.Candidates) != 1 || p.Candidates[0].CompileTimeMs != 77 || p.Candidates[0].SizeBytes != 88 {
			t.Fatalf("round %d: plan %+v %v", round, p, err)
		}
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: exit after SIGTERM: %v", round, err)
			}
		case <-ctx.Done():
			c.cmd.Process.Kill()
			t.Fatal("no exit after SIGTERM")
		}
		cancel()
	}
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.Artifact(k)
	if err != nil || v.Seen != 1 {
		t.Fatalf("seed imported more than once: %+v %v", v, err)
	}
}
