//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// The load scenario's shape (issue 12). Constants, so that CI runs the same
// load every time.
const (
	loadWindow   = 20 * time.Second
	loadPlanners = 200 // concurrent plan requesters, closed loop
	loadStreams  = 64  // concurrent S3 clients, closed loop
	// loadCrates have a pack and an entry manifest in the bucket and a key
	// in the seeded build manifests: central plans them and the sidecar
	// prefetches them.
	loadCrates = 320
	// loadCold packs are only in the bucket (no build names them): their
	// first GET through the sidecar is a read-through.
	loadCold = 128
	// loadNew entries are real packs PUT through the sidecar during the run
	// (builds uploading), with their entry manifests.
	loadNew = 160
	// loadBuildEvery is how often a build manifest lands (10 builds/s).
	loadBuildEvery = 100 * time.Millisecond
	// loadFreshIntents is the share (in %) of plan requests whose intent the
	// sidecar has never seen (another branch's workspace): the answer comes
	// from central, not from the hint cache.
	loadFreshIntents = 5
	// kache's planner budget (kache-protocol.md 3.1): an answer later
	// than this is a timeout, so an error.
	kachePlanTimeout = 750 * time.Millisecond
)

// The goals of issue 12. Latency is a figure this scenario prints and
// records against its goal, not an assertion: on CI's two shared cores,
// with the race-instrumented load generator taking half of them, it
// measures the machine as much as the product (the closing figures of the
// run say how the CPU was shared). What is asserted holds on any machine:
// no wrong answer, no failed request other than a plan kache would have
// given up on, and the sidecar's memory bound.
const (
	loadGoalPlanP99 = 100 * time.Millisecond
	loadGoalRSS     = 128 << 20
)

// loadObject is an object of the bucket the S3 clients read, with the
// sha256 every read of it must have.
type loadObject struct {
	key  string
	size int64
	sum  [32]byte
}

// loadPack is a seeded pack: its body is a header naming it followed by a
// slice of a shared random buffer, so hundreds of MiB of distinct packs cost
// no memory of their own.
type loadPack struct {
	crate, cacheKey string
	pack, manifest  loadObject
	header          []byte
	from            int // offset of the body's tail in the shared buffer
	manifestBody    []byte
	compileMs       uint64
}

func (p *loadPack) body(src []byte) io.Reader {
	return io.MultiReader(bytes.NewReader(p.header), bytes.NewReader(src[p.from:p.from+int(p.pack.size)-len(p.header)]))
}

// newLoadPacks makes n packs named crate<i> with sizes spread log-uniformly
// over [minSize, maxSize], as a workspace's artifacts are: most small, a few
// of several MiB.
func newLoadPacks(src []byte, prefix string, n int, minSize, maxSize float64, seed uint64) []*loadPack {
	rng := rand.New(rand.NewPCG(seed, 12))
	out := make([]*loadPack, n)
	for i := range out {
		size := int64(math.Exp(math.Log(minSize) + rng.Float64()*(math.Log(maxSize)-math.Log(minSize))))
		p := &loadPack{crate: fmt.Sprintf("%s_%03d", prefix, i), compileMs: uint64(200 + rng.IntN(20_000))}
		sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%d", prefix, i, seed))
		p.cacheKey = fmt.Sprintf("%x", sum)
		// zstd's magic first, as kache's packs start.
		p.header = fmt.Appendf([]byte{0x28, 0xb5, 0x2f, 0xfd}, "%s/%s;", p.crate, p.cacheKey)
		p.from = rng.IntN(len(src) - int(size))
		p.pack = loadObject{key: layout.PackKey("artifacts", p.crate, p.cacheKey), size: size}
		h := sha256.New()
		_, _ = io.Copy(h, p.body(src))
		h.Sum(p.pack.sum[:0])
		p.manifestBody, _ = json.Marshal(wire.EntryManifest{Version: 3, CacheKey: p.cacheKey, CrateName: p.crate,
			PackKey: p.pack.key, PackBytes: uint64(size), OriginalBytes: uint64(2 * size), FileCount: 3})
		p.manifest = loadObject{key: layout.EntryManifestKey("artifacts", p.crate, p.cacheKey), size: int64(len(p.manifestBody)), sum: sha256.Sum256(p.manifestBody)}
		out[i] = p
	}
	return out
}

// loadSeed writes packs and their entry manifests straight into MinIO with
// its own client, 8 at a time.
func loadSeed(t *testing.T, o *objectStore, src []byte, packs []*loadPack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	next := atomic.Int64{}
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(packs) || failed.Load() != nil {
					return
				}
				p := packs[i]
				_, err := o.client.PutObject(ctx, testBucket, p.pack.key, p.body(src), p.pack.size, minio.PutObjectOptions{})
				if err == nil {
					_, err = o.client.PutObject(ctx, testBucket, p.manifest.key, bytes.NewReader(p.manifestBody), p.manifest.size,
						minio.PutObjectOptions{ContentType: "application/json"})
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("seed the bucket: %v", *err)
	}
}

// loadWorkspaces are the crates (indexes into the seeded packs) of the
// build manifests seeded and landing: four workspaces sharing most of
// their dependencies.
func loadWorkspaces() [][]int {
	ws := make([][]int, 4)
	for w := range ws {
		for i := range 260 {
			ws[w] = append(ws[w], (w*20+i)%loadCrates)
		}
	}
	return ws
}

func loadBuildManifest(at time.Time, packs []*loadPack, crates []int, extra []kacheEntry) wire.BuildManifest {
	m := wire.BuildManifest{Version: 3, Created: at.UTC().Format(time.RFC3339Nano), ManifestKey: "x86_64-unknown-linux-gnu"}
	for _, i := range crates {
		p := packs[i]
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: p.cacheKey, CrateName: p.crate, CompileTimeMs: p.compileMs, ArtifactSize: uint64(p.pack.size)})
	}
	for _, e := range extra {
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: e.key, CrateName: e.crate, CompileTimeMs: e.compileMs, ArtifactSize: uint64(len(e.pack))})
	}
	return m
}

// loadIntent is one of the workspaces kache asks plans for: its request
// body in kache's wire shape, and the quoted package names it is made of
// (to make unseen variants of it cheaply).
type loadIntent struct {
	body  []byte
	names [][]byte
	ns    bool
}

// loadIntents are six workspaces of 100 to 500 packages, in Cargo package
// names (hyphens: the sidecar maps them to crate names). Those over 320 hold
// workspace packages no cache has. The largest sets KACHE_NAMESPACE, so it
// also carries its Cargo.lock.
func loadIntents() []loadIntent {
	sizes := []int{100, 180, 260, 320, 420, 500}
	out := make([]loadIntent, len(sizes))
	for n, size := range sizes {
		var in wire.BuildIntent
		in.CargoLockDeps = []wire.LockDep{}
		for i := range size {
			name := fmt.Sprintf("crate-%03d", (n*37+i)%loadCrates)
			if i >= loadCrates {
				name = fmt.Sprintf("member-%d-%03d", n, i)
			}
			in.CrateNames = append(in.CrateNames, name)
		}
		if n == len(sizes)-1 {
			ns := "ci-main"
			in.Namespace = &ns
			for _, name := range in.CrateNames {
				in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: name, Version: "1.0." + strconv.Itoa(len(name))})
			}
			slices.SortFunc(in.CargoLockDeps, func(a, b wire.LockDep) int { return strings.Compare(a.Name, b.Name) })
		}
		body, _ := json.Marshal(in)
		out[n].body, out[n].ns = body, in.Namespace != nil
		for _, name := range in.CrateNames {
			out[n].names = append(out[n].names, strconv.AppendQuote(nil, name))
		}
	}
	return out
}

// variant is the intent without its package number skip: a workspace the
// sidecar has no hint for.
func (in *loadIntent) variant(buf *bytes.Buffer, skip int) []byte {
	buf.Reset()
	buf.WriteString(`{"crate_names":[`)
	first := true
	for i, n := range in.names {
		if i == skip {
			continue
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		buf.Write(n)
	}
	buf.WriteString(`],"namespace":null,"cargo_lock_deps":[]}`)
	return buf.Bytes()
}

// latencies collects one operation's durations from many goroutines.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

// quantile is the q-quantile (0 when nothing was measured).
func (l *latencies) quantile(q float64) time.Duration {
	if len(l.all) == 0 {
		return 0
	}
	slices.Sort(l.all)
	return l.all[min(len(l.all)-1, int(q*float64(len(l.all))))]
}

// loadErrors counts failures and keeps the first few for the log.
type loadErrors struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
}

func (e *loadErrors) add(format string, args ...any) {
	if e.n.Add(1) <= 10 {
		e.mu.Lock()
		e.first = append(e.first, fmt.Sprintf(format, args...))
		e.mu.Unlock()
	}
}

// loadS3Op is one kind of S3 request the streams make.
type loadS3Op int

const (
	opGetPack loadS3Op = iota
	opGetManifest
	opHead
	opHeadAbsent
	opGetAbsent
	opGetCold
	opPut
	opGetPut
	loadS3Ops
)

var loadS3OpNames = [loadS3Ops]string{"get_pack", "get_manifest", "head", "head_404", "get_404", "get_cold", "put", "get_put"}

// loadS3Mix is each op's share of a stream's requests, in % (a build
// restoring: mostly pack GETs and existence HEADs, a few misses, a few
// uploads).
var loadS3Mix = [loadS3Ops]int{opGetPack: 44, opGetManifest: 8, opHead: 18, opHeadAbsent: 10, opGetAbsent: 2, opGetCold: 6, opPut: 5, opGetPut: 7}

// TestFleetLoad is issue 12's load scenario: a real MinIO, a real central
// and one real sidecar (S3 surface on, asking central), under 200
// concurrent plan requests and 64 concurrent S3 streams for a fixed time
// while builds land in central. Goals: no errors (a non-2xx answer other
// than an expected 404, a transport error, a plan kache would reject or a
// body whose sha256 is not the object's), plan p99 under 100 ms, sidecar
// peak RSS under 128 MiB.
//
// CI runs the suite with -race; the goals are about the product, so
// central and the sidecar run as binaries built without the race detector
// (plainBin), as they ship. The load generator (this race-instrumented test
// process) shares the machine's cores with them; its CPU share is logged.
func TestFleetLoad(t *testing.T) {
	var (
		planLat, buildLat latencies
		s3Lat             [loadS3Ops]latencies
		errs              loadErrors
		plans, fallbacks  atomic.Int64
		timeouts          atomic.Int64
		s3Ops             [loadS3Ops]atomic.Int64
		s3Bytes, builds   atomic.Int64
		peakSidecar       atomic.Int64
		peakCentral       atomic.Int64
		window            time.Duration
		measured          bool
	)
	recordScenario(t, "load", func(r *scenarioResult) {
		if !measured {
			return
		}
		r.PlanP99Ms = floatp(ms(planLat.quantile(0.99)))
		r.Errors = intp(int(errs.n.Load()))
		r.PeakRSSMiB = floatp(float64(peakSidecar.Load()) / (1 << 20))
		r.set("plans_per_s", float64(plans.Load())/window.Seconds())
		r.set("plan_timeouts", int(timeouts.Load()))
		r.set("goal_plan_p99_met", planLat.quantile(0.99) < loadGoalPlanP99 && timeouts.Load() == 0)
		r.set("plan_p50_ms", ms(planLat.quantile(0.5)))
		var ops int64
		for i := range s3Ops {
			ops += s3Ops[i].Load()
		}
		r.set("s3_ops_per_s", float64(ops)/window.Seconds())
		r.set("s3_mib_per_s", float64(s3Bytes.Load())/(1<<20)/window.Seconds())
		r.set("s3_get_pack_p99_ms", ms(s3Lat[opGetPack].quantile(0.99)))
		r.set("s3_head_p99_ms", ms(s3Lat[opHead].quantile(0.99)))
		r.set("builds_landed", int(builds.Load()))
		r.set("central_peak_rss_mib", float64(peakCentral.Load())/(1<<20))
	})

	o := startMinio(t)
	src := randomBytes(8<<20, 12)
	packs := newLoadPacks(src, "crate", loadCrates, 16<<10, 4<<20, 1)
	cold := newLoadPacks(src, "cold", loadCold, 16<<10, 1<<20, 2)
	loadSeed(t, o, src, append(slices.Clone(packs), cold...))
	workspaces := loadWorkspaces()
	seeded := time.Now().Add(-time.Hour)
	for w, crates := range workspaces {
		o.putManifest(t, fmt.Sprintf("ws-%d", w), loadBuildManifest(seeded.Add(time.Duration(w)*time.Minute), packs, crates, nil))
	}
	var total int64
	for _, p := range packs {
		total += p.pack.size
	}
	t.Logf("seeded %d packs (%.0f MiB, 16 KiB-4 MiB), %d cold packs, %d build manifests", len(packs), float64(total)/(1<<20), len(cold), len(workspaces))

	// Builds uploading through the sidecar during the run: real packs.
	fresh := make([]kacheEntry, loadNew)
	for i := range fresh {
		fresh[i] = newKacheEntry(t, fmt.Sprintf("landed_%03d", i), uint64(1000+i), (16+i%8*16)<<10)
	}
	freshSum := make([][32]byte, len(fresh))
	for i, e := range fresh {
		freshSum[i] = sha256.Sum256(e.pack)
	}

	central := startLoadCentral(t, o)
	sc := startLoadSidecar(t, o, central.addr)
	// A few manifests straight to central too, as other runners post them.
	for w, crates := range workspaces {
		central.postManifest(t, loadBuildManifest(seeded.Add(time.Duration(30+w)*time.Minute), packs, crates, nil))
	}

	intents := loadIntents()
	planURL := "http://" + sc.addr + "/v2/prefetch-plan"
	// kache opens a new connection per plan request; 200 clients in a
	// closed loop doing that would run loopback out of ephemeral ports
	// (TIME_WAIT), so these keep theirs.
	planTr := &http.Transport{MaxIdleConns: 2 * loadPlanners, MaxIdleConnsPerHost: 2 * loadPlanners, DisableCompression: true}
	t.Cleanup(planTr.CloseIdleConnections)
	planClient := &http.Client{Transport: planTr, Timeout: kachePlanTimeout}

	// Warm-up, as a fleet's steady state: each workspace planned once
	// (central answers, the sidecar keeps hints) and its prefetch done, so
	// the window starts with the planned packs local.
	for i := range intents {
		st, body := loadPost(planClient, planURL, intents[i].body, nil)
		if st != 200 {
			t.Fatalf("warm-up plan %d: status %d: %s", i, st, body)
		}
		p, err := wire.DecodePlan(body)
		if err != nil || p.Disposition != wire.Execute || len(p.Candidates) == 0 {
			t.Fatalf("warm-up plan %d: %v %s, %d candidates", i, err, p.Disposition, len(p.Candidates))
		}
		waitSession(t, sc, p.PlanID, time.Minute)
	}

	k := &kacheS3{
		endpoint: sc.endpoint, bucket: testBucket, region: testenv.MinioRegion,
		creds:  aws.Credentials{AccessKeyID: localAccessKey, SecretAccessKey: localSecretKey},
		signer: v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }),
	}
	s3Tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 3100 * time.Millisecond}).DialContext,
		MaxIdleConnsPerHost: 2 * loadStreams, ResponseHeaderTimeout: 30 * time.Second, DisableCompression: true,
		ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10,
	}
	t.Cleanup(s3Tr.CloseIdleConnections)
	k.http = &http.Client{Transport: s3Tr, Timeout: time.Minute}

	local0, up0 := sc.reads(t)
	reported := func() (manifests, packs float64) {
		return sc.metricValue(t, `kache_sidecar_report_total{kind="manifest",result="sent"}`),
			sc.metricValue(t, `kache_sidecar_report_total{kind="pack",result="sent"}`)
	}
	fwdM0, fwdP0 := reported()
	selfCPU0, sidecarCPU0, centralCPU0 := procCPU(t, os.Getpid()), procCPU(t, sc.p.Pid()), procCPU(t, central.p.Pid())

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup

	// RSS of both servers every 100 ms.
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, s := range []struct {
				pid  int
				peak *atomic.Int64
			}{{sc.p.Pid(), &peakSidecar}, {central.p.Pid(), &peakCentral}} {
				if rss, err := vmRSS(s.pid); err == nil && rss > s.peak.Load() {
					s.peak.Store(rss)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})

	// Plan requesters.
	var freshSeq atomic.Int64
	for g := range loadPlanners {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			var resp, variant bytes.Buffer
			lat := make([]time.Duration, 0, 512)
			defer func() { planLat.add(lat) }()
			for n := 0; ctx.Err() == nil; n++ {
				in := &intents[rng.IntN(len(intents))]
				body := in.body
				if !in.ns && rng.IntN(100) < loadFreshIntents {
					body = in.variant(&variant, int(freshSeq.Add(1))%len(in.names))
				}
				start := time.Now()
				st, b := loadPost(planClient, planURL, body, &resp)
				took := time.Since(start)
				if ctx.Err() != nil && st == 0 {
					return // cut off by the end of the window
				}
				lat = append(lat, took)
				plans.Add(1)
				switch {
				case st == 0 && took >= kachePlanTimeout-10*time.Millisecond:
					// kache gives up and plans locally: a latency
					// outcome, counted against the latency goal.
					timeouts.Add(1)
				case st != 200:
					errs.add("plan: status %d: %.200s", st, b)
				case bytes.Contains(b, []byte(`"disposition":"use_fallback"`)):
					fallbacks.Add(1)
				case !bytes.Contains(b, []byte(`"disposition":"execute"`)) || !bytes.Contains(b, []byte(`"cache_key"`)):
					errs.add("plan: not an execute plan with candidates: %.200s", b)
				case n%50 == 0:
					// Now and then, decode it as kache would.
					if p, err := wire.DecodePlan(b); err != nil {
						errs.add("plan: kache would reject it: %v", err)
					} else if bad := invalidCandidate(p); bad != "" {
						errs.add("plan: %s", bad)
					}
				}
			}
		})
	}

	// S3 streams.
	var putNext, coldNext atomic.Int64
	putDone := make([]atomic.Bool, len(fresh))
	var cum [loadS3Ops]int
	for i, w := range loadS3Mix {
		cum[i] = w
		if i > 0 {
			cum[i] += cum[i-1]
		}
	}
	for g := range loadStreams {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			buf := make([]byte, 256<<10)
			var lat [loadS3Ops][]time.Duration
			defer func() {
				for i := range lat {
					s3Lat[i].add(lat[i])
				}
			}()
			for ctx.Err() == nil {
				r := rng.IntN(cum[loadS3Ops-1])
				op := loadS3Op(0)
				for r >= cum[op] {
					op++
				}
				start := time.Now()
				var n int64
				var err error
				switch op {
				case opGetPack:
					n, err = loadGet(ctx, k, &packs[rng.IntN(len(packs))].pack, buf)
				case opGetManifest:
					n, err = loadGet(ctx, k, &packs[rng.IntN(len(packs))].manifest, buf)
				case opHead:
					err = loadHead(ctx, k, packs[rng.IntN(len(packs))].manifest.key, true)
				case opHeadAbsent:
					key := layout.EntryManifestKey("artifacts", "crate_"+strconv.Itoa(rng.IntN(loadCrates)), fmt.Sprintf("%064x", rng.Uint64()))
					err = loadHead(ctx, k, key, false)
				case opGetAbsent:
					obj := loadObject{key: layout.PackKey("artifacts", "crate_"+strconv.Itoa(rng.IntN(loadCrates)), fmt.Sprintf("%064x", rng.Uint64())), size: -1}
					n, err = loadGet(ctx, k, &obj, buf)
				case opGetCold:
					// Each cold pack once in order (a read-through), then
					// again at random (a local hit).
					i := int(coldNext.Add(1) - 1)
					if i >= len(cold) {
						i = rng.IntN(len(cold))
					}
					n, err = loadGet(ctx, k, &cold[i].pack, buf)
				case opPut:
					i := int(putNext.Add(1) - 1)
					if i >= len(fresh) {
						op = opGetPack
						n, err = loadGet(ctx, k, &packs[rng.IntN(len(packs))].pack, buf)
						break
					}
					if err = k.uploadEntry(ctx, fresh[i]); err == nil {
						n = int64(len(fresh[i].pack) + len(fresh[i].manifest))
						putDone[i].Store(true)
					}
				case opGetPut:
					i := rng.IntN(max(1, min(int(putNext.Load()), len(fresh))))
					if !putDone[i].Load() {
						op = opGetPack
						n, err = loadGet(ctx, k, &packs[rng.IntN(len(packs))].pack, buf)
						break
					}
					obj := loadObject{key: fresh[i].packKey(), size: int64(len(fresh[i].pack)), sum: freshSum[i]}
					n, err = loadGet(ctx, k, &obj, buf)
				}
				took := time.Since(start)
				if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
					return // cut off by the end of the window
				}
				if err != nil {
					errs.add("s3 %s: %v", loadS3OpNames[op], err)
					continue
				}
				lat[op] = append(lat[op], took)
				s3Ops[op].Add(1)
				s3Bytes.Add(n)
			}
		})
	}

	// Builds landing: a build manifest every 100 ms, alternately uploaded
	// through the sidecar's S3 surface (kache save-manifest; the sidecar
	// forwards it to central) and posted to central (a runner without a
	// sidecar... or another sidecar).
	centralClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	wg.Go(func() {
		tick := time.NewTicker(loadBuildEvery)
		defer tick.Stop()
		var lat []time.Duration
		defer func() { buildLat.add(lat) }()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// The workspace's keys (a build that hit the cache) plus the
			// entries uploaded lately.
			var extra []kacheEntry
			for i := min(int(putNext.Load()), len(fresh)) - 1; i >= 0 && len(extra) < 8; i-- {
				if putDone[i].Load() {
					extra = append(extra, fresh[i])
				}
			}
			m := loadBuildManifest(time.Now(), packs, workspaces[n%len(workspaces)], extra)
			start := time.Now()
			var err error
			if n%2 == 0 {
				b, _ := json.MarshalIndent(m, "", "  ")
				err = k.Put(ctx, layout.BuildManifestKey("artifacts", fmt.Sprintf("load-build-%04d", n)), b, "application/json")
			} else {
				b, _ := json.Marshal(m)
				var resp *http.Response
				if resp, err = centralClient.Post(central.addr+"/v1/manifests", "application/json", bytes.NewReader(b)); err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
					}
				}
			}
			if err != nil && ctx.Err() != nil {
				return
			}
			if err != nil {
				errs.add("build %d: %v", n, err)
				continue
			}
			lat = append(lat, time.Since(start))
			builds.Add(1)
		}
	})

	start := time.Now()
	time.Sleep(loadWindow)
	stop()
	wg.Wait()
	window = time.Since(start)
	measured = true
	centralClient.CloseIdleConnections()

	selfCPU, sidecarCPU, centralCPU := procCPU(t, os.Getpid())-selfCPU0, procCPU(t, sc.p.Pid())-sidecarCPU0, procCPU(t, central.p.Pid())-centralCPU0
	hwm := procStatus(t, sc.p.Pid(), "VmHWM")
	peakSidecar.Store(max(peakSidecar.Load(), hwm))
	peakCentral.Store(max(peakCentral.Load(), procStatus(t, central.p.Pid(), "VmHWM")))
	local1, up1 := sc.reads(t)
	fwdM1, fwdP1 := reported()

	var ops int64
	var opLines []string
	for i := range s3Ops {
		n := s3Ops[i].Load()
		ops += n
		opLines = append(opLines, fmt.Sprintf("%s %d p50 %.1f p99 %.1f ms", loadS3OpNames[i], n, ms(s3Lat[i].quantile(0.5)), ms(s3Lat[i].quantile(0.99))))
	}
	cpu := selfCPU + sidecarCPU + centralCPU
	t.Logf("load over %s: plans %d (%.0f/s, %d use_fallback) p50 %.1f ms p99 %.1f ms max %.1f ms; S3 %d ops (%.0f/s) %.1f MiB/s, reads %v local %v upstream; builds landed %d (p99 %.1f ms), reported to central by the sidecar %v build manifests and %v packs; errors %d, plans past kache's 750 ms %d; peak RSS sidecar %.1f MiB, central %.1f MiB; CPU s over the window: client %.1f (%.0f%% of the three), sidecar %.1f, central %.1f (MinIO not counted)",
		window.Round(time.Millisecond), plans.Load(), float64(plans.Load())/window.Seconds(), fallbacks.Load(),
		ms(planLat.quantile(0.5)), ms(planLat.quantile(0.99)), ms(planLat.quantile(1)),
		ops, float64(ops)/window.Seconds(), float64(s3Bytes.Load())/(1<<20)/window.Seconds(), local1-local0, up1-up0,
		builds.Load(), ms(buildLat.quantile(0.99)), fwdM1-fwdM0, fwdP1-fwdP0, errs.n.Load(), timeouts.Load(),
		float64(peakSidecar.Load())/(1<<20), float64(peakCentral.Load())/(1<<20),
		selfCPU.Seconds(), 100*selfCPU.Seconds()/cpu.Seconds(), sidecarCPU.Seconds(), centralCPU.Seconds())
	t.Logf("S3 by op: %s", strings.Join(opLines, "; "))
	for _, e := range errs.first {
		t.Logf("error: %s", e)
	}

	if n := errs.n.Load(); n > 0 {
		t.Errorf("%d errors under load, want none", n)
	}
	verdict := "met"
	if planLat.quantile(0.99) >= loadGoalPlanP99 || timeouts.Load() > 0 {
		verdict = "NOT MET"
	}
	t.Logf("latency goal (plan p99 under %s, no plan past kache's timeout): %s (p99 %.1f ms, %d past 750 ms)",
		loadGoalPlanP99, verdict, ms(planLat.quantile(0.99)), timeouts.Load())
	if peak := peakSidecar.Load(); peak >= loadGoalRSS {
		t.Errorf("sidecar peak RSS %.1f MiB, want under %d MiB", float64(peak)/(1<<20), loadGoalRSS>>20)
	}
	if plans.Load() == 0 || ops == 0 || builds.Load() == 0 {
		t.Errorf("no load: %d plans, %d S3 requests, %d builds", plans.Load(), ops, builds.Load())
	}
}

// loadPost posts body and returns the status and the answer, read into buf
// when given (reused across requests).
func loadPost(c *http.Client, url string, body []byte, buf *bytes.Buffer) (int, []byte) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return 0, []byte(err.Error())
	}
	return resp.StatusCode, buf.Bytes()
}

// invalidCandidate says what a kache client would drop from p (a key that
// is not 64 lowercase hex, a crate name it refuses), or "".
func invalidCandidate(p wire.PrefetchPlan) string {
	for _, c := range p.Candidates {
		if len(c.CacheKey) != 64 || strings.Trim(c.CacheKey, "0123456789abcdef") != "" {
			return "candidate key " + c.CacheKey
		}
		if c.CrateName == "" || strings.Contains(c.CrateName, "-") {
			return "candidate crate " + c.CrateName + " is not a layout crate name"
		}
	}
	return ""
}

// loadGet GETs obj through k into buf, checking its length and sha256; a
// negative size means the object must be absent (404).
func loadGet(ctx context.Context, k *kacheS3, obj *loadObject, buf []byte) (int64, error) {
	req, err := k.newRequest(ctx, http.MethodGet, k.objectPath(obj.key), nil, nil, unsignedPayload, nil)
	if err != nil {
		return 0, err
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if obj.size < 0 {
		_, _ = io.CopyBuffer(io.Discard, resp.Body, buf)
		if resp.StatusCode != http.StatusNotFound {
			return 0, fmt.Errorf("get %s: status %d, want 404", obj.key, resp.StatusCode)
		}
		return 0, nil
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("get %s: %w", obj.key, statusErr(resp))
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, buf)
	if err != nil {
		return n, fmt.Errorf("get %s: %w", obj.key, err)
	}
	var sum [32]byte
	if n != obj.size || !bytes.Equal(h.Sum(sum[:0]), obj.sum[:]) {
		return n, fmt.Errorf("get %s: %d bytes not the object's %d (sha256 differs)", obj.key, n, obj.size)
	}
	return n, nil
}

// loadHead is kache's existence check of key, which must exist or not.
func loadHead(ctx context.Context, k *kacheS3, key string, exists bool) error {
	ok, err := k.Exists(ctx, key)
	if err == nil && ok != exists {
		err = fmt.Errorf("head %s: exists %v, want %v", key, ok, exists)
	}
	return err
}

// waitSession waits until the prefetch session of planID has finished.
func waitSession(t *testing.T, sc *s3Sidecar, planID string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var prog struct {
		Fetched  int  `json:"fetched"`
		Finished bool `json:"finished"`
	}
	if !waitUntil(ctx, 200*time.Millisecond, func() bool {
		resp, err := httpc.Get("http://" + sc.addr + "/v1/prefetch/sessions/" + planID)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&prog) == nil && prog.Finished
	}) {
		t.Fatalf("prefetch of plan %s not finished after %s: %+v\n%s", planID, within, prog, sc.p.Tail(20))
	}
	t.Logf("warm-up prefetch of plan %s: %d packs fetched", planID, prog.Fetched)
}

// startLoadCentral runs kache-service, built without the race detector,
// crawling o's bucket every 10 s, and waits until it is ready.
func startLoadCentral(t *testing.T, o *objectStore) *replica {
	t.Helper()
	port := testenv.FreePort(t)
	r := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	r.p = testenv.Start(t, "kache-service", append(o.env(), "KACHE_LOG=info"), plainBin(t, serviceBins),
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(t.TempDir(), "db"),
		"--s3-bucket", testBucket, "--s3-endpoint", o.endpoint, "--s3-crawl-interval", "10s")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return r.status("/readyz") == 200 }) {
		t.Fatalf("central not ready:\n%s", r.p.Tail(20))
	}
	return r
}

// startLoadSidecar runs `kache-sidecar serve`, built without the race
// detector, as startS3Sidecar does (S3 surface on, asking central) but
// logging at info, as deployed.
func startLoadSidecar(t *testing.T, o *objectStore, centralURL string) *s3Sidecar {
	t.Helper()
	parent := t.TempDir()
	sc := &s3Sidecar{
		sidecar: sidecar{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), store: filepath.Join(parent, "store")},
		s3:      fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		parent:  parent,
	}
	sc.endpoint = "http://" + sc.s3
	env := []string{
		"KACHE_SIDECAR_PLANNER_LISTEN=" + sc.addr,
		"KACHE_SIDECAR_S3_LISTEN=" + sc.s3,
		"KACHE_SIDECAR_STORE_DIR=" + sc.store,
		"KACHE_SIDECAR_S3_ENDPOINT=" + o.endpoint,
		"KACHE_SIDECAR_S3_BUCKET=" + testBucket,
		"KACHE_SIDECAR_REPOSITORY=acme/app",
		"KACHE_SIDECAR_CENTRAL_ENDPOINT=" + centralURL,
		"AWS_ACCESS_KEY_ID=" + testenv.MinioUser,
		"AWS_SECRET_ACCESS_KEY=" + testenv.MinioSecret,
		"KACHE_SIDECAR_LOCAL_ACCESS_KEY=" + localAccessKey,
		"KACHE_SIDECAR_LOCAL_SECRET_KEY=" + localSecretKey,
	}
	sc.p = testenv.Start(t, "kache-sidecar", env, plainBin(t, sidecarBins), "serve")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool {
		if sc.p.Exited() {
			return true
		}
		if get(sc.addr, "/healthz") != 200 {
			return false
		}
		resp, err := httpc.Get(sc.endpoint + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("x-amz-request-id") != ""
	}) || sc.p.Exited() {
		t.Fatalf("kache-sidecar not serving:\n%s", sc.p.Tail(30))
	}
	return sc
}

// vmRSS is a process's resident set size in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	_, rest, ok := strings.Cut(string(b), "\nVmRSS:")
	if !ok {
		return 0, fmt.Errorf("no VmRSS for %d", pid)
	}
	line, _, _ := strings.Cut(rest, "\n")
	kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(line), " kB"), 10, 64)
	return kb << 10, err
}

// procCPU is a process's user plus system CPU time so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(t, err)
	// The command name may hold spaces; the fields after it do not.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	must(t, errors.Join(err1, err2))
	return time.Duration(ut+st) * 10 * time.Millisecond // clock ticks of 10 ms
}
