//go:build e2e

package e2e

// Issue 12's bucket fault scenarios, on the fleet harness
// (fleet_harness_test.go):
//
//   - minio_restart_prefetch: MinIO killed (SIGKILL) while the sidecars
//     prefetch a build's plan, and started again a moment later;
//   - minio_restart_upload: MinIO killed while builds upload through the
//     sidecars' S3 surface, and started again;
//   - slow_bucket: the sidecars reach the bucket through a TCP proxy that
//     adds latency to every request and caps the bandwidth.
//
// Each asserts that the builds finish (a read that fails is a miss kache
// compiles), that no read returns bytes other than those uploaded, that no
// sidecar keeps an object whose bytes are not the bucket's (a partial
// download committed as complete), and that every acknowledged upload is in
// the bucket with its bytes.
//
// Helpers here are prefixed bf (bucket faults) to stay clear of the other
// fault scenarios' files in this package.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
)

// TestFleetMinioRestartPrefetch (issue 12, scenario minio_restart_prefetch):
// six healthy builds fill the bucket and teach central; then two builds run
// on fresh runners whose prefetch reads the bucket through a
// bandwidth-capped proxy (so a plan's prefetch takes seconds), and MinIO is
// killed as soon as the prefetch receives its first bytes and started
// again 1.5 s later. The builds finish, every unit either served intact or
// compiled; no read is corrupt; after the run every object in each
// sidecar's store is byte for byte the bucket's and what was uploaded;
// every acknowledged upload is in the bucket; and four later builds on
// fresh runners are served by the prefetch again, without an error.
func TestFleetMinioRestartPrefetch(t *testing.T) {
	var (
		warm, fault, later []buildResult
		sumAll, sumFault   fleetSummary
		check              bucketCheck
		stores             bfStoreCheck
		atKill, afterFault bfPrefetchFigures
		outage             time.Duration
		peak               float64
		took               time.Duration
	)
	recordScenario(t, "minio_restart_prefetch", func(r *scenarioResult) {
		if later == nil {
			return
		}
		healthy := summarize(slices.Concat(warm, later))
		r.Builds, r.BuildsFinished = intp(sumAll.Builds), intp(sumAll.Finished)
		r.CorruptServed, r.AckedLost = intp(sumAll.Corrupt), intp(len(check.Lost))
		// Errors are the failed requests (HEAD, GET, PUT through the S3
		// surface) of the builds run while MinIO was up throughout: there
		// must be none. Those of the builds across the outage may fail and
		// are counted apart; plan failures (kache plans locally then) are
		// in plan_errors.
		r.Errors = intp(healthy.Errors)
		r.PeakRSSMiB = floatp(peak)
		r.set("plan_errors", sumAll.PlanErrors)
		r.set("runners", 2)
		r.set("outage_ms", ms(outage))
		r.set("prefetch_bytes_at_kill", atKill.received)
		r.set("prefetch_keys_done_at_kill", atKill.keysDone())
		r.set("prefetch_keys_failed", afterFault.keys["failed"])
		r.set("prefetch_keys_fetched", afterFault.keys["fetched"])
		r.set("prefetch_retries", afterFault.retries)
		r.set("prefetch_refused_objects", afterFault.corrupt)
		r.set("outage_builds_requests_failed", sumFault.Errors)
		r.set("outage_builds_misses", sumFault.Misses)
		r.set("store_objects_verified", stores.Objects)
		r.set("store_objects_bad", len(stores.Bad))
		r.set("later_local_hit_rate", ratio(summarize(later).LocalHits, summarize(later).Units))
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	builds := fleetJobBuilds(t, 12)
	// Packs of 64-256 KiB: a plan's prefetch is a few MiB.
	f := startFleet(t, fleetOptions{sidecars: 2, repository: "BurntSushi/ripgrep", packDivisor: 16, packMin: 64 << 10, packMax: 256 << 10})
	proxy := startFaultProxy(t, f.minio.Host)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()

	// Healthy: the bucket fills, and central learns the keys from the
	// sidecars' reports (flushed by fresh's graceful stop).
	warm = f.runAll(ctx, builds[:6])
	for _, s := range f.sidecars {
		s.bucketEndpoint = proxy.endpoint()
		must(t, s.fresh(t, nil))
	}

	// The fault: the prefetch of two builds' plans is on its way (1 MiB/s
	// for both runners: seconds for both plans) when MinIO dies.
	proxy.shape(10*time.Millisecond, 1<<20)
	done := make(chan []buildResult, 1)
	var finished atomic.Bool
	go func() {
		defer finished.Store(true)
		done <- f.runAll(ctx, builds[6:8])
	}()
	prefetching := waitUntil(ctx, 5*time.Millisecond, func() bool {
		if finished.Load() {
			return true
		}
		for _, s := range f.sidecars {
			if bfMetric(s, "kache_sidecar_prefetch_sessions_total") > 0 && bfMetric(s, "kache_sidecar_prefetch_received_bytes_total") > 0 {
				return true
			}
		}
		return false
	})
	for _, s := range f.sidecars {
		atKill.add(bfPrefetchOf(s))
	}
	killed := time.Now()
	f.stopMinio()
	if !prefetching || finished.Load() {
		t.Fatal("the builds ended before their prefetch received a byte")
	}
	time.Sleep(1500 * time.Millisecond)
	f.restartMinio(t)
	outage = time.Since(killed)
	fault = <-done
	for _, s := range f.sidecars {
		afterFault.add(bfPrefetchOf(s))
		s.stop(t)
	}
	stores = bfCheckStores(t, f)

	// Later builds, on fresh runners: the prefetch serves them again.
	proxy.shape(0, 0)
	for _, s := range f.sidecars {
		must(t, s.fresh(t, nil))
	}
	later = f.runAll(ctx, builds[8:12])
	took = time.Since(start)
	for _, s := range f.sidecars {
		s.stop(t)
	}
	stores.add(bfCheckStores(t, f))
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)
	sumAll, sumFault = summarize(slices.Concat(warm, fault, later)), summarize(fault)
	sumLater := summarize(later)

	t.Logf("prefetch at the kill: %d bytes received, keys done %v; after the restart: keys %v, %d retries, %d refused objects; outage %s",
		atKill.received, atKill.keys, afterFault.keys, afterFault.retries, afterFault.corrupt, outage.Round(time.Millisecond))
	bfLogBuilds(t, "healthy", warm)
	bfLogBuilds(t, "across the outage", fault)
	bfLogBuilds(t, "later", later)
	t.Logf("stores: %d objects compared with the bucket, bad %v; bucket: %d acknowledged keys, lost %v; proxy: %d requests, %.1f MiB; %s in all",
		stores.Objects, stores.Bad, check.Keys, check.Lost, proxy.requests.Load(), mib(proxy.bytes.Load()), took.Round(time.Millisecond))

	bfCommon(t, slices.Concat(warm, fault, later), check, stores)
	if afterFault.keys["failed"]+afterFault.retries == 0 {
		t.Errorf("no prefetch download failed or was retried: the outage did not hit the prefetch (keys %v)", afterFault.keys)
	}
	if healthy := summarize(slices.Concat(warm, later)); healthy.Errors != 0 {
		t.Errorf("%d requests failed in builds while MinIO was up", healthy.Errors)
	}
	if sumLater.LocalHits == 0 || sumLater.PrefetchHits == 0 {
		t.Errorf("later builds: %d local hits (%d prefetched) of %d units: the prefetch did not serve again after MinIO's restart",
			sumLater.LocalHits, sumLater.PrefetchHits, sumLater.Units)
	}
}

// TestFleetMinioRestartUpload (issue 12, scenario minio_restart_upload):
// three runners start nine builds on an empty bucket (nearly every unit a
// miss: compile, then upload the pack and its entry manifest through the
// sidecar), MinIO is killed once 30 uploads were acknowledged, while a PUT
// streams to it (the sidecars reach MinIO through a proxy that tells, and
// that caps the bandwidth around the kill so the PUT is mid-body), and is
// started again 1.5 s later. The builds finish; every
// acknowledged upload is in the bucket with its bytes; an unacknowledged
// one may be missing but nothing in the bucket differs from what a PUT of
// its key sent; no read is corrupt; the sidecars' stores hold only the
// bucket's bytes; and the first three builds, run again on fresh runners,
// are served every unit whose upload was acknowledged, without an error.
func TestFleetMinioRestartUpload(t *testing.T) {
	var (
		first, again []buildResult
		sumAll       fleetSummary
		check        bucketCheck
		bucket       bfBucketCheck
		stores       bfStoreCheck
		puts         bfPutFigures
		ackedUnits   int
		outage       time.Duration
		peak         float64
		took         time.Duration
	)
	recordScenario(t, "minio_restart_upload", func(r *scenarioResult) {
		if again == nil {
			return
		}
		sumAgain := summarize(again)
		r.Builds, r.BuildsFinished = intp(sumAll.Builds), intp(sumAll.Finished)
		// Corrupt: reads returning other bytes than uploaded, plus bucket
		// objects holding bytes no PUT of their key sent.
		r.CorruptServed, r.AckedLost = intp(sumAll.Corrupt+len(bucket.Mismatched)), intp(len(check.Lost))
		// Errors are the failed requests (HEAD, GET, PUT through the S3
		// surface) of the builds run after MinIO was back (the second
		// round): there must be none. Those of the builds across the outage
		// are counted apart (PUTs cut off by the kill fail); plan failures
		// (kache plans locally then) are in plan_errors.
		r.Errors = intp(sumAgain.Errors)
		r.PeakRSSMiB = floatp(peak)
		r.set("plan_errors", sumAll.PlanErrors)
		r.set("runners", 3)
		r.set("outage_ms", ms(outage))
		r.set("puts_acked", puts.Acked)
		r.set("puts_failed", puts.Failed)
		r.set("puts_in_flight_at_kill", puts.InFlightAtKill)
		r.set("unacked_keys", puts.UnackedKeys)
		r.set("unacked_keys_in_bucket", puts.UnackedInBucket)
		r.set("outage_builds_requests_failed", summarize(first).Errors)
		r.set("bucket_objects_verified", bucket.Objects)
		r.set("store_objects_verified", stores.Objects)
		r.set("rerun_hits", sumAgain.LocalHits+sumAgain.RemoteHits)
		r.set("rerun_acked_units", ackedUnits)
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	builds := fleetJobBuilds(t, 9)
	// Compiles of at most 10 ms and packs of 64-512 KiB: the runners spend
	// most of their time uploading.
	f := startFleet(t, fleetOptions{sidecars: 3, repository: "BurntSushi/ripgrep", compileCap: 10 * time.Millisecond,
		packDivisor: 16, packMin: 64 << 10, packMax: 512 << 10})
	// The sidecars reach MinIO through a proxy, to tell when a PUT is on
	// its way to the bucket.
	proxy := startFaultProxy(t, f.minio.Host)
	for _, s := range f.sidecars {
		s.bucketEndpoint = proxy.endpoint()
		s.restart(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()

	done := make(chan []buildResult, 1)
	var finished atomic.Bool
	go func() {
		defer finished.Store(true)
		done <- f.runAll(ctx, builds)
	}()
	uploading := waitUntil(ctx, 5*time.Millisecond, func() bool { return bfAckedPuts(f) >= 30 || finished.Load() })
	// The kill lands mid-body: the bandwidth capped to 4 MiB/s, a PUT of
	// 64 KiB or more takes 16 ms or more to reach the bucket.
	proxy.shape(0, 4<<20)
	putting := waitUntil(ctx, time.Millisecond, func() bool { return proxy.putsOpen.Load() > 0 || finished.Load() })
	time.Sleep(5 * time.Millisecond)
	killed := time.Now()
	f.stopMinio()
	proxy.shape(0, 0)
	if !uploading || !putting || finished.Load() {
		t.Fatalf("the builds ended before a PUT was in flight after 30 were acknowledged (%d acknowledged)", bfAckedPuts(f))
	}
	time.Sleep(1500 * time.Millisecond)
	f.restartMinio(t)
	outage = time.Since(killed)
	first = <-done

	for _, s := range f.sidecars {
		s.stop(t)
	}
	stores = bfCheckStores(t, f)
	check = f.checkBucket(t)
	bucket = bfCheckBucketBytes(t, f)
	puts = bfPuts(t, f, killed)

	// The first builds again, on empty stores: what they read comes from
	// the bucket, and every unit whose upload was acknowledged is a hit.
	for _, s := range f.sidecars {
		must(t, s.fresh(t, nil))
	}
	for _, b := range builds[:3] {
		for _, u := range b.Units {
			if bfAcked(f, layout.PackKey("artifacts", u.Crate, u.Key)) && bfAcked(f, layout.EntryManifestKey("artifacts", u.Crate, u.Key)) {
				ackedUnits++
			}
		}
	}
	again = f.runAll(ctx, builds[:3])
	took = time.Since(start)
	for _, s := range f.sidecars {
		s.stop(t)
	}
	stores.add(bfCheckStores(t, f))
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)
	sumAll = summarize(slices.Concat(first, again))
	sumAgain := summarize(again)

	t.Logf("PUTs: %d acknowledged, %d failed, %d in flight at the kill; %d keys never acknowledged, %d of them in the bucket all the same; outage %s",
		puts.Acked, puts.Failed, puts.InFlightAtKill, puts.UnackedKeys, puts.UnackedInBucket, outage.Round(time.Millisecond))
	bfLogBuilds(t, "across the outage", first)
	bfLogBuilds(t, "again", again)
	t.Logf("bucket: %d objects compared with their PUTs, mismatched %v, not written by the builds %d; %d acknowledged keys, lost %v; stores: %d objects, bad %v; %s in all",
		bucket.Objects, bucket.Mismatched, bucket.Unknown, check.Keys, check.Lost, stores.Objects, stores.Bad, took.Round(time.Millisecond))

	bfCommon(t, slices.Concat(first, again), check, stores)
	if len(bucket.Mismatched) != 0 {
		t.Errorf("%d bucket objects hold bytes no PUT of their key sent: %v", len(bucket.Mismatched), bucket.Mismatched)
	}
	if puts.InFlightAtKill == 0 || puts.Failed == 0 {
		t.Errorf("%d uploads in flight at the kill, %d failed: the outage did not hit the uploads", puts.InFlightAtKill, puts.Failed)
	}
	if sumAgain.Errors != 0 {
		t.Errorf("%d requests failed in the builds run after MinIO's restart", sumAgain.Errors)
	}
	if hits := sumAgain.LocalHits + sumAgain.RemoteHits; ackedUnits == 0 || hits < ackedUnits {
		t.Errorf("builds run again: %d hits, fewer than the %d units whose pack and entry manifest were acknowledged", hits, ackedUnits)
	}
}

// TestFleetSlowBucket (issue 12, scenario slow_bucket): three runners, a
// fresh sidecar per build, reach MinIO through a proxy adding 100 ms to
// every request and capping the bandwidth at 32 MiB/s for all of them
// (central reads the bucket directly: it crawls only at startup, and plans
// from what the sidecars report). Every plan is answered within kache's
// 750 ms, every build finishes without a failed request, no read is
// corrupt and every acknowledged upload is in the bucket.
func TestFleetSlowBucket(t *testing.T) {
	const (
		latency = 100 * time.Millisecond
		rate    = 32 << 20
	)
	var (
		results []buildResult
		sum     fleetSummary
		check   bucketCheck
		stores  bfStoreCheck
		peak    float64
		took    time.Duration
		proxy   *faultProxy
	)
	recordScenario(t, "slow_bucket", func(r *scenarioResult) {
		if results == nil {
			return
		}
		r.Builds, r.BuildsFinished = intp(sum.Builds), intp(sum.Finished)
		r.CorruptServed, r.AckedLost = intp(sum.Corrupt), intp(len(check.Lost))
		r.PlanP99Ms = floatp(sum.PlanP99Ms)
		// Errors are every failed request and plan: a slow bucket must
		// fail none.
		r.Errors = intp(sum.Errors + sum.PlanErrors)
		r.PeakRSSMiB = floatp(peak)
		r.set("runners", 3)
		r.set("latency_ms", ms(latency))
		r.set("bandwidth_mib_s", mib(rate))
		r.set("plan_p50_ms", sum.PlanP50Ms)
		r.set("proxy_requests", proxy.requests.Load())
		r.set("proxy_mib", mib(proxy.bytes.Load()))
		r.set("local_hit_rate", ratio(sum.LocalHits, sum.Units))
		r.set("remote_hits", sum.RemoteHits)
		r.set("misses", sum.Misses)
		r.set("mean_build_s", sum.MeanBuild.Seconds())
		r.set("store_objects_verified", stores.Objects)
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	builds := fleetJobBuilds(t, 12)
	f := startFleet(t, fleetOptions{sidecars: 3, coldRunners: true, repository: "BurntSushi/ripgrep"})
	proxy = startFaultProxy(t, f.minio.Host)
	proxy.shape(latency, rate)
	// Read at each build's fresh start.
	for _, s := range f.sidecars {
		s.bucketEndpoint = proxy.endpoint()
	}
	// The proxy is slow: a request through it takes the latency at least.
	probe := time.Now()
	resp, err := httpc.Get(proxy.endpoint() + "/minio/health/ready")
	must(t, err)
	resp.Body.Close()
	if d := time.Since(probe); resp.StatusCode != 200 || d < latency {
		t.Fatalf("MinIO through the proxy: %d in %s, want 200 in %s or more", resp.StatusCode, d, latency)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	results = f.runAll(ctx, builds)
	took = time.Since(start)
	for _, s := range f.sidecars {
		s.stop(t)
	}
	stores = bfCheckStores(t, f)
	sum = summarize(results)
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)

	bfLogBuilds(t, "slow bucket", results)
	t.Logf("plans p50 %.1f ms p99 %.1f ms, dispositions %v; proxy: %d requests, %.1f MiB; bucket: %d acknowledged keys, lost %v; stores: %d objects, bad %v; %s in all",
		sum.PlanP50Ms, sum.PlanP99Ms, sum.Dispositions, proxy.requests.Load(), mib(proxy.bytes.Load()), check.Keys, check.Lost, stores.Objects, stores.Bad, took.Round(time.Millisecond))

	bfCommon(t, results, check, stores)
	if sum.PlanErrors != 0 || sum.PlanP99Ms >= 750 {
		t.Errorf("plans: %d failed, p99 %.1f ms: not all answered within kache's 750 ms", sum.PlanErrors, sum.PlanP99Ms)
	}
	if sum.Errors != 0 {
		t.Errorf("%d requests failed against a slow bucket", sum.Errors)
	}
	// Every request of the sidecars went through the proxy, each at least
	// latency late: more requests than builds means the builds' objects did.
	if n := proxy.requests.Load(); n < int64(len(builds)) {
		t.Errorf("only %d requests went through the slow proxy", n)
	}
}

// bfCommon asserts what every bucket fault scenario does: every build
// finished with each unit either served intact or compiled, no corrupt
// read, the stores hold only the bucket's bytes, nothing acknowledged lost.
func bfCommon(t *testing.T, results []buildResult, check bucketCheck, stores bfStoreCheck) {
	t.Helper()
	faultsCommon(t, results, check)
	if stores.Objects == 0 || len(stores.Bad) != 0 {
		t.Errorf("sidecar stores: %d objects, %d not the bucket's bytes: %v", stores.Objects, len(stores.Bad), stores.Bad)
	}
}

func bfLogBuilds(t *testing.T, phase string, results []buildResult) {
	t.Helper()
	s := summarize(results)
	t.Logf("%s: %d builds (%d finished), %d units: local hits %d (prefetched %d), remote hits %d, misses %d, corrupt %d, errors %d, plan errors %d, plan p99 %.1f ms, mean build %s",
		phase, s.Builds, s.Finished, s.Units, s.LocalHits, s.PrefetchHits, s.RemoteHits, s.Misses, s.Corrupt, s.Errors, s.PlanErrors, s.PlanP99Ms, s.MeanBuild.Round(time.Millisecond))
	for _, r := range results {
		if len(r.Errors) > 0 || r.PlanErr != nil || !r.Done {
			errs := r.Errors
			if len(errs) > 3 {
				errs = errs[:3]
			}
			t.Logf("  build %d (runner %d): %d units, local %d, remote %d, misses %d, took %s, %d errors (first %v), plan error %v",
				r.Seq, r.Runner, r.Units, r.LocalHits, r.RemoteHits, r.Misses, r.Took.Round(time.Millisecond), len(r.Errors), errs, r.PlanErr)
		}
	}
}

// bfMetric reads one series of a running sidecar's /metrics; 0 when it
// cannot (the sidecar is between processes).
func bfMetric(s *fleetSidecar, series string) float64 {
	resp, err := httpc.Get("http://" + s.planner + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// bfPrefetchFigures are a sidecar's prefetch counters.
type bfPrefetchFigures struct {
	received, retries, corrupt int
	keys                       map[string]int // by result
}

func bfPrefetchOf(s *fleetSidecar) bfPrefetchFigures {
	p := bfPrefetchFigures{
		received: int(bfMetric(s, "kache_sidecar_prefetch_received_bytes_total")),
		retries:  int(bfMetric(s, "kache_sidecar_prefetch_retries_total")),
		corrupt:  int(bfMetric(s, "kache_sidecar_prefetch_corrupt_total")),
		keys:     map[string]int{},
	}
	for _, r := range []string{"fetched", "present", "joined", "not_found", "failed", "over_budget", "skipped", "invalid"} {
		if n := int(bfMetric(s, `kache_sidecar_prefetch_keys_total{result="`+r+`"}`)); n > 0 {
			p.keys[r] = n
		}
	}
	return p
}

func (p *bfPrefetchFigures) add(q bfPrefetchFigures) {
	p.received += q.received
	p.retries += q.retries
	p.corrupt += q.corrupt
	if p.keys == nil {
		p.keys = map[string]int{}
	}
	for k, v := range q.keys {
		p.keys[k] += v
	}
}

func (p bfPrefetchFigures) keysDone() int {
	n := 0
	for _, v := range p.keys {
		n += v
	}
	return n
}

// bfStoreCheck is the sidecars' stores against the bucket.
type bfStoreCheck struct {
	// Objects are the packs and entry manifests found in the stores.
	Objects int
	// Bad are those whose bytes are not the bucket's object (or the bucket
	// has none), or not what the builds uploaded under that key.
	Bad []string
}

func (c *bfStoreCheck) add(d bfStoreCheck) {
	c.Objects += d.Objects
	c.Bad = append(c.Bad, d.Bad...)
}

// bfCheckStores compares every object in each sidecar's current store with
// the bucket and the registry. Call it with the sidecars stopped.
func bfCheckStores(t *testing.T, f *fleet) bfStoreCheck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var c bfStoreCheck
	for _, s := range f.sidecars {
		s.mu.Lock()
		dir := s.store
		s.mu.Unlock()
		for _, kind := range []struct {
			dir, ext string
			key      func(prefix, crate, key string) string
		}{{"packs", ".tar.zst", layout.PackKey}, {"manifests", ".json", layout.EntryManifestKey}} {
			paths, err := filepath.Glob(filepath.Join(dir, "objects", kind.dir, "*", "*"+kind.ext))
			must(t, err)
			for _, path := range paths {
				name := filepath.Base(path)
				// The store's temp files (sidecar/internal/store.TempPrefix)
				// are never served; a graceful stop removes them.
				if strings.HasPrefix(name, ".tmp-") {
					continue
				}
				key, crate, ok := strings.Cut(strings.TrimSuffix(name, kind.ext), ".")
				if !ok {
					c.Bad = append(c.Bad, path+" (not a store name)")
					continue
				}
				c.Objects++
				objectKey := kind.key("artifacts", crate, key)
				local, err := os.ReadFile(path)
				must(t, err)
				remote, err := faultBucketBytes(ctx, f, objectKey)
				sum := sha256Hex(local)
				want, known := f.reg.expected(objectKey)
				switch {
				case err != nil:
					c.Bad = append(c.Bad, fmt.Sprintf("runner %d %s: %d bytes, bucket: %v", s.index, objectKey, len(local), err))
				case sum != sha256Hex(remote):
					c.Bad = append(c.Bad, fmt.Sprintf("runner %d %s: %d bytes, the bucket's %d", s.index, objectKey, len(local), len(remote)))
				case !known || sum != want:
					c.Bad = append(c.Bad, fmt.Sprintf("runner %d %s: %d bytes, not what was uploaded", s.index, objectKey, len(local)))
				}
			}
		}
	}
	return c
}

// bfBucketCheck is every object in the bucket against the PUTs of its key.
type bfBucketCheck struct {
	Objects int
	// Mismatched hold bytes no PUT of their key sent (a partial or mixed
	// upload stored).
	Mismatched []string
	// Unknown are objects no build wrote.
	Unknown int
}

// bfCheckBucketBytes reads every object of the bucket and compares it with
// the PUTs of its key, acknowledged or not.
func bfCheckBucketBytes(t *testing.T, f *fleet) bfBucketCheck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c bfBucketCheck
	for _, key := range minioKeys(t, f.objects, testBucket, "") {
		f.reg.mu.Lock()
		attempts := slices.Clone(f.reg.puts[key])
		f.reg.mu.Unlock()
		if len(attempts) == 0 {
			c.Unknown++
			continue
		}
		c.Objects++
		body, err := faultBucketBytes(ctx, f, key)
		if err != nil {
			c.Mismatched = append(c.Mismatched, fmt.Sprintf("%s (%v)", key, err))
			continue
		}
		sum := sha256Hex(body)
		if !slices.ContainsFunc(attempts, func(a putAttempt) bool { return a.sum == sum }) {
			c.Mismatched = append(c.Mismatched, fmt.Sprintf("%s (%d bytes)", key, len(body)))
		}
	}
	return c
}

// bfPutFigures are the builds' PUT attempts around a kill of MinIO.
type bfPutFigures struct {
	Acked, Failed int
	// InFlightAtKill started before the kill and ended after it.
	InFlightAtKill int
	// UnackedKeys had no acknowledged PUT; UnackedInBucket of them are in
	// the bucket all the same (MinIO stored the body, its answer was lost).
	UnackedKeys, UnackedInBucket int
}

func bfPuts(t *testing.T, f *fleet, killed time.Time) bfPutFigures {
	t.Helper()
	present := map[string]bool{}
	for _, k := range minioKeys(t, f.objects, testBucket, "") {
		present[k] = true
	}
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	var p bfPutFigures
	for key, attempts := range f.reg.puts {
		acked := false
		for _, a := range attempts {
			if a.acked {
				p.Acked++
				acked = true
			} else {
				p.Failed++
			}
			if a.start.Before(killed) && a.end.After(killed) {
				p.InFlightAtKill++
			}
		}
		if !acked {
			p.UnackedKeys++
			if present[key] {
				p.UnackedInBucket++
			}
		}
	}
	return p
}

func bfAckedPuts(f *fleet) int {
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	n := 0
	for _, attempts := range f.reg.puts {
		for _, a := range attempts {
			if a.acked {
				n++
			}
		}
	}
	return n
}

func bfAcked(f *fleet, key string) bool {
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	return slices.ContainsFunc(f.reg.puts[key], func(a putAttempt) bool { return a.acked })
}
