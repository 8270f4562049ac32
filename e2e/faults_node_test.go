//go:build e2e

package e2e

// Issue 12's node fault scenarios, on the fleet harness
// (fleet_harness_test.go):
//
//   - central_kill_ingest: central killed (SIGKILL) twice while builds land
//     and manifests are posted to it, started again on the same database;
//   - central_down_build: central stopped for whole builds, planned from
//     the sidecars' hints and their own bucket plans;
//   - sidecar_kill: a sidecar killed mid-prefetch and started again on the
//     same store directory;
//   - disk_full: one sidecar's store on a small tmpfs the builds overfill.
//
// Each asserts that the builds finish, that no read returns bytes other
// than those uploaded, and that every acknowledged upload is in the bucket,
// plus what its fault is about.
//
// Helpers here are prefixed fn (faults, node) to stay clear of the other
// fault scenarios' files in this package.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// TestFleetCentralKillIngest (issue 12, scenario central_kill_ingest):
// twelve builds run on three runners while three clients post build
// manifests to central directly as fast as it takes them; central is
// killed (SIGKILL) twice mid-run and started again on the same database
// after a second down. Central opens its database without recovering it;
// every manifest it acknowledged (200), before or after a kill, is planned
// after the last restart; the builds finish meanwhile without a failed
// request (the sidecars plan from the bucket while central is down); no
// read is corrupt; every acknowledged upload is in the bucket.
func TestFleetCentralKillIngest(t *testing.T) {
	var (
		results        []buildResult
		sum            fleetSummary
		check          bucketCheck
		posted         fnPostFigures
		ackedAtKills   []int
		buildsAtKills  []int
		notPlanned     []string
		recovered      int
		peak           float64
		took, downtime time.Duration
	)
	recordScenario(t, "central_kill_ingest", func(r *scenarioResult) {
		if results == nil {
			return
		}
		r.Builds, r.BuildsFinished = intp(sum.Builds), intp(sum.Finished)
		r.CorruptServed = intp(sum.Corrupt)
		// Lost: acknowledged uploads missing from the bucket, and manifests
		// central acknowledged but no longer plans.
		r.AckedLost = intp(len(check.Lost) + len(notPlanned))
		r.Errors = intp(sum.Errors)
		r.PlanP99Ms = floatp(sum.PlanP99Ms)
		r.PeakRSSMiB = floatp(peak)
		r.set("runners", 3)
		r.set("kills", len(ackedAtKills))
		r.set("manifests_acked", posted.acked)
		r.set("manifests_acked_before_kills", fmt.Sprint(ackedAtKills))
		r.set("manifests_failed", posted.failed)
		r.set("manifests_not_planned_after_restart", len(notPlanned))
		r.set("builds_finished_at_kills", fmt.Sprint(buildsAtKills))
		r.set("central_down_ms", ms(downtime))
		r.set("db_recovered", recovered)
		r.set("plan_errors", sum.PlanErrors)
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	builds := fleetJobBuilds(t, 12)
	var finished atomic.Int32
	f := startFleet(t, fleetOptions{sidecars: 3, repository: "BurntSushi/ripgrep",
		onBuild: func(int, buildResult) { finished.Add(1) }})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	done := make(chan []buildResult, 1)
	go func() { done <- f.runAll(ctx, builds) }()
	p := fnStartPoster(f.central.url, 3)

	// Two kills: the first once builds have landed and central took some
	// manifests, the second as soon as it took 40 more after its restart,
	// with builds still running.
	for i, wantBuilds := range []int32{2, 0} {
		floor := p.figures().acked + 40
		if !waitUntil(ctx, 20*time.Millisecond, func() bool { return finished.Load() >= wantBuilds && p.figures().acked >= floor }) {
			p.stop()
			t.Fatalf("kill %d: %d builds finished, %d manifests acknowledged before the budget ran out", i+1, finished.Load(), p.figures().acked)
		}
		f.central.kill()
		killed := time.Now()
		ackedAtKills = append(ackedAtKills, p.figures().acked)
		buildsAtKills = append(buildsAtKills, int(finished.Load()))
		time.Sleep(time.Second)
		f.central.start(t)
		downtime += time.Since(killed)
		if b, err := os.ReadFile(f.central.p.Log); err == nil && bytes.Contains(b, []byte("database corrupted")) {
			recovered++
		}
		t.Logf("kill %d after %d builds and %d acknowledged manifests; central served again %s later", i+1, buildsAtKills[i], ackedAtKills[i], time.Since(killed).Round(time.Millisecond))
	}
	results = <-done
	p.stop()
	took = time.Since(start)
	posted = p.figures()
	for _, s := range f.sidecars {
		s.stop(t)
	}
	sum = summarize(results)
	check = f.checkBucket(t)
	notPlanned = fnUnplanned(f, p.ackedManifests())
	peak = f.peakRSSMiB(t)
	fnLogBuilds(t, "builds across the kills", results)
	t.Logf("manifests posted: %d acknowledged, %d failed (%v); %d acknowledged not planned after the last restart",
		posted.acked, posted.failed, posted.firstErr, len(notPlanned))

	faultsCommon(t, results, check)
	if sum.Errors != 0 {
		t.Errorf("%d requests of the builds failed; central is not on their path", sum.Errors)
	}
	if recovered != 0 {
		t.Errorf("central recovered a corrupted database after %d of its kills", recovered)
	}
	if posted.acked == 0 || len(ackedAtKills) != 2 || ackedAtKills[0] == 0 {
		t.Errorf("central acknowledged %d manifests (%v at the kills): no ingest to test", posted.acked, ackedAtKills)
	}
	if len(notPlanned) != 0 {
		t.Errorf("%d of %d acknowledged manifests are not planned after the restart: %v", len(notPlanned), posted.acked, notPlanned[:min(len(notPlanned), 5)])
	}
	// Central, started again on its database, plans the first build.
	if st, plan := f.central.plan(builds[0].Intent); st != 200 || len(plan.Candidates) == 0 {
		t.Errorf("central after the kills: %d, %d candidates for build %d", st, len(plan.Candidates), builds[0].Seq)
	}
	if took > 3*time.Minute {
		t.Errorf("the scenario ran %s", took)
	}
}

// TestFleetCentralDownBuild (issue 12, scenario central_down_build): six
// builds on two runners with central up leave hints on each sidecar (kept
// outside the store, so a new runner pod with an empty store still has
// them); then central is stopped and each runner, its store emptied, runs
// again a build of the intent it planned before (its plan comes from the
// hint), then a build after a Cargo.lock change, whose intent it never saw
// (its plan comes from the sidecar's own bucket plan: the namespace's
// shards). Every plan is answered within kache's 750 ms, none is
// use_fallback, the prefetch of the hinted plan fills the empty stores
// before the builds ask, the builds finish without a failed request. The
// sidecars hold the reports central could not take; once central is back
// they send them, and central plans the keys the outage's builds uploaded
// (their target and profile came with the reports: from its crawl alone it
// learnt the keys without them and planned older ones instead).
func TestFleetCentralDownBuild(t *testing.T) {
	var (
		warm, outage, after []buildResult
		sumOut              fleetSummary
		check               bucketCheck
		sources             = map[string]float64{}
		held, sent          float64
		learnt, outageKeys  int
		peak                float64
		took                time.Duration
	)
	recordScenario(t, "central_down_build", func(r *scenarioResult) {
		if after == nil {
			return
		}
		all := summarize(slices.Concat(warm, outage, after))
		r.Builds, r.BuildsFinished = intp(all.Builds), intp(all.Finished)
		r.CorruptServed, r.AckedLost = intp(all.Corrupt), intp(len(check.Lost))
		r.Errors = intp(all.Errors)
		// The plans asked while central was down.
		r.PlanP99Ms = floatp(sumOut.PlanP99Ms)
		r.PeakRSSMiB = floatp(peak)
		r.set("runners", 2)
		r.set("outage_builds", sumOut.Builds)
		for src, n := range sources {
			r.set("outage_plans_"+src, n)
		}
		r.set("outage_dispositions", fmt.Sprint(sumOut.Dispositions))
		r.set("outage_plan_errors", sumOut.PlanErrors)
		r.set("outage_local_hits", sumOut.LocalHits)
		r.set("outage_prefetch_hits", sumOut.PrefetchHits)
		r.set("outage_local_hit_rate", ratio(sumOut.LocalHits, sumOut.Units))
		r.set("report_entries_held_during_outage", held)
		r.set("reports_sent_after", sent)
		r.set("outage_keys_uploaded", outageKeys)
		r.set("outage_keys_planned_after", learnt)
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	// Builds 0-12 share one intent; 13 and 14 follow a Cargo.lock change
	// (two new keys).
	builds := fleetJobBuilds(t, 15)
	if bytes.Equal(builds[0].Intent, builds[13].Intent) || !bytes.Equal(builds[0].Intent, builds[5].Intent) {
		t.Fatal("the slice's intents changed: builds 0-5 must share one and 13 have another")
	}
	f := startFleet(t, fleetOptions{sidecars: 2, repository: "BurntSushi/ripgrep"})
	for _, s := range f.sidecars {
		s.env = append(s.env, "KACHE_SIDECAR_HINTS_DIR="+filepath.Join(s.dir, "hints"))
		s.restart(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()

	// Central up: builds 0-5, runner 0 the even ones, runner 1 the odd.
	warm = f.runAll(ctx, builds[:6])
	fnLogBuilds(t, "central up", warm)

	// Central down for whole builds, each runner a new pod on an empty
	// store: runner 0 builds 4 (hinted) then 13 (a new intent), runner 1
	// builds 5 then 14.
	f.central.stop(t)
	down := time.Now()
	for _, s := range f.sidecars {
		if err := s.fresh(t, nil); err != nil {
			t.Fatal(err)
		}
	}
	outage = f.runAll(ctx, []fleetBuild{builds[4], builds[5], builds[13], builds[14]})
	sumOut = summarize(outage)
	fnLogBuilds(t, "central down", outage)
	for _, s := range f.sidecars {
		for _, src := range []string{"hint", "central", "stale_hint", "bucket", "fallback"} {
			sources[src] += s.metric(t, `kache_sidecar_plan_requests_total{source="`+src+`"}`)
		}
		held += s.metric(t, `kache_sidecar_report_held_entries`)
	}
	t.Logf("plans while central was down, by source: %v; report entries the sidecars hold: %v", sources, held)

	// Central back: the sidecars send what they held (their backoff is at
	// most 30 s), then how much of the outage's keys central plans (asked
	// before any build lands after them).
	f.central.start(t)
	drained := waitUntil(ctx, 100*time.Millisecond, func() bool {
		for _, s := range f.sidecars {
			if s.metric(t, `kache_sidecar_report_held_entries`) != 0 {
				return false
			}
		}
		return true
	})
	if !drained {
		t.Error("the sidecars still hold reports after central came back")
	}
	_, plan := f.central.plan(builds[13].Intent)
	planned := map[string]bool{}
	for _, c := range plan.Candidates {
		planned[c.CacheKey] = true
	}
	for _, u := range builds[13].Units {
		if fnUploadedDuring(f, u, down) {
			outageKeys++
			if planned[u.Key] {
				learnt++
			}
		}
	}
	t.Logf("central back plans %d candidates for build %d's intent, %d of the %d keys uploaded while it was down", len(plan.Candidates), builds[13].Seq, learnt, outageKeys)
	after = []buildResult{f.runBuild(ctx, 0, builds[8])}
	fnLogBuilds(t, "central back", after)
	waitUntil(ctx, 100*time.Millisecond, func() bool {
		sent = f.sidecars[0].metric(t, `kache_sidecar_report_total{kind="manifest",result="sent"}`)
		return sent > 0
	})
	for _, s := range f.sidecars {
		s.stop(t)
	}
	took = time.Since(start)
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)

	faultsCommon(t, slices.Concat(warm, outage, after), check)
	if n := summarize(slices.Concat(warm, outage, after)).Errors; n != 0 {
		t.Errorf("%d requests of the builds failed; central is not on their path", n)
	}
	for _, r := range outage {
		if r.PlanErr != nil || r.PlanLatency >= 750*time.Millisecond {
			t.Errorf("build %d on runner %d: plan took %s, error %v; kache waits 750 ms", r.Seq, r.Runner, r.PlanLatency.Round(time.Millisecond), r.PlanErr)
		}
		if r.Disposition != string(wire.Execute) || r.Candidates == 0 {
			t.Errorf("build %d on runner %d: %s plan of %d candidates while the hints and the bucket know its keys", r.Seq, r.Runner, r.Disposition, r.Candidates)
		}
	}
	if sources["central"] != 0 {
		t.Errorf("%v plans answered by central while it was stopped", sources["central"])
	}
	if sources["hint"]+sources["stale_hint"] == 0 || sources["bucket"] == 0 {
		t.Errorf("plans while central was down by source %v: want some from hints and some from the bucket", sources)
	}
	// Runner 0 and 1's first outage builds ran on empty stores: only the
	// prefetch of the hinted plan put keys there before they were asked.
	for _, r := range outage[:2] {
		if r.PrefetchHits == 0 {
			t.Errorf("build %d on runner %d (empty store, hinted plan): no prefetched local hit", r.Seq, r.Runner)
		}
	}
	if sumOut.LocalHits == 0 {
		t.Error("no local hit while central was down")
	}
	if held == 0 {
		t.Error("the sidecars held no report while central was down")
	}
	if sent == 0 {
		t.Error("no build manifest reported to central once it was back")
	}
	if outageKeys == 0 {
		t.Error("no key was uploaded while central was down: the Cargo.lock change compiled nothing")
	}
	if learnt != outageKeys {
		t.Errorf("central plans %d of the %d keys uploaded while it was down, after the sidecars sent what they held", learnt, outageKeys)
	}
}

// fnUploadedDuring reports whether the fleet uploaded u's pack (an
// acknowledged PUT) after since.
func fnUploadedDuring(f *fleet, u fleetUnit, since time.Time) bool {
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	return slices.ContainsFunc(f.reg.puts[layout.PackKey("artifacts", u.Crate, u.Key)], func(a putAttempt) bool {
		return a.acked && a.start.After(since)
	})
}

// TestFleetSidecarKill (issue 12, scenario sidecar_kill): four builds with
// packs of 64-256 KiB fill the bucket; then runner 0, a new pod on an empty
// store reading the bucket through a proxy that lets each connection have
// 256 KiB/s, is asked for an earlier build's plan and killed (SIGKILL) once
// its prefetch has completed a few packs and has others half-written. Every
// object its store then holds is byte for byte the bucket's; started again
// on the same store directory (reading the bucket directly) it swept the
// temp files; the build it was planning runs on it without a failed request
// or a corrupt read, with at least the packs complete at the kill served
// locally; four more builds on both runners finish; every acknowledged
// upload is in the bucket.
func TestFleetSidecarKill(t *testing.T) {
	var (
		warm, again, later                  []buildResult
		atKill, afterStart, final           fnStoreCheck
		completeAtKill, completeUnitsAtKill int
		receivedAtKill                      float64
		check                               bucketCheck
		peak                                float64
		took                                time.Duration
	)
	recordScenario(t, "sidecar_kill", func(r *scenarioResult) {
		if later == nil {
			return
		}
		all := summarize(slices.Concat(warm, again, later))
		r.Builds, r.BuildsFinished = intp(all.Builds), intp(all.Finished)
		r.CorruptServed, r.AckedLost = intp(all.Corrupt), intp(len(check.Lost))
		r.Errors = intp(all.Errors)
		r.PlanP99Ms = floatp(all.PlanP99Ms)
		r.PeakRSSMiB = floatp(peak)
		r.set("runners", 2)
		r.set("prefetch_bytes_at_kill", receivedAtKill)
		r.set("packs_complete_at_kill", completeAtKill)
		r.set("temp_files_at_kill", atKill.Temps)
		r.set("temp_files_after_restart", afterStart.Temps)
		r.set("store_objects_bad", len(atKill.Bad)+len(afterStart.Bad)+len(final.Bad))
		r.set("store_objects_verified", final.Objects)
		if len(again) > 0 {
			r.set("rebuild_local_hits", again[0].LocalHits)
			r.set("rebuild_units", again[0].Units)
		}
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	builds := fleetJobBuilds(t, 8)
	f := startFleet(t, fleetOptions{sidecars: 2, repository: "BurntSushi/ripgrep", packDivisor: 16, packMin: 64 << 10, packMax: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	warm = f.runAll(ctx, builds[:4])
	fnLogBuilds(t, "warm", warm)

	// Runner 0: a new pod (its stop flushed its reports, so central knows
	// build 0), reading the bucket slowly.
	s := f.sidecars[0]
	proxy := startFaultProxy(t, f.minio.Host)
	proxy.capEachConn(256 << 10)
	s.bucketEndpoint = proxy.endpoint()
	if err := s.fresh(t, nil); err != nil {
		t.Fatal(err)
	}
	plan, _, err := fnAskPlan(s, builds[0].Intent, 5*time.Second)
	if err != nil || plan.Disposition != wire.Execute || len(plan.Candidates) < 8 {
		t.Fatalf("plan for build %d on the new runner: %v, %s with %d candidates", builds[0].Seq, err, plan.Disposition, len(plan.Candidates))
	}
	var files fnStoreFiles
	if !waitUntil(ctx, 10*time.Millisecond, func() bool {
		files = fnListStore(t, s.store)
		return files.packs() >= 3 && len(files.temps) > 0
	}) {
		t.Fatalf("the prefetch never had 3 packs complete and others in flight: %d objects, %d temp files", len(files.objects), len(files.temps))
	}
	receivedAtKill = s.metric(t, "kache_sidecar_prefetch_received_bytes_total")
	s.kill()
	files = fnListStore(t, s.store)
	unit := map[string]bool{}
	for _, u := range builds[0].Units {
		unit[u.Key] = true
	}
	for _, o := range files.objects {
		if o.pack {
			completeAtKill++
			if unit[o.cacheKey] {
				completeUnitsAtKill++
			}
		}
	}
	atKill = fnCheckStore(t, f, s.store)
	t.Logf("killed mid-prefetch after %.0f bytes received: %d objects in the store (%d packs, %d of build %d's units), %d temp files",
		receivedAtKill, len(files.objects), completeAtKill, completeUnitsAtKill, builds[0].Seq, len(files.temps))

	// Started again on the same store, reading the bucket directly.
	proxy.close()
	s.bucketEndpoint = f.minio.Endpoint
	s.start(t)
	afterStart = fnCheckStore(t, f, s.store)
	again = []buildResult{f.runBuild(ctx, 0, builds[0])}
	fnLogBuilds(t, "the killed runner's build, after its restart", again)
	later = f.runAll(ctx, builds[4:8])
	fnLogBuilds(t, "later", later)
	for _, sc := range f.sidecars {
		sc.stop(t)
	}
	took = time.Since(start)
	final = fnCheckStore(t, f, s.store)
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)

	all := slices.Concat(warm, again, later)
	faultsCommon(t, all, check)
	if n := summarize(all).Errors; n != 0 {
		t.Errorf("%d requests of the builds failed", n)
	}
	for name, c := range map[string]fnStoreCheck{"at the kill": atKill, "after the restart": afterStart, "after the run": final} {
		if c.Objects == 0 || len(c.Bad) != 0 {
			t.Errorf("runner 0's store %s: %d objects, %d not the bucket's bytes: %v", name, c.Objects, len(c.Bad), c.Bad)
		}
	}
	if atKill.Temps == 0 {
		t.Error("no download was in flight at the kill")
	}
	if afterStart.Temps != 0 || final.Temps != 0 {
		t.Errorf("temp files left in runner 0's store: %d after the restart, %d after the run", afterStart.Temps, final.Temps)
	}
	if r := again[0]; r.LocalHits < completeUnitsAtKill || r.LocalHits == 0 {
		t.Errorf("build %d after the restart: %d local hits, %d of its packs were complete at the kill", r.Seq, r.LocalHits, completeUnitsAtKill)
	}
}

// TestFleetDiskFull (issue 12, scenario disk_full): runner 1's store is a
// 12 MiB tmpfs (its hint cache with it, as by default) with a store budget
// of 256 MiB, so the disk fills before the budget does; packs hold 1 to 2
// MiB, half of it compressible, a build's about 20 MiB. Four builds over both runners fill it;
// then runner 1 is asked for a plan whose keys do not fit: its prefetch
// stops with disk_full; a build of that plan (hits served from the bucket)
// and a build after a Cargo.lock change (its misses uploaded through the
// sidecar) run on it. The sidecar keeps running and serving, logs the full
// disk, every build finishes without a failed request or a corrupt read,
// every acknowledged upload is in the bucket, and its store holds no temp
// file and no object other than the bucket's bytes.
func TestFleetDiskFull(t *testing.T) {
	var (
		phase1, phase2  []buildResult
		stop            fnProgress
		store           fnStoreCheck
		check           bucketCheck
		freeAfter       int64
		enospcLogged    bool
		failedKeys      float64
		remoteOnFull    int
		uploadedOnFull  int64
		peak            float64
		took            time.Duration
		sidecarSurvived bool
	)
	const fsSize = 12 << 20
	recordScenario(t, "disk_full", func(r *scenarioResult) {
		if phase2 == nil {
			return
		}
		all := summarize(slices.Concat(phase1, phase2))
		r.Builds, r.BuildsFinished = intp(all.Builds), intp(all.Finished)
		r.CorruptServed, r.AckedLost = intp(all.Corrupt), intp(len(check.Lost))
		r.Errors = intp(all.Errors)
		r.PlanP99Ms = floatp(all.PlanP99Ms)
		r.PeakRSSMiB = floatp(peak)
		r.set("runners", 2)
		r.set("fs_mib", fsSize>>20)
		r.set("fs_free_kib_after", freeAfter>>10)
		r.set("prefetch_stop_reason", stop.StopReason)
		r.set("prefetch_keys_fetched_on_full", stop.Fetched)
		r.set("prefetch_keys_failed_on_full", stop.Failed)
		r.set("prefetch_keys_failed_total", failedKeys)
		r.set("enospc_logged", enospcLogged)
		r.set("remote_hits_on_full_disk", remoteOnFull)
		r.set("bytes_uploaded_on_full_disk", uploadedOnFull)
		r.set("store_objects_verified", store.Objects)
		r.set("store_temp_files", store.Temps)
		r.set("store_objects_bad", len(store.Bad))
		r.set("sidecar_survived", sidecarSurvived)
		r.set("acked_keys", check.Keys)
		r.set("run_seconds", took.Seconds())
	})

	prebuildFleet()
	// Builds 0-12 share their keys; 13 follows a Cargo.lock change (two
	// new keys).
	builds := fleetJobBuilds(t, 14)
	f := startFleet(t, fleetOptions{sidecars: 2, repository: "BurntSushi/ripgrep", packDivisor: 1, packMin: 1 << 20, packMax: 2 << 20})
	s := f.sidecars[1]
	s.stop(t)
	mnt := fnMountTmpfs(t, fsSize)
	s.store = filepath.Join(mnt, "store")
	s.env = append(s.env, "KACHE_SIDECAR_STORE_MAX_BYTES=256MiB")
	s.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()

	// Four builds: runner 1's uploads, reads and prefetches fill its disk.
	phase1 = f.runAll(ctx, builds[:4])
	fnLogBuilds(t, "filling", phase1)
	free := fnFree(t, mnt)
	missing := 0
	for _, u := range builds[4].Units {
		if !s.hasPack(u.Crate, u.Key) {
			missing++
		}
	}
	t.Logf("runner 1's store after 4 builds: %d KiB free of %d MiB, %d of build %d's %d packs not in it", free>>10, fsSize>>20, missing, builds[4].Seq, len(builds[4].Units))

	// A plan for build 4, whose keys central knows and do not all fit on
	// runner 1's disk: its prefetch meets the full disk.
	plan, _, err := fnAskPlan(s, builds[4].Intent, 5*time.Second)
	if err != nil || plan.Disposition != wire.Execute || len(plan.Candidates) == 0 {
		t.Fatalf("plan for build %d on runner 1: %v, %s with %d candidates", builds[4].Seq, err, plan.Disposition, len(plan.Candidates))
	}
	if !waitUntil(ctx, 50*time.Millisecond, func() bool {
		stop = fnSession(s, plan.PlanID)
		return stop.Finished
	}) {
		t.Fatalf("runner 1's prefetch of plan %s did not finish: %+v", plan.PlanID, stop)
	}
	t.Logf("runner 1's prefetch on the full disk: %+v", stop)

	// Runner 1 builds on its full disk: build 4 (the packs that did not
	// fit served from the bucket), then build 13, whose misses upload
	// through it.
	for _, b := range []fleetBuild{builds[4], builds[13]} {
		r := f.runBuild(ctx, 1, b)
		phase2 = append(phase2, r)
		remoteOnFull += r.RemoteHits
		uploadedOnFull += r.BytesUploaded
	}
	fnLogBuilds(t, "runner 1 on its full disk", phase2)
	if p := s.proc(); p != nil && !p.Exited() {
		resp, err := httpc.Get("http://" + s.planner + "/healthz")
		if err == nil {
			resp.Body.Close()
			sidecarSurvived = resp.StatusCode == 200
		}
	}
	failedKeys = s.metric(t, `kache_sidecar_prefetch_keys_total{result="failed"}`)
	if b, err := os.ReadFile(s.proc().Log); err == nil {
		enospcLogged = bytes.Contains(b, []byte("no space left on device"))
		if !enospcLogged {
			t.Logf("runner 1's log:\n%s", s.proc().Tail(40))
		}
	}
	for _, sc := range f.sidecars {
		sc.stop(t)
	}
	took = time.Since(start)
	freeAfter = fnFree(t, mnt)
	store = fnCheckStore(t, f, s.store)
	check = f.checkBucket(t)
	peak = f.peakRSSMiB(t)
	t.Logf("runner 1's store after the run: %d objects verified, %d temp files, %d bad, %d KiB free", store.Objects, store.Temps, len(store.Bad), freeAfter>>10)

	all := slices.Concat(phase1, phase2)
	faultsCommon(t, all, check)
	if n := summarize(all).Errors; n != 0 {
		t.Errorf("%d requests of the builds failed; a full disk must not fail serving or uploads", n)
	}
	if !sidecarSurvived {
		t.Error("runner 1's sidecar did not keep running and answering on its full disk")
	}
	if missing == 0 {
		t.Errorf("runner 1's disk holds every pack of build %d: nothing left to fill it", builds[4].Seq)
	}
	if free >= 2<<20 {
		t.Errorf("runner 1's disk was not full after the filling builds: %d KiB free", free>>10)
	}
	if stop.StopReason != "disk_full" {
		t.Errorf("runner 1's prefetch on its full disk stopped for %q, want disk_full", stop.StopReason)
	}
	if !enospcLogged {
		t.Error("runner 1 did not log the full disk (no space left on device)")
	}
	if remoteOnFull == 0 || uploadedOnFull == 0 {
		t.Errorf("on its full disk runner 1 served %d hits from the bucket and took %d bytes of uploads", remoteOnFull, uploadedOnFull)
	}
	if store.Objects == 0 || store.Temps != 0 || len(store.Bad) != 0 {
		t.Errorf("runner 1's store: %d objects, %d temp files, %d not the bucket's bytes: %v", store.Objects, store.Temps, len(store.Bad), store.Bad)
	}
}

// fnMountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// (lazily, so a process still holding it does not stop the cleanup) when
// the test ends.
func fnMountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small-disk")
	must(t, os.Mkdir(dir, 0o755))
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d", size)); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Fatalf("mount a %d MiB tmpfs on %s: %v: the disk_full scenario needs root (CAP_SYS_ADMIN), as CI runs it", size>>20, dir, err)
		}
		t.Fatalf("mount a %d MiB tmpfs on %s: %v", size>>20, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fnFree is the free space of the filesystem holding dir.
func fnFree(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	must(t, syscall.Statfs(dir, &st))
	return int64(st.Bavail) * st.Bsize
}

func fnLogBuilds(t *testing.T, phase string, results []buildResult) {
	t.Helper()
	s := summarize(results)
	t.Logf("%s: %d builds (%d finished), %d units: local hits %d (prefetched %d), remote hits %d, misses %d, corrupt %d, errors %d, plan errors %d, plan p99 %.1f ms, dispositions %v, mean build %s",
		phase, s.Builds, s.Finished, s.Units, s.LocalHits, s.PrefetchHits, s.RemoteHits, s.Misses, s.Corrupt, s.Errors, s.PlanErrors, s.PlanP99Ms, s.Dispositions, s.MeanBuild.Round(time.Millisecond))
	for _, r := range results {
		errs := r.Errors[:min(len(r.Errors), 3)]
		t.Logf("  build %d (runner %d): %d units, local %d (prefetched %d), remote %d, misses %d, plan %s %d candidates in %s, took %s, %d errors %v, plan error %v",
			r.Seq, r.Runner, r.Units, r.LocalHits, r.PrefetchHits, r.RemoteHits, r.Misses, r.Disposition, r.Candidates,
			r.PlanLatency.Round(time.Millisecond), r.Took.Round(time.Millisecond), len(r.Errors), errs, r.PlanErr)
	}
}

// fnAskPlan posts intent to the sidecar's planner endpoint.
func fnAskPlan(s *fleetSidecar, intent []byte, timeout time.Duration) (wire.PrefetchPlan, time.Duration, error) {
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := hc.Post("http://"+s.planner+"/v2/prefetch-plan", "application/json", bytes.NewReader(intent))
	if err != nil {
		return wire.PrefetchPlan{}, time.Since(start), err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return wire.PrefetchPlan{}, took, err
	}
	if resp.StatusCode != 200 {
		return wire.PrefetchPlan{}, took, fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	p, err := wire.DecodePlan(body)
	return p, took, err
}

// fnProgress is a prefetch session's progress
// (GET /v1/prefetch/sessions/{plan_id}).
type fnProgress struct {
	Keys       int    `json:"keys"`
	Done       int    `json:"done"`
	Fetched    int    `json:"fetched"`
	Present    int    `json:"present"`
	Failed     int    `json:"failed"`
	Skipped    int    `json:"skipped"`
	Bytes      int64  `json:"bytes"`
	Finished   bool   `json:"finished"`
	StopReason string `json:"stop_reason"`
}

func fnSession(s *fleetSidecar, planID string) fnProgress {
	var p fnProgress
	resp, err := httpc.Get("http://" + s.planner + "/v1/prefetch/sessions/" + planID)
	if err != nil {
		return p
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		_ = json.NewDecoder(resp.Body).Decode(&p)
	}
	return p
}

// fnStoreObject is one object file of a sidecar's store.
type fnStoreObject struct {
	path, objectKey, cacheKey string
	pack                      bool
}

type fnStoreFiles struct {
	objects []fnStoreObject
	temps   []string
	// odd are files that are neither an object nor a temp file.
	odd []string
}

func (f fnStoreFiles) packs() int {
	n := 0
	for _, o := range f.objects {
		if o.pack {
			n++
		}
	}
	return n
}

// fnListStore lists a store directory's objects and temp files
// (sidecar/internal/store's layout: objects/{packs,manifests}/{shard}/
// {key}.{crate}{ext}, temp files named .tmp-*).
func fnListStore(t *testing.T, dir string) fnStoreFiles {
	t.Helper()
	var out fnStoreFiles
	for _, kind := range []struct {
		dir, ext string
		key      func(prefix, crate, key string) string
	}{{"packs", ".tar.zst", layout.PackKey}, {"manifests", ".json", layout.EntryManifestKey}} {
		root := filepath.Join(dir, "objects", kind.dir)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			name := d.Name()
			if strings.HasPrefix(name, ".tmp-") {
				out.temps = append(out.temps, path)
				return nil
			}
			key, crate, ok := strings.Cut(strings.TrimSuffix(name, kind.ext), ".")
			if !ok || !strings.HasSuffix(name, kind.ext) || !layout.ValidCacheKey(key) {
				out.odd = append(out.odd, path)
				return nil
			}
			out.objects = append(out.objects, fnStoreObject{path: path, objectKey: kind.key("artifacts", crate, key), cacheKey: key, pack: kind.dir == "packs"})
			return nil
		})
		must(t, err)
	}
	return out
}

// fnStoreCheck is a store directory against the bucket.
type fnStoreCheck struct {
	Objects, Temps int
	// Bad are objects whose bytes are not the bucket's (or the bucket has
	// none), or not what the builds uploaded, and files that are neither.
	Bad []string
}

// fnCheckStore compares every object in a store directory with the bucket
// and the registry.
func fnCheckStore(t *testing.T, f *fleet, dir string) fnStoreCheck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files := fnListStore(t, dir)
	c := fnStoreCheck{Objects: len(files.objects), Temps: len(files.temps), Bad: slices.Clone(files.odd)}
	for _, o := range files.objects {
		local, err := os.ReadFile(o.path)
		if errors.Is(err, fs.ErrNotExist) {
			c.Objects-- // evicted meanwhile
			continue
		}
		must(t, err)
		remote, err := faultBucketBytes(ctx, f, o.objectKey)
		sum := sha256Hex(local)
		want, known := f.reg.expected(o.objectKey)
		switch {
		case err != nil:
			c.Bad = append(c.Bad, fmt.Sprintf("%s: %d bytes, bucket: %v", o.objectKey, len(local), err))
		case sum != sha256Hex(remote):
			c.Bad = append(c.Bad, fmt.Sprintf("%s: %d bytes, the bucket's %d", o.objectKey, len(local), len(remote)))
		case !known || sum != want:
			c.Bad = append(c.Bad, fmt.Sprintf("%s: %d bytes, not what was uploaded", o.objectKey, len(local)))
		}
	}
	return c
}

// fnPoster posts build manifests to central from several clients, as
// runners without a sidecar do, and remembers which central acknowledged.
type fnPoster struct {
	url  string
	hc   *http.Client
	quit chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	acked    []fnPosted
	failed   int
	firstErr error
}

// fnPosted is one acknowledged manifest: its entries' crates and keys.
type fnPosted struct {
	crates, keys []string
}

type fnPostFigures struct {
	acked, failed int
	firstErr      error
}

func fnStartPoster(url string, clients int) *fnPoster {
	p := &fnPoster{url: url, quit: make(chan struct{}),
		hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}}
	for c := range clients {
		p.wg.Go(func() { p.run(c) })
	}
	return p
}

func (p *fnPoster) run(client int) {
	for n := 0; ; n++ {
		select {
		case <-p.quit:
			return
		default:
		}
		var m fnPosted
		entries := make([]wire.ManifestEntry, 4)
		for j := range entries {
			key := make([]byte, 32)
			_, _ = rand.Read(key)
			entries[j] = wire.ManifestEntry{CacheKey: hex.EncodeToString(key), CrateName: fmt.Sprintf("ckill_%d_%d_%d", client, n, j), CompileTimeMs: 1000 + uint64(j), ArtifactSize: 4096}
			m.crates = append(m.crates, entries[j].CrateName)
			m.keys = append(m.keys, entries[j].CacheKey)
		}
		body, _ := json.Marshal(wire.BuildManifest{Version: 3, Created: time.Now().UTC().Format(time.RFC3339Nano),
			ManifestKey: fmt.Sprintf("ckill-%d-%d", client, n), Entries: entries, Target: "x86_64-unknown-linux-gnu", Profile: "debug"})
		err := func() error {
			resp, err := p.hc.Post(p.url+"/v1/manifests", "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
			}
			return nil
		}()
		p.mu.Lock()
		if err == nil {
			p.acked = append(p.acked, m)
		} else {
			p.failed++
			if p.firstErr == nil {
				p.firstErr = err
			}
		}
		p.mu.Unlock()
		if err != nil {
			// Central is down: try again shortly, as a runner's retry would.
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (p *fnPoster) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	p.wg.Wait()
	p.hc.CloseIdleConnections()
}

func (p *fnPoster) figures() fnPostFigures {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fnPostFigures{acked: len(p.acked), failed: p.failed, firstErr: p.firstErr}
}

func (p *fnPoster) ackedManifests() []fnPosted {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acked)
}

// fnUnplanned asks central, for each acknowledged manifest, for a plan of
// its crates and returns those whose keys it does not all name.
func fnUnplanned(f *fleet, acked []fnPosted) []string {
	var (
		mu  sync.Mutex
		out []string
		wg  sync.WaitGroup
	)
	next := atomic.Int64{}
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(acked) {
					return
				}
				m := acked[i]
				intent, _ := json.Marshal(wire.BuildIntent{CrateNames: m.crates, Target: "x86_64-unknown-linux-gnu", Profile: "debug"})
				st, plan := f.central.plan(intent)
				named := map[string]bool{}
				for _, c := range plan.Candidates {
					named[c.CacheKey] = true
				}
				for j, k := range m.keys {
					if st != 200 || !named[k] {
						mu.Lock()
						out = append(out, fmt.Sprintf("%s %s (plan status %d)", m.crates[j], k, st))
						mu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	return out
}
