//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// replica is one kache-service process with leader election on.
type replica struct {
	p    *testenv.Proc
	addr string
}

const (
	leaseDuration = 6 * time.Second
	renewDeadline = 4 * time.Second
	retryPeriod   = 500 * time.Millisecond
)

// startReplica starts a replica whose data comes from extra: a seed file or
// a bucket.
func startReplica(t testing.TB, c *cluster, name string, env []string, extra ...string) *replica {
	t.Helper()
	port := testenv.FreePort(t)
	args := append([]string{
		"--bind", fmt.Sprintf("127.0.0.1:%d", port),
		"--db-path", filepath.Join(t.TempDir(), "planner.db"),
		"--ha-enabled", "--ha-namespace", "default", "--ha-lease-name", "kache-service-e2e",
		"--ha-lease-duration", leaseDuration.String(), "--ha-renew-deadline", renewDeadline.String(), "--ha-retry-period", retryPeriod.String(),
	}, extra...)
	p := testenv.Start(t, name, append([]string{"KUBECONFIG=" + c.kubeconfig, "HOSTNAME=" + name, "KACHE_LOG=info"}, env...), serviceBin(t), args...)
	r := &replica{p: p, addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !waitUntil(ctx, 100*time.Millisecond, func() bool { return r.status("/healthz") == 200 }) {
		t.Fatalf("%s not live", name)
	}
	return r
}

var httpc = &http.Client{Timeout: 2 * time.Second}

func (r *replica) status(path string) int {
	resp, err := httpc.Get(r.addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

const intent = `{"crate_names":["crate_0","crate_7"],"namespace":null,"cargo_lock_deps":[]}`

// plan returns the status and, on 200, the decoded plan; 0 when nothing
// answered.
func (r *replica) plan() (int, wire.PrefetchPlan) {
	resp, err := httpc.Post(r.addr+"/v2/prefetch-plan", "application/json", strings.NewReader(intent))
	if err != nil {
		return 0, wire.PrefetchPlan{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, wire.PrefetchPlan{}
	}
	p, err := wire.DecodePlan(b)
	if err != nil {
		return -1, wire.PrefetchPlan{}
	}
	return 200, p
}

func candidateKeys(p wire.PrefetchPlan) []string {
	var ks []string
	for _, c := range p.Candidates {
		ks = append(ks, c.CacheKey)
	}
	return ks
}

func writeSeed(t testing.TB) string {
	t.Helper()
	seed := wire.SeedState{History: map[string][]wire.PrefetchCandidate{
		"crate_0": {{CacheKey: strings.Repeat("a1", 32), CrateName: "crate_0", CompileTimeMs: 5000, SizeBytes: 1 << 20}},
		"crate_7": {{CacheKey: strings.Repeat("b2", 32), CrateName: "crate_7", CompileTimeMs: 9000, SizeBytes: 2 << 20}},
	}}
	b, _ := json.Marshal(seed)
	p := filepath.Join(t.TempDir(), "seed.json")
	must(t, os.WriteFile(p, b, 0o644))
	return p
}

// TestLeaderFailover starts a real API server, a MinIO bucket holding kache
// build manifests and two replicas, each with its own empty disk, electing a
// leader through a Lease. Both rebuild from the bucket. Exactly one is ready;
// the follower is live but answers 503. Killing the leader (SIGKILL: no Lease
// release) makes the follower ready within the Lease duration plus 5 s,
// answering the same candidates, and every request answered meanwhile is a
// plan or a 503.
func TestLeaderFailover(t *testing.T) {
	c := startCluster(t)
	o := startMinio(t)
	for b := range 30 {
		o.putManifest(t, fmt.Sprintf("build-%03d", b), buildManifest(b, 10))
	}
	rs := []*replica{startReplica(t, c, "replica-a", o.env(), o.args()...), startReplica(t, c, "replica-b", o.env(), o.args()...)}

	ctx, cancel := context.WithTimeout(context.Background(), 3*leaseDuration)
	defer cancel()
	leaderIdx := -1
	if !waitUntil(ctx, 100*time.Millisecond, func() bool {
		a, b := rs[0].status("/readyz") == 200, rs[1].status("/readyz") == 200
		switch {
		case a && !b:
			leaderIdx = 0
		case b && !a:
			leaderIdx = 1
		}
		return leaderIdx >= 0
	}) {
		t.Fatal("no single leader emerged")
	}
	leader, follower := rs[leaderIdx], rs[1-leaderIdx]
	if follower.status("/healthz") != 200 || follower.status("/readyz") != 503 {
		t.Fatal("follower must be live and not ready")
	}
	if st, _ := follower.plan(); st != 503 {
		t.Fatalf("follower answered a plan with %d", st)
	}
	st, before := leader.plan()
	// History takes the keys of each build family's newest build: one
	// key per crate here (every manifest is one family).
	if st != 200 || before.Disposition != wire.Execute || len(before.Candidates) != 2 {
		t.Fatalf("leader plan %d %+v", st, before)
	}

	// Probe both replicas continuously; tally every answer.
	var answers sync.Map // status -> *atomic.Int64
	probeCtx, stopProbe := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for probeCtx.Err() == nil {
				st, _ := r.plan()
				if st != 0 {
					v, _ := answers.LoadOrStore(st, new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}

	killed := time.Now()
	leader.p.Kill()
	ctx2, cancel2 := context.WithTimeout(context.Background(), leaseDuration+5*time.Second)
	defer cancel2()
	ok := waitUntil(ctx2, 50*time.Millisecond, func() bool { return follower.status("/readyz") == 200 })
	failover := time.Since(killed)
	stopProbe()
	wg.Wait()
	if !ok {
		t.Fatalf("follower not ready %s after the leader died (lease %s)", failover.Round(time.Millisecond), leaseDuration)
	}
	t.Logf("failover: follower ready %s after SIGKILL of the leader (lease duration %s, goal <= %s)",
		failover.Round(time.Millisecond), leaseDuration, leaseDuration+5*time.Second)

	st, after := follower.plan()
	if st != 200 || !slices.Equal(candidateKeys(after), candidateKeys(before)) {
		t.Fatalf("new leader plan %d %v, want %v", st, candidateKeys(after), candidateKeys(before))
	}
	var tally bytes.Buffer
	answers.Range(func(k, v any) bool {
		fmt.Fprintf(&tally, "%d:%d ", k, v.(*atomic.Int64).Load())
		if s := k.(int); s != 200 && s != 503 {
			t.Errorf("a request was answered with %d", s)
		}
		return true
	})
	t.Logf("answers during failover: %s", tally.String())
}

// TestGracefulHandover: a leader stopped with SIGTERM releases the Lease, so
// the follower takes over well before the Lease would expire.
func TestGracefulHandover(t *testing.T) {
	c := startCluster(t)
	seed := writeSeed(t)
	rs := []*replica{startReplica(t, c, "replica-a", nil, "--seed-state-file", seed), startReplica(t, c, "replica-b", nil, "--seed-state-file", seed)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*leaseDuration)
	defer cancel()
	leaderIdx := -1
	waitUntil(ctx, 100*time.Millisecond, func() bool {
		for i, r := range rs {
			if r.status("/readyz") == 200 {
				leaderIdx = i
				return true
			}
		}
		return false
	})
	if leaderIdx < 0 {
		t.Fatal("no leader")
	}
	start := time.Now()
	must(t, rs[leaderIdx].p.Signal(os.Interrupt))
	ctx2, cancel2 := context.WithTimeout(context.Background(), leaseDuration)
	defer cancel2()
	if !waitUntil(ctx2, 50*time.Millisecond, func() bool { return rs[1-leaderIdx].status("/readyz") == 200 }) {
		t.Fatal("follower did not take over within the lease duration after a graceful stop")
	}
	handover := time.Since(start)
	t.Logf("graceful handover: %s (lease %s)", handover.Round(time.Millisecond), leaseDuration)
	select {
	case <-rs[leaderIdx].p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("old leader did not exit after SIGINT")
	}
	if code := rs[leaderIdx].p.ExitCode(); code != 0 {
		t.Fatalf("old leader exit code %d", code)
	}
}
