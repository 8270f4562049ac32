//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// recordingCentral answers every plan request with one plan of the seeded
// entries, in the order kache would dispatch them, and records the intents
// it got: what reached central is the point of the job context.
type recordingCentral struct {
	srv     *httptest.Server
	entries []seededEntry

	mu      sync.Mutex
	intents []wire.BuildIntent
}

func startRecordingCentral(t *testing.T, entries []seededEntry) *recordingCentral {
	t.Helper()
	c := &recordingCentral{entries: entries}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *recordingCentral) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/prefetch-plan") {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	var in wire.BuildIntent
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.intents = append(c.intents, in)
	n := len(c.intents)
	c.mu.Unlock()
	plan := wire.PrefetchPlan{PlanID: fmt.Sprintf("plan-central-%d", n), Planner: "central", Disposition: wire.Execute}
	for i, e := range c.entries {
		d := uint32(i)
		plan.Candidates = append(plan.Candidates, wire.PrefetchCandidate{CacheKey: e.key, CrateName: e.crate,
			CompileTimeMs: uint64(1000 * (i + 1)), SizeBytes: uint64(e.size), Source: wire.SourceShard, DemandIndex: &d})
	}
	b, _ := plan.AppendJSON(nil)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (c *recordingCentral) received() []wire.BuildIntent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]wire.BuildIntent(nil), c.intents...)
}

// noJobEnv blanks what would tell a process the job: a sidecar container
// in a runner pod sees none of the job's CI variables.
var noJobEnv = []string{"GITHUB_ACTIONS=", "GITLAB_CI=", "BUILDKITE=", "CARGO_BUILD_TARGET=", "KACHE_NAMESPACE=",
	"KACHE_SIDECAR_REPOSITORY=", "KACHE_SIDECAR_TARGET=", "KACHE_SIDECAR_TOOLCHAIN="}

// TestJobContextPodLayout is the runner pod: the sidecar container starts
// with an empty environment, `kache-sidecar warm -- cargo build ...` runs in
// the job's, and kache's own plan request later in the job (package names
// of what it builds, no namespace, nothing about the job) is answered from
// warm's plan: the hint hits, central is not asked again, and the plan is
// in kache's demand order.
//
// It needs the lead's wiring of the job context: kache-sidecar's main.go
// passing the cargo command after "--" to warm (splitWarmArgs,
// warmCommand) and newPlanner giving the planner a runner.JobContext.
func TestJobContextPodLayout(t *testing.T) {
	o := startMinio(t)
	entries := seedSidecarBucket(t, o, "ci-main")
	central := startRecordingCentral(t, entries)

	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := append([]string{
		"KACHE_SIDECAR_PLANNER_LISTEN=" + addr,
		"KACHE_SIDECAR_STORE_DIR=" + filepath.Join(t.TempDir(), "store"),
		"KACHE_SIDECAR_S3_ENDPOINT=" + o.endpoint,
		"KACHE_SIDECAR_S3_BUCKET=" + testBucket,
		"KACHE_SIDECAR_CENTRAL_ENDPOINT=" + central.srv.URL,
		"AWS_ACCESS_KEY_ID=" + testenv.MinioUser,
		"AWS_SECRET_ACCESS_KEY=" + testenv.MinioSecret,
	}, noJobEnv...)
	sc := &sidecar{addr: addr}
	sc.p = testenv.Start(t, "kache-sidecar", env, sidecarBin(t), "serve")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool {
		resp, err := httpc.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatalf("sidecar not live:\n%s", sc.p.Tail(20))
	}

	// warm, in the job's environment, before cargo runs.
	ws := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ws, "Cargo.lock"), []byte(sidecarLock), 0o644))
	cmd := exec.Command(sidecarBin(t), "warm", "--workspace", ws, "--planner-listen", addr, "--store-dir", t.TempDir(),
		"--progress", "never", "--strict", "--timeout", "60s", "--toolchain", "1.82.0",
		"--", "cargo", "build", "--release", "--target", "aarch64-unknown-linux-gnu", "--features", "fast")
	cmd.Env = append(os.Environ(), noJobEnv...)
	cmd.Env = append(cmd.Env, "GITHUB_ACTIONS=true", "GITHUB_REPOSITORY=acme/app", "GITHUB_SHA=0123abcd",
		"GITHUB_REF=refs/heads/feature", "GITHUB_WORKFLOW=CI", "GITHUB_JOB=build")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("warm: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(`"via":"sidecar"`)) {
		t.Fatalf("warm did not go through the sidecar:\n%s", out)
	}
	got := central.received()
	if len(got) != 1 {
		t.Fatalf("central got %d plan requests from warm, want 1", len(got))
	}
	w := got[0]
	if w.Profile != "release" || w.Target != "aarch64-unknown-linux-gnu" || w.Toolchain != "1.82.0" || len(w.Features) != 1 ||
		w.Runner == nil || w.Runner.Repository != "acme/app" || w.Runner.Commit != "0123abcd" || len(w.CargoLockDeps) != 4 || w.Namespace != nil {
		t.Fatalf("warm's intent as central got it: %+v (runner %+v)", w, w.Runner)
	}

	// kache's request during the job: what it builds, in its order.
	kache := `{"crate_names":["serde","proc-macro2","app"],"namespace":null,"cargo_lock_deps":[]}`
	p, took := sc.plan(t, kache)
	if n := len(central.received()); n != 1 {
		t.Fatalf("kache's request reached central (%d requests): warm's hint missed", n)
	}
	if v := sc.metric(t, `kache_sidecar_plan_requests_total{source="hint"}`); v != "1" {
		t.Errorf("hint answers %q, want 1", v)
	}
	if p.Disposition != wire.Execute || len(p.Candidates) != len(entries) || !strings.HasPrefix(p.PlanID, "plan-central-1.") {
		t.Fatalf("kache's plan: %+v", p)
	}
	// tokio, which kache does not build, goes last; the rest keep warm's
	// order (one urgency window).
	if c := p.Candidates; c[len(c)-1].CrateName != "tokio" || c[len(c)-1].DemandIndex != nil || c[0].DemandIndex == nil {
		t.Errorf("plan not in kache's demand order: %+v", c)
	}
	t.Logf("kache's request answered from warm's plan in %s", took)

	// Another workspace's request on the same runner is not the job's.
	other := `{"crate_names":["serde","tokio-util"],"namespace":null,"cargo_lock_deps":[]}`
	sc.plan(t, other)
	got = central.received()
	if len(got) != 2 || got[1].Profile != "" || got[1].Toolchain != "" || got[1].Runner != nil && got[1].Runner.Repository != "" {
		t.Fatalf("a request of another workspace got the job's context: %+v", got[len(got)-1])
	}
}
