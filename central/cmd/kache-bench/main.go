// Command kache-bench measures kache-service on this machine, in one run over
// one database (1,000,000 keys by default):
//
//  1. ingest: the keys posted as build manifests over HTTP (entries/s);
//  2. open loop at a fleet's load: distinct 500-crate intents offered at a
//     fixed rate while manifests are ingested at a fixed rate, latency
//     measured from each request's scheduled time (no coordinated omission);
//  3. closed loop, plan cache on: 32 connections repeating one intent, three
//     runs;
//  4. closed loop, plan cache off: the service restarted with
//     --plan-cache-mb 0, alternating with the same planner in this process on
//     a copy of the database, so both see the same machine at nearly the same
//     time; the figure is their ratio.
//
// It prints every figure with its goal and whether it is met, and the
// service's peak RSS. The real binary runs as a child process on loopback and
// everything stops by itself.
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
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
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
	"github.com/kache-planner/kache-planner/shared/wire"
)

type options struct {
	keys, crates, intentCrates, batch, conns, ingestConns int

	openRate, openIntents, openManifestRate, openManifestEntries int
	openDuration                                                 time.Duration

	duration               time.Duration
	cachedRuns, ratioRound int

	serviceBin, jsonOut, pprofBind, profileDir string
	planCacheMB                                int
	serviceFlags                               []string
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 1_000_000, "cache keys to ingest before the plan phases")
	flag.IntVar(&o.crates, "crates", 20_000, "distinct crates")
	flag.IntVar(&o.intentCrates, "intent-crates", 500, "crates in a plan intent (with lock deps)")
	flag.IntVar(&o.batch, "manifest-entries", 1000, "entries per manifest in the ingest phase")
	flag.IntVar(&o.conns, "conns", 32, "concurrent connections (goroutines in process) of the closed-loop phases")
	flag.IntVar(&o.ingestConns, "ingest-conns", 4, "concurrent ingest connections")
	flag.IntVar(&o.openRate, "open-rate", 100, "open loop: plan requests offered per second")
	flag.IntVar(&o.openIntents, "open-intents", 100, "open loop: distinct intents, offered in turn (0: every request a new intent)")
	flag.IntVar(&o.openManifestRate, "open-manifest-rate", 20, "open loop: manifests ingested per second")
	flag.IntVar(&o.openManifestEntries, "open-manifest-entries", 500, "open loop: entries per manifest")
	flag.DurationVar(&o.openDuration, "open-duration", 20*time.Second, "open loop: duration")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "closed loop: duration of each run (of each side, uncached)")
	flag.IntVar(&o.cachedRuns, "cached-runs", 3, "closed loop, cache on: runs (the goal holds in every one)")
	flag.IntVar(&o.ratioRound, "ratio-rounds", 3, "closed loop, cache off: alternating HTTP / in-process rounds")
	flag.StringVar(&o.serviceBin, "service-bin", "", "kache-service binary (built with go build when empty)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.IntVar(&o.planCacheMB, "plan-cache-mb", 8, "the service's --plan-cache-mb outside the uncached phase")
	flag.StringVar(&o.pprofBind, "pprof-bind", "", "start the service with --pprof-bind (e.g. 127.0.0.1:6060) to profile it during the run")
	flag.StringVar(&o.profileDir, "profile-dir", "", "write CPU profiles of every phase here (needs --pprof-bind)")
	flag.Func("service-flag", "pass this flag to kache-service (repeatable), e.g. --service-flag=--list-cache-mb=32", func(v string) error {
		o.serviceFlags = append(o.serviceFlags, v)
		return nil
	})
	flag.Parse()
	if o.profileDir != "" && o.pprofBind == "" {
		fmt.Fprintln(os.Stderr, "kache-bench: --profile-dir needs --pprof-bind")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "kache-bench:", err)
		os.Exit(1)
	}
}

// Latency is a phase's latency summary.
type Latency struct {
	N     int     `json:"n"`
	PerS  float64 `json:"per_s"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// RatioRound is one alternation of the uncached phase.
type RatioRound struct {
	HTTP       Latency `json:"http"`
	InProcPerS float64 `json:"in_process_per_s"`
	Ratio      float64 `json:"ratio"`
	// CPU per plan: the service's and this client's over HTTP, this
	// process's in process.
	HTTPCPUMs   float64 `json:"http_cpu_ms_per_plan"`
	InProcCPUMs float64 `json:"in_process_cpu_ms_per_plan"`
}

// Results are the figures printed and written.
type Results struct {
	Keys           int `json:"keys"`
	Crates         int `json:"crates"`
	IntentCrates   int `json:"intent_crates"`
	PlanCandidates int `json:"plan_candidates"`

	IngestEntriesPerS float64 `json:"ingest_entries_per_s"`

	OpenPlans            Latency `json:"open_plans"`
	OpenOfferedPerS      float64 `json:"open_offered_per_s"`
	OpenManifests        Latency `json:"open_manifests"`
	OpenEntriesPerS      float64 `json:"open_entries_per_s"`
	OpenCacheHitFraction float64 `json:"open_cache_hit_fraction"`
	OpenServiceCPU       float64 `json:"open_service_cpu_cores"`
	// OpenServiceP99BoundMs is the bucket of the service's own duration
	// histogram that holds 99% of the plans.
	OpenServiceP99BoundMs float64 `json:"open_service_p99_bucket_ms"`

	Cached []Latency `json:"cached"`

	Uncached         []RatioRound `json:"uncached"`
	UncachedHTTPPerS float64      `json:"uncached_http_per_s"`
	InProcPerS       float64      `json:"in_process_per_s"`
	HTTPToInProc     float64      `json:"http_to_in_process"`
	HTTPToInProcCPU  float64      `json:"http_to_in_process_by_cpu"`

	PeakRSSMiB float64 `json:"peak_rss_mib"`
	DBSizeMiB  float64 `json:"db_size_mib"`
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
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	db := filepath.Join(work, "planner.db")
	res := Results{Keys: o.keys, Crates: o.crates, IntentCrates: o.intentCrates}
	var peak int64

	svc, err := startService(bin, db, o.pprofBind, o.planCacheMB, o.serviceFlags)
	if err != nil {
		return err
	}
	defer svc.kill()
	client := newClient(svc.addr, 96)
	lean := newLeanClient(svc.addr, 96)
	defer lean.close()

	// 1. Ingest.
	fmt.Printf("ingest: %d keys over %d crates in manifests of %d entries, %d connections ...\n", o.keys, o.crates, o.batch, o.ingestConns)
	svc.setPhase("ingest")
	stopProf := o.profile("ingest", 10*time.Second)
	start := time.Now()
	if err := ingest(client, o); err != nil {
		return err
	}
	el := time.Since(start)
	stopProf()
	o.heapProfile("ingest")
	res.IngestEntriesPerS = float64(o.keys) / el.Seconds()
	fmt.Printf("  %d entries in %s: %.0f entries/s\n", o.keys, el.Round(time.Millisecond), res.IngestEntriesPerS)

	builds := o.keys / o.batch
	version := depVersion(builds-1, o)
	intent := benchIntent(o, 0, version)
	body, _ := json.Marshal(intent)
	plan, err := planOnce(client, body, true)
	if err != nil {
		return err
	}
	res.PlanCandidates = len(plan.Candidates)
	fmt.Printf("plan for %d crates: %s, %d candidates (%d shard, %d history)\n", o.intentCrates, plan.Disposition,
		len(plan.Candidates), plan.Stats.FromShards, plan.Stats.FromHistory)

	// 2. Open loop.
	fmt.Printf("open loop: %d plans/s over %s, %d manifests/s of %d entries meanwhile, %s ...\n",
		o.openRate, describePool(o.openIntents), o.openManifestRate, o.openManifestEntries, o.openDuration)
	var hits0, miss0 float64
	var buckets0 map[float64]float64
	var cpu0 time.Duration
	err = openLoop(client, lean, o, builds, version, &res, func() {
		svc.setPhase("open loop")
		hits0, miss0 = svc.planCacheCounts(client)
		buckets0 = svc.planBuckets(client)
		cpu0 = svc.cpu()
		stopProf = o.profile("open", min(o.openDuration-time.Second, 15*time.Second))
		stopTrace := o.fetchProfile("trace", "trace-open", 5*time.Second)
		prev := stopProf
		stopProf = func() { prev(); stopTrace() }
	})
	if err != nil {
		return err
	}
	stopProf()
	res.OpenServiceCPU = (svc.cpu() - cpu0).Seconds() / o.openDuration.Seconds()
	o.heapProfile("open")
	hits1, miss1 := svc.planCacheCounts(client)
	res.OpenServiceP99BoundMs = bucketP99(buckets0, svc.planBuckets(client))
	if d := (hits1 - hits0) + (miss1 - miss0); d > 0 {
		res.OpenCacheHitFraction = (hits1 - hits0) / d
	}
	fmt.Printf("  plans offered %.1f/s, answered %d: p50 %.2f ms, p99 %.2f ms, max %.2f ms (plan cache hits %.0f%%); inside the handler, 99%% within %g ms\n",
		res.OpenOfferedPerS, res.OpenPlans.N, res.OpenPlans.P50Ms, res.OpenPlans.P99Ms, res.OpenPlans.MaxMs, 100*res.OpenCacheHitFraction, res.OpenServiceP99BoundMs)
	fmt.Printf("  manifests %d (%.0f entries/s): p50 %.2f ms, p99 %.2f ms; service CPU %.0f%% of one core\n", res.OpenManifests.N, res.OpenEntriesPerS,
		res.OpenManifests.P50Ms, res.OpenManifests.P99Ms, 100*res.OpenServiceCPU)

	// 3. Closed loop, cache on.
	svc.setPhase("cached")
	for r := range o.cachedRuns {
		fmt.Printf("closed loop, plan cache on, run %d/%d: %d connections for %s ...\n", r+1, o.cachedRuns, o.conns, o.duration)
		stopProf = o.profile(fmt.Sprintf("cached-%d", r+1), min(o.duration-time.Second, 8*time.Second))
		lat, n, el := load(o.conns, o.duration, func() error { return lean.plan(body) })
		stopProf()
		if n == 0 {
			return errors.New("no plan succeeded")
		}
		l := summarize(lat, el)
		res.Cached = append(res.Cached, l)
		fmt.Printf("  %d plans: %.0f/s, p50 %.2f ms, p99 %.2f ms\n", l.N, l.PerS, l.P50Ms, l.P99Ms)
	}
	o.heapProfile("cached")
	peak = max(peak, svc.rss("VmHWM"))
	fmt.Printf("service RSS: peak %.1f MiB, now %.1f MiB; sampled peaks: %s\n", mib(peak), mib(svc.rss("VmRSS")), svc.phasePeaks())
	svc.stop()

	// 4. Closed loop, cache off, against the planner in process.
	fmt.Println("copying the database for the in-process planner ...")
	inprocDB := filepath.Join(work, "inproc.db")
	if err := copyDir(db, inprocDB); err != nil {
		return err
	}
	res.DBSizeMiB = mib(dirSize(db))
	svc, err = startService(bin, db, o.pprofBind, 0, o.serviceFlags)
	if err != nil {
		return err
	}
	defer svc.kill()
	client = newClient(svc.addr, o.conns)
	lean = newLeanClient(svc.addr, o.conns)
	defer lean.close()
	svc.setPhase("uncached")
	// The service's own store options (--db-cache-mb, --list-cache-mb
	// defaults) and planner config.
	st, err := store.Open(inprocDB, store.Options{CacheMB: 8, ListCacheMB: 16})
	if err != nil {
		return err
	}
	defer st.Close()
	p := planner.New(st, planner.Config{})
	if _, err := planOnce(client, body, true); err != nil {
		return err
	}
	httpPlan := func() error { return lean.plan(body) }
	inprocPlan := func() error {
		_, out, err := p.Plan(&intent)
		if out != planner.OutcomeExecute {
			return fmt.Errorf("outcome %s: %v", out, err)
		}
		return err
	}
	// Warm both sides' caches before measuring.
	load(o.conns, 2*time.Second, httpPlan)
	load(o.conns, 2*time.Second, inprocPlan)
	var httpN, inprocN int
	var httpEl, inprocEl, httpCPUAll, inprocCPUAll time.Duration
	for r := range o.ratioRound {
		fmt.Printf("closed loop, plan cache off, round %d/%d: %d connections over HTTP, then %d goroutines in process, %s each ...\n",
			r+1, o.ratioRound, o.conns, o.conns, o.duration)
		stopProf = o.profile(fmt.Sprintf("uncached-%d", r+1), min(o.duration-time.Second, 8*time.Second))
		svcCPU, selfCPU0 := svc.cpu(), selfCPU()
		lat, n, el := load(o.conns, o.duration, httpPlan)
		httpCPU := svc.cpu() - svcCPU + selfCPU() - selfCPU0
		stopProf()
		if n == 0 {
			return errors.New("no plan succeeded")
		}
		stopLocal := o.localProfile(fmt.Sprintf("inproc-%d", r+1))
		selfCPU0 = selfCPU()
		_, n2, el2 := load(o.conns, o.duration, inprocPlan)
		inprocCPU := selfCPU() - selfCPU0
		stopLocal()
		rr := RatioRound{HTTP: summarize(lat, el), InProcPerS: float64(n2) / el2.Seconds(),
			HTTPCPUMs: 1000 * httpCPU.Seconds() / float64(n), InProcCPUMs: 1000 * inprocCPU.Seconds() / float64(n2)}
		rr.Ratio = rr.HTTP.PerS / rr.InProcPerS
		res.Uncached = append(res.Uncached, rr)
		httpN, httpEl, inprocN, inprocEl = httpN+n, httpEl+el, inprocN+n2, inprocEl+el2
		httpCPUAll, inprocCPUAll = httpCPUAll+httpCPU, inprocCPUAll+inprocCPU
		fmt.Printf("  HTTP %.0f plans/s (p50 %.2f ms, p99 %.2f ms), in process %.0f plans/s: %.2f; CPU per plan %.2f ms (service and client) / %.2f ms\n",
			rr.HTTP.PerS, rr.HTTP.P50Ms, rr.HTTP.P99Ms, rr.InProcPerS, rr.Ratio, rr.HTTPCPUMs, rr.InProcCPUMs)
	}
	res.UncachedHTTPPerS = float64(httpN) / httpEl.Seconds()
	res.InProcPerS = float64(inprocN) / inprocEl.Seconds()
	res.HTTPToInProc = res.UncachedHTTPPerS / res.InProcPerS
	res.HTTPToInProcCPU = (float64(httpN) / httpCPUAll.Seconds()) / (float64(inprocN) / inprocCPUAll.Seconds())
	peak = max(peak, svc.rss("VmHWM"))
	fmt.Printf("service RSS (uncached): peak %.1f MiB; sampled peaks: %s\n", mib(svc.rss("VmHWM")), svc.phasePeaks())
	svc.stop()
	res.PeakRSSMiB = mib(peak)

	printTable(o, &res)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func describePool(n int) string {
	if n <= 0 {
		return "a new intent each"
	}
	return fmt.Sprintf("%d distinct intents in turn", n)
}

func met(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}

func printTable(o options, r *Results) {
	fmt.Println()
	fmt.Printf("kache-bench: %d keys over %d crates; plans of %d crates (%d candidates)\n\n", r.Keys, r.Crates, r.IntentCrates, r.PlanCandidates)
	fmt.Println("| figure | measured | goal | |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| ingest, %d-entry manifests over HTTP, %d connections | %.0f entries/s | >= 50,000 | %s |\n",
		o.batch, o.ingestConns, r.IngestEntriesPerS, met(r.IngestEntriesPerS >= 50_000))
	fmt.Printf("| open loop: plan p50 / p99 (%.0f intents/s offered, %s; %d manifests/s of %d entries landing; %.0f%% cache hits) | %.2f / %.2f ms | p99 < 20 ms | %s |\n",
		r.OpenOfferedPerS, describePool(o.openIntents), o.openManifestRate, o.openManifestEntries, 100*r.OpenCacheHitFraction,
		r.OpenPlans.P50Ms, r.OpenPlans.P99Ms, met(r.OpenPlans.P99Ms < 20))
	fmt.Printf("| open loop: manifest p50 / p99 (%.0f entries/s) | %.2f / %.2f ms | - | |\n", r.OpenEntriesPerS, r.OpenManifests.P50Ms, r.OpenManifests.P99Ms)
	all := len(r.Cached) > 0
	for i, c := range r.Cached {
		all = all && c.P99Ms < 10
		fmt.Printf("| closed loop, cache on, run %d: plan p50 / p99 (%d conns, %.0f plans/s) | %.2f / %.2f ms | p99 < 10 ms | %s |\n",
			i+1, o.conns, c.PerS, c.P50Ms, c.P99Ms, met(c.P99Ms < 10))
	}
	fmt.Printf("| closed loop, cache on: p99 < 10 ms in every run | %d runs | every run | %s |\n", len(r.Cached), met(all))
	for i, u := range r.Uncached {
		fmt.Printf("| closed loop, cache off, round %d: HTTP / in process | %.0f / %.0f = %.2f (HTTP p50 / p99 %.1f / %.1f ms) | - | |\n",
			i+1, u.HTTP.PerS, u.InProcPerS, u.Ratio, u.HTTP.P50Ms, u.HTTP.P99Ms)
	}
	fmt.Printf("| closed loop, cache off: HTTP plans/s / planner in process plans/s (all rounds) | %.0f / %.0f = %.2f | >= 0.8 | %s |\n",
		r.UncachedHTTPPerS, r.InProcPerS, r.HTTPToInProc, met(r.HTTPToInProc >= 0.8))
	fmt.Printf("| the same per CPU-second (HTTP: the service's and the client's CPU; in process: the planner's) | %.2f | - | |\n", r.HTTPToInProcCPU)
	fmt.Printf("| service peak RSS (VmHWM, GOMEMLIMIT 102MiB) | %.1f MiB | < 128 MiB | %s |\n", r.PeakRSSMiB, met(r.PeakRSSMiB < 128))
	fmt.Printf("| database on disk | %.1f MiB | - | |\n", r.DBSizeMiB)
}

func newClient(addr string, conns int) *fasthttp.HostClient {
	return &fasthttp.HostClient{Addr: addr, MaxConns: conns, MaxResponseBodySize: 64 << 20,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, MaxConnWaitTimeout: 30 * time.Second}
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
				body := manifest(o, b, (b*o.batch)%o.crates, o.batch, depVersion(b, o))
				if err := postManifest(c, b, body); err != nil {
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

// manifest is build b: entries crates from first on, each with a new key.
// It is written directly, not with encoding/json, so that generating the
// load costs this process little of the machine the service runs on.
func manifest(o options, b, first, entries int, version string) []byte {
	created := time.UnixMilli(1_700_000_000_000 + int64(b)*60_000).UTC().Format(time.RFC3339Nano)
	body := make([]byte, 0, 64+entries*170)
	body = append(body, `{"version":3,"created":"`...)
	body = append(body, created...)
	body = append(body, `","manifest_key":"x86_64-unknown-linux-gnu","namespace":"bench","target":"x86_64-unknown-linux-gnu","profile":"debug","entries":[`...)
	for i := range entries {
		crate := (first + i) % o.crates
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"cache_key":"`...)
		body = appendKey(body, b+1, crate+1)
		body = append(body, `","crate_name":"crate_`...)
		body = appendPadded(body, crate)
		body = append(body, `","compile_time_ms":`...)
		body = strconv.AppendUint(body, uint64(100+(crate*37)%20000), 10)
		body = append(body, `,"artifact_size":`...)
		body = strconv.AppendUint(body, uint64(10_000+(crate*7919)%5_000_000), 10)
		body = append(body, '}')
	}
	body = append(body, `],"cargo_lock_deps":[`...)
	for i := range entries {
		crate := (first + i) % o.crates
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `["crate-`...)
		body = appendPadded(body, crate)
		body = append(body, `","`...)
		body = append(body, version...)
		body = append(body, `"]`...)
	}
	return append(body, "]}"...)
}

// appendKey appends fmt's "%032x%032x" of hi and lo.
func appendKey(dst []byte, hi, lo int) []byte {
	for _, v := range []int{hi, lo} {
		var hex [32]byte
		for i := range hex {
			hex[i] = '0'
		}
		n := strconv.AppendInt(nil, int64(v), 16)
		copy(hex[32-len(n):], n)
		dst = append(dst, hex[:]...)
	}
	return dst
}

// appendPadded appends fmt's "%05d".
func appendPadded(dst []byte, v int) []byte {
	n := strconv.AppendInt(nil, int64(v), 10)
	for range 5 - len(n) {
		dst = append(dst, '0')
	}
	return append(dst, n...)
}

func postManifest(c *fasthttp.HostClient, b int, body []byte) error {
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

// benchIntent asks for intentCrates crates from first on, with the lock deps
// of the newest round, as a CI build of the latest main would.
func benchIntent(o options, first int, version string) wire.BuildIntent {
	ns := "bench"
	in := wire.BuildIntent{Namespace: &ns}
	for i := range o.intentCrates {
		c := (first + i) % o.crates
		in.CrateNames = append(in.CrateNames, crateName(c))
		in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: crateName(c), Version: version})
	}
	return in
}

// openLoop offers plans and manifests at fixed rates. Each request has a
// scheduled time; its latency runs from then, so a slow answer delays no
// later request's clock.
// ready is called after the warm-up, when the measured part starts.
func openLoop(c *fasthttp.HostClient, lean *leanClient, o options, builds int, version string, res *Results, ready func()) error {
	// Distinct intents: windows of the crate space at co-prime offsets.
	pool := max(o.openIntents, 1)
	if o.openIntents <= 0 {
		pool = o.openRate * int(o.openDuration/time.Second+1)
	}
	intents := make([][]byte, pool)
	for i := range intents {
		b, _ := json.Marshal(benchIntent(o, (i*7919+i*i*31)%o.crates, version))
		intents[i] = b
	}
	// Manifests landing: new keys for a random window each, the same lock
	// version, so they change the lists the intents read.
	rng := rand.New(rand.NewPCG(1, 2))
	nManifests := o.openManifestRate * int(o.openDuration/time.Second)
	manifests := make([][]byte, nManifests)
	for i := range manifests {
		manifests[i] = manifest(o, builds+i, rng.IntN(o.crates), o.openManifestEntries, version)
	}

	// A fleet's service is warm: plan every distinct intent once first
	// (the first plan of an intent reads its lists from the database).
	if o.openIntents > 0 {
		t0 := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < len(intents); i = int(next.Add(1) - 1) {
					_ = lean.plan(intents[i])
				}
			}()
		}
		wg.Wait()
		fmt.Printf("  warm-up: %d intents planned once in %s\n", len(intents), time.Since(t0).Round(time.Millisecond))
	}
	ready()

	var planLat, manLat []time.Duration
	var mu sync.Mutex
	var failed atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now().Add(100 * time.Millisecond)
	end := begin.Add(o.openDuration)
	offered := 0
	schedule := func(rate, n int, workers int, do func(i int) error, lat *[]time.Duration) {
		jobs := make(chan int, n)
		times := make([]time.Time, n)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					if err := do(i); err != nil {
						if failed.Add(1) == 1 {
							fmt.Fprintln(os.Stderr, "  request failed:", err)
						}
						continue
					}
					d := time.Since(times[i])
					mu.Lock()
					*lat = append(*lat, d)
					mu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(jobs)
			period := time.Second / time.Duration(rate)
			for i := range n {
				at := begin.Add(time.Duration(i) * period)
				if !at.Before(end) {
					return
				}
				time.Sleep(time.Until(at))
				times[i] = at
				jobs <- i
			}
		}()
	}
	nPlans := o.openRate * int(o.openDuration/time.Second)
	offered = nPlans
	schedule(o.openRate, nPlans, 64, func(i int) error {
		return lean.plan(intents[i%len(intents)])
	}, &planLat)
	schedule(o.openManifestRate, nManifests, 8, func(i int) error {
		return postManifest(c, builds+i, manifests[i])
	}, &manLat)
	wg.Wait()
	el := time.Since(begin)
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("open loop: %d requests failed", f)
	}
	if len(planLat) == 0 || len(manLat) == 0 {
		return errors.New("open loop: nothing answered")
	}
	slices.Sort(planLat)
	slices.Sort(manLat)
	res.OpenPlans = summarize(planLat, el)
	res.OpenOfferedPerS = float64(offered) / o.openDuration.Seconds()
	res.OpenManifests = summarize(manLat, el)
	res.OpenEntriesPerS = float64(len(manLat)*o.openManifestEntries) / el.Seconds()
	return nil
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
	req.SetBodyRaw(body)
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

// leanClient posts plan requests over kept-alive connections with nothing
// but a write of the request and a read that skips the body: the load
// generator shares the service's two cores, so it must cost as little of
// them as possible. Replies are checked for status and size only (the first
// plan of each phase is decoded in full by planOnce).
type leanClient struct {
	addr string
	free chan *leanConn
}

type leanConn struct {
	c   net.Conn
	r   *bufio.Reader
	hdr []byte
}

func newLeanClient(addr string, conns int) *leanClient {
	return &leanClient{addr: addr, free: make(chan *leanConn, conns)}
}

func (l *leanClient) plan(body []byte) error {
	var lc *leanConn
	select {
	case lc = <-l.free:
	default:
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			return err
		}
		lc = &leanConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	}
	if err := lc.do(body); err != nil {
		lc.c.Close()
		return err
	}
	select {
	case l.free <- lc:
	default:
		lc.c.Close()
	}
	return nil
}

func (l *leanClient) close() {
	for {
		select {
		case lc := <-l.free:
			lc.c.Close()
		default:
			return
		}
	}
}

func (lc *leanConn) do(body []byte) error {
	lc.hdr = append(lc.hdr[:0], "POST /v2/prefetch-plan HTTP/1.1\r\nHost: kache-service\r\nContent-Type: application/json\r\nContent-Length: "...)
	lc.hdr = strconv.AppendInt(lc.hdr, int64(len(body)), 10)
	lc.hdr = append(lc.hdr, "\r\n\r\n"...)
	bufs := net.Buffers{lc.hdr, body}
	if _, err := bufs.WriteTo(lc.c); err != nil {
		return err
	}
	line, err := lc.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("plan: %q", bytes.TrimSpace(line))
	}
	n := -1
	for {
		line, err = lc.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Content-Length") {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(value)))
		}
	}
	if n < 64 {
		return fmt.Errorf("plan of %d bytes", n)
	}
	_, err = lc.r.Discard(n)
	return err
}

// load runs f from conns goroutines for d and returns the sorted per-call
// latencies.
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

func summarize(sorted []time.Duration, el time.Duration) Latency {
	if len(sorted) == 0 {
		return Latency{}
	}
	return Latency{N: len(sorted), PerS: float64(len(sorted)) / el.Seconds(), P50Ms: pct(sorted, 0.50), P99Ms: pct(sorted, 0.99),
		MaxMs: ms(sorted[len(sorted)-1])}
}

func pct(sorted []time.Duration, p float64) float64 {
	return ms(sorted[int(float64(len(sorted)-1)*p)])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// profile fetches a CPU profile of the service for d in the background; the
// returned func waits for it.
func (o options) profile(name string, d time.Duration) func() {
	return o.fetchProfile("profile", "service-"+name, d)
}

// fetchProfile fetches /debug/pprof/<kind> of the service for d into
// <file>.pprof in the background; the returned func waits for it.
func (o options) fetchProfile(kind, file string, d time.Duration) func() {
	if o.profileDir == "" || d < time.Second {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", o.pprofBind, kind, int(d.Seconds()))
		resp, err := http.Get(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, "  profile:", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(o.profileDir, file+".pprof"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "  profile:", err)
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// heapProfile saves the service's heap profile.
func (o options) heapProfile(name string) {
	if o.profileDir == "" {
		return
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/heap", o.pprofBind))
	if err != nil {
		fmt.Fprintln(os.Stderr, "  heap profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(filepath.Join(o.profileDir, "heap-"+name+".pprof"), b, 0o644)
}

// localProfile profiles this process (the in-process planner).
func (o options) localProfile(name string) func() {
	if o.profileDir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(o.profileDir, name+".pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "  profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		fmt.Fprintln(os.Stderr, "  profile:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

type service struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}

	// The RSS peak of each phase, sampled every 50 ms.
	mu    sync.Mutex
	phase string
	peaks map[string]int64
	order []string
}

// setPhase names what the following RSS samples belong to.
func (s *service) setPhase(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = name
	if _, ok := s.peaks[name]; !ok {
		s.order = append(s.order, name)
		s.peaks[name] = 0
	}
}

func (s *service) sampleRSS() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			v := s.rss("VmRSS")
			s.mu.Lock()
			if s.phase != "" {
				s.peaks[s.phase] = max(s.peaks[s.phase], v)
			}
			s.mu.Unlock()
		}
	}
}

// phasePeaks describes the sampled RSS peak of every phase.
func (s *service) phasePeaks() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, p := range s.order {
		parts = append(parts, fmt.Sprintf("%s %.1f", p, mib(s.peaks[p])))
	}
	return strings.Join(parts, ", ") + " MiB"
}

func startService(bin, db, pprofBind string, planCacheMB int, extra []string) (*service, error) {
	args := []string{"--bind", "127.0.0.1:0", "--db-path", db, "--plan-cache-mb", strconv.Itoa(planCacheMB)}
	if pprofBind != "" {
		args = append(args, "--pprof-bind", pprofBind)
	}
	args = append(args, extra...)
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
	s := &service{cmd: cmd, done: make(chan struct{}), peaks: make(map[string]int64)}
	go s.sampleRSS()
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
	case <-time.After(60 * time.Second):
		s.kill()
		return nil, errors.New("kache-service did not start")
	}
}

// planCacheCounts reads kache_planner_plan_cache_total from /metrics.
func (s *service) planCacheCounts(c *fasthttp.HostClient) (hits, misses float64) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + "/metrics")
	if err := c.Do(req, resp); err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(resp.Body()), "\n") {
		rest, ok := strings.CutPrefix(line, "kache_planner_plan_cache_total{")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.Contains(f[0], `"hit"`):
			hits = v
		case strings.Contains(f[0], `"miss"`):
			misses = v
		}
	}
	return hits, misses
}

// cpu is the service's CPU time so far (user and system, all threads).
func (s *service) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start at ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// planBuckets reads the cumulative buckets of the service's own plan
// duration histogram (execute outcome): upper bound in seconds -> count.
func (s *service) planBuckets(c *fasthttp.HostClient) map[float64]float64 {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + "/metrics")
	out := map[float64]float64{}
	if err := c.Do(req, resp); err != nil {
		return out
	}
	for _, line := range strings.Split(string(resp.Body()), "\n") {
		rest, ok := strings.CutPrefix(line, "kache_planner_request_duration_seconds_bucket{")
		if !ok || !strings.Contains(rest, `outcome="execute"`) {
			continue
		}
		i := strings.Index(rest, `le="`)
		if i < 0 {
			continue
		}
		le, tail, _ := strings.Cut(rest[i+4:], `"`)
		f := strings.Fields(tail)
		if len(f) < 1 {
			continue
		}
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		bound, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			bound, err = math.Inf(1), nil
		}
		if err == nil {
			out[bound] = v
		}
	}
	return out
}

// bucketP99 is the smallest bucket bound that holds 99% of the plans
// counted between two readings, in ms.
func bucketP99(before, after map[float64]float64) float64 {
	bounds := slices.Sorted(maps.Keys(after))
	total := after[math.Inf(1)] - before[math.Inf(1)]
	for _, b := range bounds {
		if total > 0 && after[b]-before[b] >= 0.99*total {
			return 1000 * b
		}
	}
	return math.Inf(1)
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

// copyDir copies a goleveldb directory (flat, closed) to dst.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
