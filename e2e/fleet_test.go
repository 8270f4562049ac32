//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// The fleet scenario's slice of ripgrep's history: builds [fleetFrom,
// fleetTo) of the x86_64-unknown-linux-gnu debug job, in start order. It
// starts on a branch's first build and has first builds of branches in
// every quarter (4, 4, 2, 5 of them), one toolchain throughout (a toolchain
// change renews every key), and 28-30 units a build.
const (
	fleetProject = "ripgrep"
	fleetCommits = 260 // exported commits, enough to hold fleetTo builds of the job
	fleetFrom    = 100
	fleetTo      = 180
)

// TestFleet (issue 12, scenario fleet): a slice of ripgrep's history,
// exported by kache-replay, built by three runners round-robin, each build
// on a fresh sidecar (an empty store, as a new runner pod per job) in front
// of one MinIO bucket, with one central crawling the bucket only at startup.
// First builds of branches late in the run are served locally (prefetched
// on the sidecar's plan from central) more than early ones; no read returns
// bytes other than those uploaded; every acknowledged upload is in the
// bucket; and central learnt from the sidecars' reports, since its crawl
// never ran after the bucket filled.
func TestFleet(t *testing.T) {
	var (
		results []buildResult
		sum     fleetSummary
		check   bucketCheck
		rates   [4]float64
		firsts  [4]int
		peak    float64
		took    time.Duration
	)
	recordScenario(t, "fleet", func(r *scenarioResult) {
		if results == nil {
			return
		}
		r.Builds, r.BuildsFinished = intp(sum.Builds), intp(sum.Finished)
		r.CorruptServed, r.AckedLost = intp(sum.Corrupt), intp(len(check.Lost))
		r.LocalHitRateFirstQuarter, r.LocalHitRateLastQuarter = floatp(rates[0]), floatp(rates[3])
		r.PlanP99Ms, r.Errors = floatp(sum.PlanP99Ms), intp(sum.Errors+sum.PlanErrors)
		r.PeakRSSMiB = floatp(peak)
		r.set("trace", fmt.Sprintf("%s builds %d-%d", fleetProject, fleetFrom, fleetTo))
		r.set("runners", 3)
		r.set("first_builds_per_quarter", fmt.Sprint(firsts))
		r.set("hit_rate_first_q2", rates[1])
		r.set("hit_rate_first_q3", rates[2])
		r.set("local_hit_rate_all", ratio(sum.LocalHits, sum.Units))
		r.set("plan_recall", ratio(sum.Planned, sum.Units))
		r.set("remote_hits", sum.RemoteHits)
		r.set("misses", sum.Misses)
		r.set("plan_errors", sum.PlanErrors)
		r.set("acked_keys", check.Keys)
		r.set("compile_ms_saved", float64(sum.CompileMsSaved))
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	builds := fleetJobBuilds(t, fleetTo-fleetFrom)

	f := startFleet(t, fleetOptions{sidecars: 3, coldRunners: true, repository: "BurntSushi/ripgrep"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	results = f.runAll(ctx, builds)
	took = time.Since(start)
	// The last builds' sidecars stop, so their reports are flushed.
	for _, s := range f.sidecars {
		s.stop(t)
	}
	sum = summarize(results)
	rates, firsts = quarterHitRates(results, func(r *buildResult) bool { return r.First })
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)

	t.Logf("%d builds (%d finished) in %s: %d units, local hits %d (%.2f), remote hits %d, misses %d, planned %d (%.2f), corrupt %d, errors %d, plan errors %d, plan p50 %.1f ms p99 %.1f ms, dispositions %v",
		sum.Builds, sum.Finished, took.Round(time.Millisecond), sum.Units, sum.LocalHits, ratio(sum.LocalHits, sum.Units), sum.RemoteHits, sum.Misses,
		sum.Planned, ratio(sum.Planned, sum.Units), sum.Corrupt, sum.Errors, sum.PlanErrors, sum.PlanP50Ms, sum.PlanP99Ms, sum.Dispositions)
	t.Logf("per build: %s, of which the fresh sidecar's stop %s and start %s", sum.MeanBuild.Round(time.Millisecond), sum.MeanStop.Round(time.Millisecond), sum.MeanStart.Round(time.Millisecond))
	t.Logf("first builds of branches per quarter %v, local hit rate %.3f %.3f %.3f %.3f", firsts, rates[0], rates[1], rates[2], rates[3])
	for _, r := range results {
		if r.First || len(r.Errors) > 0 || r.PlanErr != nil {
			t.Logf("build %d (runner %d, first %v): %d units, local %d, remote %d, misses %d, planned %d of %d candidates (%s), plan %s, took %s (stop %s, start %s, reads %s, writes %s, compiles %s), errors %v, plan error %v",
				r.Seq, r.Runner, r.First, r.Units, r.LocalHits, r.RemoteHits, r.Misses, r.Planned, r.Candidates, r.Disposition,
				r.PlanLatency.Round(time.Millisecond), r.Took.Round(time.Millisecond), r.Stopping.Round(time.Millisecond), r.Starting.Round(time.Millisecond),
				r.Reading.Round(time.Millisecond), r.Writing.Round(time.Millisecond), r.Compiling.Round(time.Millisecond), r.Errors, r.PlanErr)
		}
	}

	if sum.Finished != len(builds) {
		t.Errorf("%d of %d builds finished within the budget", sum.Finished, len(builds))
	}
	if sum.Corrupt != 0 {
		t.Errorf("%d reads returned bytes other than those uploaded", sum.Corrupt)
	}
	if sum.Errors != 0 {
		t.Errorf("%d requests failed in a healthy fleet", sum.Errors)
	}
	if check.Keys == 0 || len(check.Lost) != 0 {
		t.Errorf("%d acknowledged uploads, %d not in the bucket as acknowledged: %v", check.Keys, len(check.Lost), check.Lost)
	}
	for q, n := range firsts {
		if n == 0 {
			t.Errorf("no first build of a branch in quarter %d", q+1)
		}
	}
	if !(rates[3] > rates[0]) {
		t.Errorf("local hit rate of first builds of branches: last quarter %.3f, not above the first quarter's %.3f", rates[3], rates[0])
	}

	// Central learnt from the sidecars: its only crawl ran on the empty
	// bucket at startup (the next is an hour away), yet it took manifests
	// and plans the first build's keys, uploaded at the start of the run.
	if n := f.central.metric(t, `kache_planner_manifests_total{outcome="inserted"}`); n == 0 {
		t.Error("central ingested no manifest from the sidecars")
	}
	var intent wire.BuildIntent
	must(t, json.Unmarshal(builds[0].Intent, &intent))
	st, plan := f.central.plan(builds[0].Intent)
	uploaded := 0
	for _, c := range plan.Candidates {
		if _, ok := f.reg.expected(packKeyOf(c)); ok {
			uploaded++
		}
	}
	t.Logf("central plans %d candidates for build %d's intent (%d crates), %d of them uploaded during the run", len(plan.Candidates), builds[0].Seq, len(intent.CrateNames), uploaded)
	if st != 200 || uploaded == 0 {
		t.Errorf("central answers %d with %d candidates uploaded during the run: it did not learn from the sidecars' reports", st, uploaded)
	}
	if took > 3*time.Minute {
		t.Errorf("the fleet ran %s, over its 3-minute budget", took)
	}
}

func packKeyOf(c wire.PrefetchCandidate) string {
	return layout.PackKey("artifacts", c.CrateName, c.CacheKey)
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// TestFleetHarness checks the harness's controls the fault scenarios rely
// on, with a few builds: central killed (SIGKILL) and started again on its
// database, a sidecar killed and started again on its store (its packs are
// local hits again), MinIO restarted on its data, a sidecar's bucket
// endpoint pointed at a proxy, a sidecar started with extra env; and the
// bucket check finds every acknowledged upload throughout.
func TestFleetHarness(t *testing.T) {
	prebuildFleet()
	builds := fleetJobBuilds(t, 4)
	f := startFleet(t, fleetOptions{sidecars: 2, repository: "BurntSushi/ripgrep"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(runner int, b fleetBuild) buildResult {
		t.Helper()
		r := f.runBuild(ctx, runner, b)
		if !r.Done || r.Corrupt != 0 || len(r.Errors) != 0 {
			t.Fatalf("build %d on runner %d: done %v, corrupt %d, errors %v", b.Seq, runner, r.Done, r.Corrupt, r.Errors)
		}
		return r
	}
	for i, r := range f.runAll(ctx, builds[:2]) {
		if !r.Done || len(r.Errors) != 0 || r.Runner != i || (i == 0 && r.Misses == 0) {
			t.Fatalf("first builds: %+v", r)
		}
	}

	// Central, killed and started on its database, still plans what the
	// sidecars reported before.
	f.central.kill()
	f.central.start(t)
	if st, plan := f.central.plan(builds[0].Intent); st != 200 || len(plan.Candidates) == 0 {
		t.Fatalf("central after kill -9 and start: %d, %d candidates", st, len(plan.Candidates))
	}

	// A sidecar killed and started on its store serves its packs locally.
	f.sidecars[0].kill()
	f.sidecars[0].start(t)
	if r := run(0, builds[0]); r.LocalHits != r.Units || r.Misses != 0 {
		t.Errorf("build %d again on the restarted sidecar: %d local hits of %d units, %d misses", builds[0].Seq, r.LocalHits, r.Units, r.Misses)
	}

	// MinIO restarted on its data: what was uploaded is still there.
	f.stopMinio()
	f.restartMinio(t)
	if c := f.checkBucket(t); c.Keys == 0 || len(c.Lost) != 0 {
		t.Fatalf("after MinIO's restart: %d keys, lost %v", c.Keys, c.Lost)
	}

	// Sidecar 1 reads the bucket through a proxy.
	var proxied atomic.Int64
	target, err := url.Parse(f.minio.Endpoint)
	must(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	f.sidecars[1].bucketEndpoint = proxy.URL
	f.sidecars[1].restart(t)
	run(1, builds[2])
	if proxied.Load() == 0 {
		t.Error("no request of sidecar 1 went through its new bucket endpoint")
	}

	// A third sidecar started with prefetch off: nothing is local.
	s := f.addSidecar(t, []string{"KACHE_SIDECAR_PREFETCH_ON_PLAN=false"}, nil)
	if r := run(s.index, builds[3]); r.LocalHits != 0 || r.RemoteHits == 0 {
		t.Errorf("build on a sidecar without prefetch: %d local hits, %d remote hits", r.LocalHits, r.RemoteHits)
	}
	if v := s.metric(t, `kache_sidecar_prefetch_sessions_total`); v != 0 {
		t.Errorf("the sidecar started with KACHE_SIDECAR_PREFETCH_ON_PLAN=false prefetched %v sessions", v)
	}
	for _, sc := range f.sidecars {
		sc.stop(t)
	}
	f.central.restart(t)
	f.central.stop(t)
	if c := f.checkBucket(t); c.Keys == 0 || len(c.Lost) != 0 {
		t.Errorf("%d acknowledged keys, lost %v", c.Keys, c.Lost)
	}
}

// fleetJobBuilds are n builds of the fleet scenario's job from the start of
// its slice (a branch's first build), in start order: what TestFleet and
// the fault scenarios replay.
func fleetJobBuilds(t *testing.T, n int) []fleetBuild {
	t.Helper()
	all := loadFleetBuilds(t, fleetProject, fleetCommits, func(b *fleetBuild) bool {
		return b.Job.Target == "x86_64-unknown-linux-gnu" && b.Job.Profile == "debug"
	})
	if len(all) < fleetFrom+n {
		t.Fatalf("the export holds %d builds of the job, want %d", len(all), fleetFrom+n)
	}
	return all[fleetFrom : fleetFrom+n]
}
