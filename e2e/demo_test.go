//go:build e2e && demo

package e2e

// `just demo` (issue 12): what the product does, on one machine, in a few
// minutes. It is a test only under the demo build tag, so the e2e suite
// (`-tags e2e`, CI) never runs it and never skips it either.
//
// The fleet harness (fleet_harness_test.go) runs a slice of ripgrep's
// history twice on two runners, each build on a fresh runner (an empty
// sidecar store, as a runner pod per job): first with the planner (the
// sidecars ask central, which learns from their reports, and prefetch what
// it plans), then without one (the sidecars know no central and prefetch
// nothing: every hit is read from the bucket when the build asks for it).
// Each build prints a progress line; the end is a table of both runs and
// demo-out/hit-rate.png, the local hit rate over the history.
//
// Ctrl-C (SIGINT, or SIGTERM) cancels the builds; the test then returns and
// its cleanups kill MinIO, central and the sidecars (testenv.Start). The go
// command itself does not act on SIGINT: it waits for the test binary.
//
// MinIO is on loopback, so a read from the bucket would cost nothing: the
// sidecars reach it through a proxy that holds each request for
// DEMO_S3_LATENCY (default 10ms, 0 for none), as a bucket off the runner's
// machine answers after a while. DEMO_BUILDS sets how many builds (default
// 200, the last ones of the two x86_64 Linux jobs in the repository's slice
// of the trace).

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"
)

const (
	demoProject = "ripgrep"
	demoCommits = 260 // the whole slice in testdata/traces
	demoTarget  = "x86_64-unknown-linux-gnu"
	demoOut     = "../demo-out" // the test runs in e2e/
)

// demoRun is one pass over the builds.
type demoRun struct {
	name    string
	opts    fleetOptions
	results []buildResult
	took    time.Duration
}

func TestDemo(t *testing.T) {
	// Signals are caught until the last cleanup has run (registered
	// first, it runs last), so that a second Ctrl-C cannot end the test
	// binary before it has killed what it started. An interrupted demo
	// returns without failing (a failed test would print the last lines of
	// every process it started) and exits 130 once everything is stopped.
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var interrupted atomic.Bool
	t.Cleanup(func() {
		signal.Stop(sig)
		cancel()
		if interrupted.Load() {
			fmt.Println("interrupted: MinIO, central and the sidecars are stopped")
			os.Exit(130)
		}
	})
	go func() {
		select {
		case s := <-sig:
			interrupted.Store(true)
			fmt.Printf("\n%v: stopping the builds, then MinIO, central and the sidecars\n", s)
			cancel()
		case <-ctx.Done():
		}
	}()

	want := 200
	if v := os.Getenv("DEMO_BUILDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("DEMO_BUILDS=%q: want a number of builds, at least 2", v)
		}
		want = n
	}
	latency := 10 * time.Millisecond
	if v := os.Getenv("DEMO_S3_LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			t.Fatalf("DEMO_S3_LATENCY=%q: want a duration such as 20ms", v)
		}
		latency = d
	}

	fmt.Println("building kache-service and kache-sidecar (without the race detector) and kache-replay ...")
	var wg sync.WaitGroup
	for _, build := range []func() (string, error){replayBin, serviceBins.plain, sidecarBins.plain} {
		wg.Go(func() { _, _ = build() }) // errors show at first use
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	all := loadFleetBuilds(t, demoProject, demoCommits, func(b *fleetBuild) bool { return b.Job.Target == demoTarget })
	builds := all[max(len(all)-want, 0):]
	firsts := 0
	for _, b := range builds {
		if b.FirstOfBranch {
			firsts++
		}
	}
	fmt.Printf("%d builds of %s's %s jobs (debug and release; %d of them first builds of a branch), each on a fresh runner, two runners\n",
		len(builds), demoProject, demoTarget, firsts)
	fmt.Println("compile times are scaled down 200 times (at most 100 ms a unit); the figures below are at the trace's scale")
	fmt.Printf("the sidecars reach MinIO through a proxy that adds %s to each request (DEMO_S3_LATENCY)\n", latency)

	base := fleetOptions{sidecars: 2, coldRunners: true, repository: "BurntSushi/ripgrep", plainBinaries: true}
	runs := []*demoRun{{name: "planner", opts: base}, {name: "no planner", opts: base}}
	// No central and no prefetch: kache reads through the sidecar's S3
	// surface, which fetches from the bucket on demand.
	runs[1].opts.sidecarEnv = []string{"KACHE_SIDECAR_CENTRAL_ENDPOINT=", "KACHE_SIDECAR_PREFETCH_ON_PLAN=false"}
	for _, run := range runs {
		fmt.Printf("\n== %s: starting MinIO, central and two sidecars on loopback\n", run.name)
		run.opts.onBuild = demoProgress(ctx, run.name, len(builds))
		f := startFleet(t, run.opts)
		if latency > 0 {
			// Read at each sidecar's next start: before each build.
			slow := demoSlowBucket(t, f.minio.Endpoint, latency)
			for _, s := range f.sidecars {
				s.bucketEndpoint = slow
			}
		}
		start := time.Now()
		run.results = f.runAll(ctx, builds)
		run.took = time.Since(start)
		if ctx.Err() != nil {
			return
		}
		// Free the machine for the next run; the cleanups would do it at
		// the end.
		for _, s := range f.sidecars {
			s.stop(t)
		}
		f.central.stop(t)
		f.stopMinio()
	}

	fmt.Println()
	demoTable(runs)
	must(t, os.MkdirAll(demoOut, 0o755))
	png := filepath.Join(demoOut, "hit-rate.png")
	must(t, writeHitRateChart(png, runs[0].results, runs[1].results))
	abs, _ := filepath.Abs(png)
	fmt.Printf("\n%s: the share of each build's units its runner held before asking (rolling mean),\n"+
		"blue with the planner, orange without; grid lines at 25%% steps; gray ticks at the bottom are first builds of branches\n", abs)

	for _, run := range runs {
		s := summarize(run.results)
		if s.Finished != s.Builds || s.Corrupt != 0 || s.Errors != 0 {
			t.Errorf("%s: %d of %d builds finished, %d corrupt reads, %d failed requests", run.name, s.Finished, s.Builds, s.Corrupt, s.Errors)
		}
	}
}

// demoSlowBucket is a proxy to MinIO that holds each request for delay
// first; it stops when the test ends.
func demoSlowBucket(t *testing.T, endpoint string, delay time.Duration) string {
	target, err := url.Parse(endpoint)
	must(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // requests cut short by Ctrl-C
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// demoProgress prints a line as each build ends.
func demoProgress(ctx context.Context, name string, total int) func(int, buildResult) {
	var mu sync.Mutex
	done := 0
	return func(i int, r buildResult) {
		if ctx.Err() != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		done++
		first := ""
		if r.First {
			first = "first"
		}
		errs := ""
		if n := len(r.Errors); n > 0 {
			errs = fmt.Sprintf("  %d errors: %v", n, r.Errors[0])
		}
		fmt.Printf("%-10s %3d/%d  build %4d  %-5s runner %d  %2d units: %2d prefetched %2d from bucket %2d compiled  read %6.2f MiB  saved %7s  took %s%s\n",
			name, done, total, r.Seq, first, r.Runner, r.Units, r.PrefetchHits, r.RemoteHits, r.Misses,
			mib(r.BytesRead), msDuration(r.CompileMsSaved), r.Took.Round(time.Millisecond), errs)
	}
}

// demoTable prints both runs side by side.
func demoTable(runs []*demoRun) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', tabwriter.AlignRight)
	row := func(label string, cell func(r *demoRun, s fleetSummary) string) {
		fmt.Fprint(tw, label, "\t")
		for _, r := range runs {
			fmt.Fprint(tw, cell(r, summarize(r.results)), "\t")
		}
		fmt.Fprintln(tw)
	}
	share := func(n, of int) string { return fmt.Sprintf("%d (%.0f%%)", n, 100*ratio(n, of)) }
	firstRate := func(r *demoRun) string {
		hits, units := 0, 0
		for _, b := range r.results {
			if b.First {
				hits += b.LocalHits
				units += b.Units
			}
		}
		return fmt.Sprintf("%.0f%%", 100*ratio(hits, units))
	}
	row("", func(r *demoRun, _ fleetSummary) string { return r.name })
	row("builds", func(_ *demoRun, s fleetSummary) string { return strconv.Itoa(s.Builds) })
	row("units", func(_ *demoRun, s fleetSummary) string { return strconv.Itoa(s.Units) })
	row("local hits (prefetched)", func(_ *demoRun, s fleetSummary) string { return share(s.LocalHits, s.Units) })
	row("  of first builds of branches", func(r *demoRun, _ fleetSummary) string { return firstRate(r) })
	row("hits read from the bucket on demand", func(_ *demoRun, s fleetSummary) string { return share(s.RemoteHits, s.Units) })
	row("compiled (misses)", func(_ *demoRun, s fleetSummary) string { return share(s.Misses, s.Units) })
	row("MiB read by the builds", func(_ *demoRun, s fleetSummary) string { return fmt.Sprintf("%.1f", mib(s.BytesRead)) })
	row("MiB uploaded", func(_ *demoRun, s fleetSummary) string { return fmt.Sprintf("%.1f", mib(s.BytesUploaded)) })
	row("compile time saved (trace scale)", func(_ *demoRun, s fleetSummary) string { return msDuration(s.CompileMsSaved) })
	row("mean wall time per build", func(_ *demoRun, s fleetSummary) string { return s.MeanBuild.Round(time.Millisecond).String() })
	row("  of which a fresh runner's stop and start", func(_ *demoRun, s fleetSummary) string {
		return (s.MeanStop + s.MeanStart).Round(time.Millisecond).String()
	})
	row("plan p50 / p99", func(_ *demoRun, s fleetSummary) string {
		return fmt.Sprintf("%.1f / %.1f ms", s.PlanP50Ms, s.PlanP99Ms)
	})
	row("run time", func(r *demoRun, _ fleetSummary) string { return r.took.Round(time.Second).String() })
	row("corrupt reads / failed requests", func(_ *demoRun, s fleetSummary) string { return fmt.Sprintf("%d / %d", s.Corrupt, s.Errors) })
	_ = tw.Flush()
}

// msDuration is a number of milliseconds as a duration to the second.
func msDuration(v uint64) string {
	return (time.Duration(v) * time.Millisecond).Round(time.Second).String()
}
