// Command kache-bench measures kache-service on this machine: ingest rate,
// plan latency and throughput over HTTP, the same plans' store lookups done
// directly in process (the floor the HTTP layer sits on), and the service's
// peak RSS. It starts the real binary as a child process on loopback and stops
// by itself.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

type options struct {
	keys, crates, intentCrates, batch, conns, ingestConns int
	duration                                              time.Duration
	serviceBin, jsonOut, pprofBind                        string
	planCacheMB                                           int
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 1_000_000, "cache keys to ingest")
	flag.IntVar(&o.crates, "crates", 20_000, "distinct crates")
	flag.IntVar(&o.intentCrates, "intent-crates", 500, "crates in the plan intent (with lock deps)")
	flag.IntVar(&o.batch, "manifest-entries", 1000, "entries per ingested manifest")
	flag.IntVar(&o.conns, "conns", 32, "concurrent plan connections")
	flag.IntVar(&o.ingestConns, "ingest-conns", 4, "concurrent ingest connections")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "plan load duration per phase")
	flag.StringVar(&o.serviceBin, "service-bin", "", "kache-service binary (built with go build when empty)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.IntVar(&o.planCacheMB, "plan-cache-mb", 8, "the service's --plan-cache-mb (0 measures every plan composed and encoded)")
	flag.StringVar(&o.pprofBind, "pprof-bind", "", "start the service with --pprof-bind (e.g. 127.0.0.1:6060) to profile it during the run")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "kache-bench:", err)
		os.Exit(1)
	}
}

// Results are the figures printed and written.
type Results struct {
	Keys              int     `json:"keys"`
	Crates            int     `json:"crates"`
	IntentCrates      int     `json:"intent_crates"`
	PlanCandidates    int     `json:"plan_candidates"`
	IngestEntriesPerS float64 `json:"ingest_entries_per_s"`
	PlanP50Ms         float64 `json:"plan_p50_ms"`
	PlanP99Ms         float64 `json:"plan_p99_ms"`
	PlanHTTPPerS      float64 `json:"plan_http_per_s"`
	StoreLookupsPerS  float64 `json:"store_lookups_per_s"`
	PlannerInProcPerS float64 `json:"planner_in_process_per_s"`
	HTTPToStoreRatio  float64 `json:"http_to_store_ratio"`
	PeakRSSMiB        float64 `json:"peak_rss_mib"`
	RSSAfterLoadMiB   float64 `json:"rss_after_load_mib"`
	DBSizeMiB         float64 `json:"db_size_mib"`
}

func run(o options) error {
	work, err := os.MkdirTemp("", "kache-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := o.serviceBin
	if bin == "" {
		bin = filepath.Join(work, "kache-service")
		fmt.Println("building kache-service ...")
		cmd := exec.Command("go", "build", "-o", bin, "./central/cmd/kache-service")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build kache-service: %w", err)
		}
	}
	db := filepath.Join(work, "planner.db")
	svc, err := startService(bin, db, o.pprofBind, o.planCacheMB)
	if err != nil {
		return err
	}
	defer svc.kill()
	res := Results{Keys: o.keys, Crates: o.crates, IntentCrates: o.intentCrates}
	client := &fasthttp.HostClient{Addr: svc.addr, MaxConns: max(o.conns, o.ingestConns), MaxResponseBodySize: 64 << 20,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}

	fmt.Printf("ingesting %d keys over %d crates in manifests of %d entries ...\n", o.keys, o.crates, o.batch)
	start := time.Now()
	if err := ingest(client, o); err != nil {
		return err
	}
	el := time.Since(start)
	res.IngestEntriesPerS = float64(o.keys) / el.Seconds()
	fmt.Printf("  %d entries in %s: %.0f entries/s\n", o.keys, el.Round(time.Millisecond), res.IngestEntriesPerS)

	intent := benchIntent(o)
	body, _ := json.Marshal(intent)
	plan, err := planOnce(client, body, true)
	if err != nil {
		return err
	}
	res.PlanCandidates = len(plan.Candidates)
	fmt.Printf("plan for %d crates: %s, %d candidates (%d shard, %d history)\n", o.intentCrates, plan.Disposition,
		len(plan.Candidates), plan.Stats.FromShards, plan.Stats.FromHistory)

	fmt.Printf("plan load: %d connections for %s ...\n", o.conns, o.duration)
	lat, n, el := load(o.conns, o.duration, func() error {
		_, err := planOnce(client, body, false)
		return err
	})
	if len(lat) == 0 {
		return errors.New("no plan succeeded")
	}
	res.PlanP50Ms, res.PlanP99Ms = pct(lat, 0.50), pct(lat, 0.99)
	res.PlanHTTPPerS = float64(n) / el.Seconds()
	fmt.Printf("  %d plans: %.0f/s, p50 %.2f ms, p99 %.2f ms\n", n, res.PlanHTTPPerS, res.PlanP50Ms, res.PlanP99Ms)
	res.RSSAfterLoadMiB = float64(svc.rss("VmRSS")) / (1 << 20)
	res.PeakRSSMiB = float64(svc.rss("VmHWM")) / (1 << 20)
	fmt.Printf("service RSS: peak %.1f MiB, now %.1f MiB\n", res.PeakRSSMiB, res.RSSAfterLoadMiB)
	svc.stop()
	res.DBSizeMiB = float64(dirSize(db)) / (1 << 20)

	// Baseline: the same plan's store reads, directly, with the same
	// concurrency, in this process on the same database.
	st, err := store.Open(db, store.Options{CacheMB: 16})
	if err != nil {
		return err
	}
	defer st.Close()
	norm := slices.Clone(intent.CrateNames)
	for i := range norm {
		norm[i] = cargolock.CrateName(norm[i])
	}
	fmt.Printf("baseline: the plan's store lookups in process, %d goroutines for %s ...\n", o.conns, o.duration)
	_, n, el = load(o.conns, o.duration, func() error { return lookups(st, intent, norm) })
	res.StoreLookupsPerS = float64(n) / el.Seconds()
	p := planner.New(st, planner.Config{})
	_, n2, el2 := load(o.conns, o.duration, func() error {
		_, out, err := p.Plan(&intent)
		if out != planner.OutcomeExecute {
			return fmt.Errorf("outcome %s: %v", out, err)
		}
		return err
	})
	res.PlannerInProcPerS = float64(n2) / el2.Seconds()
	res.HTTPToStoreRatio = res.PlanHTTPPerS / res.StoreLookupsPerS
	fmt.Printf("  store lookups %.0f plans/s, planner in process %.0f plans/s\n", res.StoreLookupsPerS, res.PlannerInProcPerS)

	fmt.Println()
	fmt.Println("| figure | measured | goal |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| ingest | %.0f entries/s | >= 50,000 |\n", res.IngestEntriesPerS)
	fmt.Printf("| plan p50 / p99 (HTTP, %d conns, %d candidates) | %.2f / %.2f ms | p99 < 10 ms |\n", o.conns, res.PlanCandidates, res.PlanP50Ms, res.PlanP99Ms)
	fmt.Printf("| plan throughput HTTP / direct store lookups | %.0f / %.0f = %.2f | >= 0.5 |\n", res.PlanHTTPPerS, res.StoreLookupsPerS, res.HTTPToStoreRatio)
	fmt.Printf("| planner in process (no HTTP) | %.0f plans/s | - |\n", res.PlannerInProcPerS)
	fmt.Printf("| service peak RSS with %d keys | %.1f MiB | < 128 MiB |\n", o.keys, res.PeakRSSMiB)
	fmt.Printf("| database on disk | %.1f MiB | - |\n", res.DBSizeMiB)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func crateName(i int) string { return fmt.Sprintf("crate-%05d", i) }

// ingest posts o.keys entries: build b covers a window of o.batch crates, so
// each crate is built keys/crates times, each time with a new key, under
// namespace "bench" with the window's lock deps.
func ingest(c *fasthttp.HostClient, o options) error {
	builds := o.keys / o.batch
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, o.ingestConns)
	for range o.ingestConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b := int(next.Add(1) - 1)
				if b >= builds {
					return
				}
				if err := postManifest(c, o, b); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func postManifest(c *fasthttp.HostClient, o options, b int) error {
	ns := "bench"
	m := wire.BuildManifest{Version: 3, Created: time.UnixMilli(1_700_000_000_000 + int64(b)*60_000).UTC().Format(time.RFC3339Nano),
		ManifestKey: "x86_64-unknown-linux-gnu", Namespace: &ns, Target: "x86_64-unknown-linux-gnu", Profile: "debug"}
	for i := range o.batch {
		crate := (b*o.batch + i) % o.crates
		m.Entries = append(m.Entries, wire.ManifestEntry{
			CacheKey:      fmt.Sprintf("%032x%032x", b+1, crate+1),
			CrateName:     cargolock.CrateName(crateName(crate)),
			CompileTimeMs: uint64(100 + (crate*37)%20000),
			ArtifactSize:  uint64(10_000 + (crate*7919)%5_000_000),
		})
		m.CargoLockDeps = append(m.CargoLockDeps, wire.LockDep{Name: crateName(crate), Version: depVersion(b, o)})
	}
	body, _ := json.Marshal(m)
	return postJSON(c, "/v1/manifests", body, func(status int, reply []byte) error {
		if status != 200 {
			return fmt.Errorf("post manifest %d: %d %s", b, status, reply)
		}
		return nil
	})
}

// depVersion changes every few builds, as lock bumps do.
func depVersion(b int, o options) string {
	perRound := max(o.crates/o.batch, 1)
	return "1.0." + strconv.Itoa(b/perRound/5)
}

// benchIntent asks for the first intentCrates crates with the lock deps of
// the newest round, as a CI build of the latest main would.
func benchIntent(o options) wire.BuildIntent {
	ns := "bench"
	in := wire.BuildIntent{Namespace: &ns}
	last := o.keys/o.batch - 1
	for i := range o.intentCrates {
		in.CrateNames = append(in.CrateNames, crateName(i))
		in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: crateName(i), Version: depVersion(last, o)})
	}
	return in
}

// postJSON posts body and hands the reply to check before the response is
// released (fasthttp reuses it).
func postJSON(c *fasthttp.HostClient, path string, body []byte, check func(status int, reply []byte) error) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + path)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBody(body)
	if err := c.Do(req, resp); err != nil {
		return fmt.Errorf("post %s: %w", path, err)
	}
	return check(resp.StatusCode(), resp.Body())
}

func planOnce(c *fasthttp.HostClient, body []byte, decode bool) (wire.PrefetchPlan, error) {
	var plan wire.PrefetchPlan
	err := postJSON(c, "/v2/prefetch-plan", body, func(status int, reply []byte) error {
		if status != 200 {
			return fmt.Errorf("plan status %d", status)
		}
		// Decoding every reply would make the load generator the
		// bottleneck on two cores; the first is decoded and checked, the
		// rest only sized.
		if !decode {
			if len(reply) < 64 {
				return fmt.Errorf("short plan %q", reply)
			}
			return nil
		}
		var err error
		plan, err = wire.DecodePlan(reply)
		return err
	})
	return plan, err
}

// lookups does the store reads one plan of the intent does.
func lookups(st *store.Store, in wire.BuildIntent, crates []string) error {
	resolved := make(map[string]bool, len(crates))
	for _, d := range in.CargoLockDeps {
		vs, err := st.DepVariants(*in.Namespace, d.Key())
		if err != nil {
			return err
		}
		for _, v := range vs {
			resolved[v.CrateName] = true
		}
	}
	for _, c := range crates {
		if resolved[c] {
			continue
		}
		if _, err := st.Variants(c); err != nil {
			return err
		}
	}
	return nil
}

// load runs f from conns goroutines for d and returns per-call latencies.
func load(conns int, d time.Duration, f func() error) ([]time.Duration, int, time.Duration) {
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	start := time.Now()
	var failed atomic.Int64
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := f(); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "  call failed:", err)
					}
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	if f := failed.Load(); f > 0 {
		fmt.Fprintf(os.Stderr, "  %d calls failed\n", f)
	}
	return all, len(all), el
}

func pct(sorted []time.Duration, p float64) float64 {
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000
}

type service struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func startService(bin, db, pprofBind string, planCacheMB int) (*service, error) {
	args := []string{"--bind", "127.0.0.1:0", "--db-path", db, "--plan-cache-mb", strconv.Itoa(planCacheMB)}
	if pprofBind != "" {
		args = append(args, "--pprof-bind", pprofBind)
	}
	cmd := exec.Command(bin, args...)
	// The chart's 128Mi limit gives the service a 102 MiB soft limit (80%,
	// read from its cgroup); this machine has no such cgroup, so say it.
	cmd.Env = append(os.Environ(), "KACHE_LOG=info")
	if os.Getenv("GOMEMLIMIT") == "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT=102MiB")
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kache-service: %w", err)
	}
	s := &service{cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addrc <- line.Addr
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	select {
	case s.addr = <-addrc:
		return s, nil
	case <-s.done:
		return nil, errors.New("kache-service exited before listening")
	case <-time.After(30 * time.Second):
		s.kill()
		return nil, errors.New("kache-service did not start")
	}
}

// rss reads a /proc/<pid>/status field in bytes.
func (s *service) rss(field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			f := strings.Fields(string(rest))
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func (s *service) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.kill()
	}
}

func (s *service) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
