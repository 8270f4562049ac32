//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// limitsToken is the bearer token of the surfaces under abuse.
const limitsToken = "limits-token"

// surfaceUnderAbuse is one binary's planner surface, as TestBoundedMemory
// attacks it.
type surfaceUnderAbuse struct {
	name string
	// start runs the binary and returns it with its address.
	start func(t *testing.T) (*testenv.Proc, string)
	// bodyPath takes bodies of stallLength, which is within its limit.
	bodyPath    string
	stallLength int
	// bodyTimeout is when stalled bodies are dropped.
	bodyTimeout time.Duration
	// shutdownTimeout is the binary's graceful-stop budget.
	shutdownTimeout time.Duration
}

// TestBoundedMemory abuses each planner surface the way issue 9 measured
// it (48 clients without a token sending 15 MB bodies, 200 clients that
// declare a large body and stall) and checks that memory stays bounded by
// configuration: peak RSS under 128 MiB, /healthz and plans answered
// meanwhile, a body over its limit refused from its headers, stalled
// clients dropped at their deadline, and SIGTERM stopping within the
// shutdown timeout. It runs the binaries built without the race detector,
// whose memory is what is measured.
func TestBoundedMemory(t *testing.T) {
	surfaces := []surfaceUnderAbuse{
		{
			name: "kache-service",
			start: func(t *testing.T) (*testenv.Proc, string) {
				addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
				p := testenv.Start(t, "kache-service", []string{"KACHE_PLANNER_TOKEN=" + limitsToken, "KACHE_LOG=info"},
					plainBin(t, serviceBins), "--bind", addr, "--db-path", filepath.Join(t.TempDir(), "db"),
					"--header-timeout", "2s", "--read-timeout", "3s")
				return p, addr
			},
			bodyPath:        "/v1/manifests", // 16 MiB limit
			stallLength:     15 << 20,
			bodyTimeout:     3 * time.Second,
			shutdownTimeout: 20 * time.Second, // --shutdown-timeout's default
		},
		{
			name: "kache-sidecar",
			start: func(t *testing.T) (*testenv.Proc, string) {
				addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
				p := testenv.Start(t, "kache-sidecar", []string{
					"KACHE_SIDECAR_PLANNER_LISTEN=" + addr,
					"KACHE_SIDECAR_STORE_DIR=" + filepath.Join(t.TempDir(), "store"),
					"KACHE_SIDECAR_TOKEN=" + limitsToken,
				}, plainBin(t, sidecarBins), "serve")
				return p, addr
			},
			bodyPath:        "/v2/prefetch-plan", // 2 MiB limit
			stallLength:     2_000_000,
			bodyTimeout:     5 * time.Second, // api.Config's default
			shutdownTimeout: 10 * time.Second,
		},
	}
	for _, s := range surfaces {
		t.Run(s.name, func(t *testing.T) { abuse(t, s) })
	}
}

func plainBin(t *testing.T, b binaries) string {
	t.Helper()
	bin, err := b.plain()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func abuse(t *testing.T, s surfaceUnderAbuse) {
	p, addr := s.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return get(addr, "/healthz") == 200 }) {
		t.Fatalf("%s not live", s.name)
	}
	before := procStatus(t, p.Pid(), "VmRSS")

	// Refused from the headers alone: nothing but headers is sent.
	early := []struct {
		name, path, auth string
		length, want     int
	}{
		{"plan over its limit", "/v2/prefetch-plan", limitsToken, 15 << 20, 413},
		{"no token", s.bodyPath, "", s.stallLength, 401},
	}
	for _, e := range early {
		start := time.Now()
		status, err := headersOnly(addr, e.path, e.auth, e.length, 2*time.Second)
		if err != nil || status != e.want || time.Since(start) > time.Second {
			t.Errorf("%s: status %d (%v) after %s, want %d at once", e.name, status, err, time.Since(start), e.want)
		}
	}

	// 48 clients without a token, each sending 15 MB bodies over and over.
	abuseCtx, stopAbuse := context.WithCancel(context.Background())
	defer stopAbuse()
	var senders sync.WaitGroup
	var rounds, accepted atomic.Int64
	for range 48 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for abuseCtx.Err() == nil {
				if status := sendUnauthorized(addr, s.bodyPath, 15<<20); status >= 200 && status < 300 {
					accepted.Add(1)
				}
				rounds.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}

	// 200 clients with the token declaring a body within the limit, then
	// stalling: half after the headers, half after 64 KiB of the body
	// (those reach the handler and hold the in-flight budget).
	type stalled struct {
		status int
		took   time.Duration
	}
	results := make(chan stalled, 200)
	for i := range 200 {
		go func() {
			start := time.Now()
			status := stall(addr, s.bodyPath, s.stallLength, i%2 == 1, s.bodyTimeout+5*time.Second)
			results <- stalled{status, time.Since(start)}
		}()
	}

	// Meanwhile kache's requests are answered, each on a new connection.
	var peak int64
	var probes, failures int
	var slowest time.Duration
	probeUntil := time.Now().Add(s.bodyTimeout + 2*time.Second)
	for time.Now().Before(probeUntil) {
		start := time.Now()
		if st := get(addr, "/healthz"); st != 200 {
			failures++
			t.Logf("healthz during abuse: %d", st)
		}
		if st := planRequest(addr); st != 200 {
			failures++
			t.Logf("plan during abuse: %d", st)
		}
		slowest = max(slowest, time.Since(start))
		probes++
		peak = max(peak, procStatus(t, p.Pid(), "VmRSS"))
		time.Sleep(100 * time.Millisecond)
	}
	statuses := map[int]int{}
	for range 200 {
		r := <-results
		statuses[r.status]++
		if r.took > s.bodyTimeout+3*time.Second {
			t.Errorf("a stalled client was kept %s (body timeout %s)", r.took, s.bodyTimeout)
		}
	}
	stopAbuse()
	senders.Wait()
	hwm := procStatus(t, p.Pid(), "VmHWM")
	t.Logf("%s: RSS %.1f MiB before, peak sampled %.1f MiB, VmHWM %.1f MiB; %d unauthorized 15 MB rounds; stalled clients answered %v; %d probe pairs, slowest %s",
		s.name, mib(before), mib(peak), mib(hwm), rounds.Load(), statuses, probes, slowest)
	if hwm >= 128<<20 {
		t.Errorf("peak RSS %.1f MiB, want < 128 MiB", mib(hwm))
	}
	if failures > 0 {
		t.Errorf("%d of %d health and plan probes failed during the abuse", failures, 2*probes)
	}
	if accepted.Load() > 0 || statuses[200] > 0 {
		t.Errorf("bodies accepted: %d without a token, %d stalled", accepted.Load(), statuses[200])
	}
	if statuses[408] == 0 || statuses[503] == 0 {
		t.Errorf("stalled clients: want some dropped (408) and some over the budget (503), got %v", statuses)
	}
	metrics := getBody(t, addr, "/metrics")
	for _, reason := range []string{"too_large", "unauthorized", "overloaded", "timed_out"} {
		if !refusedCounted(metrics, reason) {
			t.Errorf("no %s refusal counted", reason)
		}
	}

	// SIGTERM while abused: stalled clients, budget holders and senders.
	abuseCtx, stopAbuse = context.WithCancel(context.Background())
	defer stopAbuse()
	for range 8 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for abuseCtx.Err() == nil {
				sendUnauthorized(addr, s.bodyPath, 15<<20)
			}
		}()
	}
	var stallers sync.WaitGroup
	for i := range 60 {
		stallers.Add(1)
		go func() {
			defer stallers.Done()
			stall(addr, s.bodyPath, s.stallLength, i%2 == 1, s.shutdownTimeout+5*time.Second)
		}()
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	must(t, p.Signal(syscall.SIGTERM))
	select {
	case <-p.Done():
	case <-time.After(s.shutdownTimeout + 10*time.Second):
		t.Fatalf("%s still running %s after SIGTERM", s.name, time.Since(start))
	}
	took := time.Since(start)
	stopAbuse()
	senders.Wait()
	stallers.Wait()
	t.Logf("%s: SIGTERM under abuse: exited %d after %s (shutdown timeout %s)", s.name, p.ExitCode(), took, s.shutdownTimeout)
	if p.ExitCode() != 0 || took >= s.shutdownTimeout {
		t.Errorf("SIGTERM: exit %d after %s, want 0 within %s", p.ExitCode(), took, s.shutdownTimeout)
	}
}

// headersOnly sends a POST's headers declaring length and no body, and
// returns the status of the answer.
func headersOnly(addr, path, token string, length int, wait time.Duration) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := io.WriteString(c, requestHead(path, token, length)); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// sendUnauthorized sends length bytes of body without a token as fast as
// the server takes them, and returns the answer's status (0 when the
// server closed the connection without one that could be read).
func sendUnauthorized(addr, path string, length int) int {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, requestHead(path, "", length)); err != nil {
		return 0
	}
	chunk := make([]byte, 64<<10)
	for sent := 0; sent < length; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			break
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// stall sends a request's headers declaring length (and 64 KiB of its body
// with someBody), then nothing more, and returns the status the server
// answers with (0 when it closes without one).
func stall(addr, path string, length int, someBody bool, wait time.Duration) int {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	head := requestHead(path, limitsToken, length)
	if someBody {
		head += strings.Repeat(" ", 64<<10)
	}
	if _, err := io.WriteString(c, head); err != nil {
		return 0
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func requestHead(path, token string, length int) string {
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: abuse\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, auth, length)
}

// probe is a client like kache's: a new connection per request. Its
// timeout is generous: the abuse shares this machine's cores with the
// server, and what is checked is that requests are answered, not how fast
// (the slowest is logged).
var probe = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(addr, path string) int {
	resp, err := probe.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getBody(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := probe.Get("http://" + addr + path)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return string(b)
}

func planRequest(addr string) int {
	req, err := http.NewRequest("POST", "http://"+addr+"/v2/prefetch-plan",
		strings.NewReader(`{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[]}`))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+limitsToken)
	resp, err := probe.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// refusedCounted reports whether <binary>_http_requests_refused_total
// counted reason at least once.
func refusedCounted(metrics, reason string) bool {
	for _, line := range strings.Split(metrics, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(name, "_http_requests_refused_total{") || !strings.Contains(name, `reason="`+reason+`"`) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil && v > 0 {
			return true
		}
	}
	return false
}

// procStatus reads a memory figure (VmRSS, VmHWM) of a process, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %s: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
