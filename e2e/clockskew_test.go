//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// skewedSidecar is one sidecar of the clock-skew scenario and the offset
// its clock runs at.
type skewedSidecar struct {
	name   string
	offset time.Duration
	sc     *s3Sidecar
	k      *kacheS3
}

// getSignedAt is the kache client's GET of key with the request signed at
// at instead of now: the status, the S3 error code of a refusal and the
// body of an answer.
func getSignedAt(ctx context.Context, k *kacheS3, key string, at time.Time) (int, string, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.endpoint, nil)
	if err != nil {
		return 0, "", nil, err
	}
	req.URL.Opaque = k.objectPath(key)
	req.Header.Set("x-amz-content-sha256", unsignedPayload)
	if err := k.signer.SignHTTP(ctx, k.creds, req, unsignedPayload, "s3", k.region, at); err != nil {
		return 0, "", nil, err
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := statusErr(resp).(*s3StatusError)
		return e.Status, e.Code, nil, nil
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, "", b, err
}

// planStamp is when a sidecar's own plan was made: its id is
// plan-{unix ms} with the surface's .{n} suffix.
func planStamp(t testing.TB, id string) time.Time {
	t.Helper()
	stamp, _, _ := strings.Cut(strings.TrimPrefix(id, "plan-"), ".")
	ms, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		t.Fatalf("plan id %q is not plan-{unix ms}: %v", id, err)
	}
	return time.UnixMilli(ms)
}

// sessionProgress polls a sidecar's prefetch session of planID until it
// has finished.
func sessionProgress(t testing.TB, addr, planID string) (map[string]any, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var p map[string]any
	ok := waitUntil(ctx, 100*time.Millisecond, func() bool {
		resp, err := httpc.Get("http://" + addr + "/v1/prefetch/sessions/" + planID)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		p = nil
		if json.NewDecoder(resp.Body).Decode(&p) != nil {
			return false
		}
		done, _ := p["finished"].(bool)
		return done
	})
	return p, ok
}

// TestFleetClockSkew (issue 12, clock_skew): two sidecars whose clocks run
// 10 minutes ahead of and behind the host's (KACHE_SIDECAR_CLOCK_OFFSET),
// and one on the host's clock, in front of one MinIO bucket and one
// central that learns only from the sidecars' reports (its crawl is an
// hour away). kache's build is uploaded through the sidecar 10 minutes
// ahead and then run again, the same entries and intent, through all
// three. Asserted: every acknowledged upload is in the bucket with its
// bytes; central ingests the skewed sidecar's reports and the three
// sidecars answer the same intent with the same candidates in the same
// order, as central does; each sidecar's own plans are dated by its clock;
// every read returns the bytes uploaded (sha256, and the pack decodes);
// each sidecar accepts requests signed within 15 minutes of its clock
// (kache's, signed with the host's, among them) and refuses the rest with
// RequestTimeTooSkewed; prefetch sessions and a warm through the skewed
// sidecar complete; its session timeline reaches central at shutdown.
func TestFleetClockSkew(t *testing.T) {
	// The binaries are built first, so the duration is the scenario's.
	serviceBin(t)
	sidecarBin(t)
	var (
		builds, finished, corrupt, lost, errs int
		acked, localReads, upstreamReads      int
		sigAccepted, sigRefused               int
		ingest                                time.Duration
		candidates, fetchedBehind             int
		warmDone, timelines                   int
		began                                 = time.Now()
	)
	recordScenario(t, "clock_skew", func(r *scenarioResult) {
		r.Builds, r.BuildsFinished, r.CorruptServed, r.AckedLost, r.Errors = intp(builds), intp(finished), intp(corrupt), intp(lost), intp(errs)
		r.set("clock_offsets", "+10m,0,-10m")
		r.set("uploads_acked", acked)
		r.set("central_ingest_s", ingest.Seconds())
		r.set("plan_candidates", candidates)
		r.set("prefetched_behind", fetchedBehind)
		r.set("local_reads", localReads)
		r.set("upstream_reads", upstreamReads)
		r.set("sigv4_accepted", sigAccepted)
		r.set("sigv4_refused_skewed", sigRefused)
		r.set("warm_finished", warmDone)
		r.set("timelines_ingested", timelines)
		r.set("duration_s", time.Since(began).Seconds())
	})
	ctx := context.Background()
	o := startMinio(t)
	// The crawl lists the empty bucket at startup and not again for an
	// hour: what central plans, it learned from the sidecars.
	central := startRetentionCentral(t, o.env(), "--s3-bucket", testBucket, "--s3-endpoint", o.endpoint, "--s3-crawl-interval", "1h")
	fleet := []*skewedSidecar{{name: "ahead", offset: 10 * time.Minute}, {name: "plain"}, {name: "behind", offset: -10 * time.Minute}}
	for _, s := range fleet {
		var env []string
		if s.offset != 0 {
			env = append(env, "KACHE_SIDECAR_CLOCK_OFFSET="+s.offset.String())
		}
		s.sc = startS3Sidecar(t, o, central.addr, env...)
		s.k = newKacheS3(t, s.sc.endpoint, testBucket, localAccessKey, localSecretKey)
	}
	ahead, plain, behind := fleet[0], fleet[1], fleet[2]

	names := make([]string, 0, len(kacheCrates))
	for _, c := range kacheCrates {
		names = append(names, strconv.Quote(c.pkg))
	}
	intent := `{"crate_names":[` + strings.Join(names, ",") + `],"namespace":null,"cargo_lock_deps":[]}`

	// Nothing is known yet: each sidecar answers with its own plan, dated
	// by its own clock.
	for _, s := range fleet {
		p, _ := s.sc.plan(t, intent)
		if p.Disposition != wire.UseFallback {
			t.Fatalf("%s: first plan %+v, want use_fallback", s.name, p)
		}
		if d := planStamp(t, p.PlanID).Sub(time.Now()) - s.offset; d < -30*time.Second || d > 30*time.Second {
			t.Errorf("%s: its plan %s is dated %s off its clock (offset %s)", s.name, p.PlanID, d, s.offset)
		}
	}

	// The build, through the sidecar 10 minutes ahead: kache checks each
	// entry with a HEAD, uploads what is missing (pack, then entry
	// manifest), then its build manifest and the namespace's shards, all
	// signed with the host's clock.
	var entries []kacheEntry
	for i, c := range kacheCrates {
		entries = append(entries, newKacheEntry(t, c.crate, uint64(500+i), (48+i*32)<<10))
	}
	ackedObjects := map[string][]byte{}
	put := func(k *kacheS3, key string, body []byte, contentType string) bool {
		if err := k.Put(ctx, key, body, contentType); err != nil {
			errs++
			t.Errorf("PUT %s through the skewed sidecar: %v", key, err)
			return false
		}
		ackedObjects[key] = body
		acked++
		return true
	}
	builds++
	ok := true
	for _, e := range entries {
		there, err := ahead.k.Exists(ctx, e.manifestKey())
		if err != nil || there {
			errs++
			t.Fatalf("HEAD %s in an empty bucket: %v %v", e.manifestKey(), there, err)
		}
		ok = put(ahead.k, e.packKey(), e.pack, "") && put(ahead.k, e.manifestKey(), e.manifest, "application/json") && ok
	}
	bm := buildManifestOf(entries)
	bmKey := layout.BuildManifestKey("artifacts", "x86_64-unknown-linux-gnu")
	ok = put(ahead.k, bmKey, bm, "application/json") && ok
	const ns = "ci-main"
	for key, body := range shardObjectsOf(ns, kacheLockDeps(), entries) {
		ok = put(ahead.k, key, body, "application/json") && ok
	}
	if ok {
		finished++
	}
	// checkAcked counts acknowledged uploads the bucket does not hold byte
	// for byte.
	checkAcked := func() int {
		n := 0
		for key, body := range ackedObjects {
			if got, _ := minioBytes(t, o, testBucket, key); !bytes.Equal(got, body) {
				n++
				t.Errorf("%s: acknowledged through the skewed sidecar, MinIO holds %d bytes, the client put %d", key, len(got), len(body))
			}
		}
		return n
	}
	lost = checkAcked()

	// Central learns the build from the skewed sidecar's reports (its
	// observed packs, dated by its clock, and the forwarded manifests).
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var want wire.PrefetchPlan
	if !waitUntil(wctx, 100*time.Millisecond, func() bool {
		st, p := central.planFor(intent)
		want = p
		return st == 200 && len(p.Candidates) == len(entries)
	}) {
		t.Fatalf("central plans %d of the %d entries uploaded through the skewed sidecar\n%s\n%s",
			len(want.Candidates), len(entries), central.p.Tail(20), ahead.sc.p.Tail(20))
	}
	ingest = time.Since(start)
	for _, e := range entries {
		if !slices.ContainsFunc(want.Candidates, func(c wire.PrefetchCandidate) bool { return c.CacheKey == e.key && c.CrateName == e.crate }) {
			t.Fatalf("central plans %v, not the uploaded %s/%s", candidateKeys(want), e.crate, e.key)
		}
	}
	// Observed packs are sent in batches, every 2 s.
	if !waitUntil(wctx, 100*time.Millisecond, func() bool {
		return ahead.sc.metricValue(t, `kache_sidecar_report_total{kind="pack",result="sent"}`) == float64(len(entries))
	}) {
		t.Errorf("the skewed sidecar reported %v packs, want %d",
			ahead.sc.metricValue(t, `kache_sidecar_report_total{kind="pack",result="sent"}`), len(entries))
	}
	if v := ahead.sc.metricValue(t, `kache_sidecar_report_total{kind="manifest",result="sent"}`); v < 1 {
		t.Errorf("the skewed sidecar forwarded %v build manifests, want 1", v)
	}
	for _, s := range []*skewedSidecar{plain, behind} {
		for _, kind := range []string{"pack", "manifest", "shard"} {
			if v := s.sc.metricValue(t, `kache_sidecar_report_total{kind="`+kind+`",result="sent"}`); v != 0 {
				t.Errorf("%s reported %v %ss: only the skewed sidecar saw uploads", s.name, v, kind)
			}
		}
	}

	// The same intent through each sidecar: the same candidates in the
	// same order, central's; each execute plan starts a prefetch session.
	candidates = len(want.Candidates)
	plans := map[string]wire.PrefetchPlan{}
	for _, s := range fleet {
		p, _ := s.sc.plan(t, intent)
		plans[s.name] = p
		if p.Disposition != wire.Execute || !slices.Equal(candidateKeys(p), candidateKeys(want)) {
			t.Errorf("%s plans %s %v, central %v", s.name, p.Disposition, candidateKeys(p), candidateKeys(want))
		}
	}
	for _, s := range fleet {
		p, ok := sessionProgress(t, s.sc.addr, plans[s.name].PlanID)
		if !ok {
			errs++
			t.Errorf("%s: the prefetch session of %s did not finish: %v", s.name, plans[s.name].PlanID, p)
			continue
		}
		num := func(f string) int { v, _ := p[f].(float64); return int(v) }
		if num("keys") != len(entries) || num("done") != len(entries) || num("failed")+num("not_found")+num("skipped") != 0 ||
			num("elapsed_ms") < 0 || num("elapsed_ms") > 60_000 {
			t.Errorf("%s: prefetch session %v", s.name, p)
		}
		if s == behind {
			fetchedBehind = num("fetched")
		}
	}
	if fetchedBehind != len(entries) {
		t.Errorf("the sidecar 10 minutes behind prefetched %d packs, want all %d", fetchedBehind, len(entries))
	}

	// The same build through every sidecar: each entry is there (HEAD),
	// its pack is restored with the bytes uploaded.
	want256 := map[string]string{}
	for _, e := range entries {
		want256[e.packKey()] = sha256Hex(e.pack)
	}
	want256[bmKey] = sha256Hex(bm)
	for _, s := range fleet {
		if s != ahead {
			builds++
		}
		local0, up0 := s.sc.reads(t)
		ok := true
		for _, e := range entries {
			there, err := s.k.Exists(ctx, e.manifestKey())
			if err != nil || !there {
				ok = false
				errs++
				t.Errorf("%s: HEAD %s: %v %v", s.name, e.manifestKey(), there, err)
				continue
			}
			got, err := s.k.Get(ctx, e.packKey())
			if err != nil {
				ok = false
				errs++
				t.Errorf("%s: GET %s: %v", s.name, e.packKey(), err)
				continue
			}
			if sha256Hex(got) != want256[e.packKey()] || checkPack(got, e.crate, e.key) != nil {
				ok = false
				corrupt++
				t.Errorf("%s: GET %s served other bytes than were uploaded", s.name, e.packKey())
			}
		}
		if got, err := s.k.Get(ctx, bmKey); err != nil || sha256Hex(got) != want256[bmKey] {
			ok = false
			if err != nil {
				errs++
			} else {
				corrupt++
			}
			t.Errorf("%s: GET of the build manifest: %v", s.name, err)
		}
		local1, up1 := s.sc.reads(t)
		localReads += int(local1 - local0)
		upstreamReads += int(up1 - up0)
		if s != ahead && ok {
			finished++
		}
	}

	// SigV4: each sidecar accepts what was signed within 15 minutes of its
	// own clock and refuses the rest as S3 does. kache signs with the
	// host's clock: within the window of all three.
	for _, s := range fleet {
		for _, signed := range []time.Duration{-20 * time.Minute, -6 * time.Minute, 6 * time.Minute, 20 * time.Minute} {
			skew := signed - s.offset
			accept := skew > -15*time.Minute && skew < 15*time.Minute
			st, code, body, err := getSignedAt(ctx, s.k, bmKey, time.Now().Add(signed))
			switch {
			case err != nil:
				errs++
				t.Errorf("%s: GET signed %s off the host's clock: %v", s.name, signed, err)
			case accept && (st != http.StatusOK || sha256Hex(body) != want256[bmKey]):
				t.Errorf("%s (clock %s): GET signed %s off the host's clock: status %d %s, want the object", s.name, s.offset, signed, st, code)
			case !accept && (st != http.StatusForbidden || code != "RequestTimeTooSkewed"):
				t.Errorf("%s (clock %s): GET signed %s off the host's clock: status %d %q, want 403 RequestTimeTooSkewed", s.name, s.offset, signed, st, code)
			case accept:
				sigAccepted++
			default:
				sigRefused++
			}
		}
	}

	// warm through the skewed sidecar: the job's plan is answered and its
	// prefetch session completes.
	ws := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ws, "Cargo.lock"), []byte(kacheLock()), 0o644))
	out, err := exec.Command(sidecarBin(t), "warm", "--workspace", ws, "--planner-listen", ahead.sc.addr,
		"--store-dir", t.TempDir(), "--progress", "never", "--strict", "--timeout", "30s").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(`"via":"sidecar"`)) || !bytes.Contains(out, []byte(`"msg":"warm done"`)) {
		errs++
		t.Errorf("warm through the skewed sidecar: %v\n%s", err, out)
	} else {
		warmDone++
	}

	// At shutdown the skewed sidecar reports its sessions' timelines (dated
	// by its clock); central takes them.
	timelines0 := central.metricValue(t, `kache_planner_build_timelines_total{outcome="inserted"}`)
	must(t, ahead.sc.p.Signal(syscall.SIGTERM))
	select {
	case <-ahead.sc.p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the skewed sidecar did not stop on SIGTERM")
	}
	if code := ahead.sc.p.ExitCode(); code != 0 {
		t.Errorf("the skewed sidecar exited %d:\n%s", code, ahead.sc.p.Tail(20))
	}
	timelines = int(central.metricValue(t, `kache_planner_build_timelines_total{outcome="inserted"}`) - timelines0)
	if timelines < 1 {
		t.Errorf("central stored no timeline from the skewed sidecar's sessions")
	}

	// Nothing acknowledged went missing meanwhile.
	lost = checkAcked()
	t.Logf("clock skew: %d uploads acknowledged, central planned them %s later; %d candidates, the same through all three sidecars; %d local and %d upstream reads; SigV4 %d accepted, %d refused as skewed",
		acked, ingest.Round(10*time.Millisecond), candidates, localReads, upstreamReads, sigAccepted, sigRefused)
}
