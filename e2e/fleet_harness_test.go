//go:build e2e

package e2e

// The fleet harness: a CI fleet on one machine, for the scenario tests of
// issue 12 (fleet_test.go and the fault scenarios built on it).
//
// A fleet is one real MinIO, one central (kache-service crawling the bucket
// once at startup, then every fleetOptions.crawlInterval, an hour by
// default, so what central knows during a run comes from the sidecars'
// reports), and N sidecars (kache-sidecar serve, each with its own store,
// its S3 surface on, its planner endpoint, central's endpoint set). Builds
// come from the replay harness (kache-replay --export-builds, see
// loadFleetBuilds) and are run by a client that does what kache does
// (kache-protocol.md sections 3 and 4).
//
// API (all in this file):
//
//	startFleet(t, opts) *fleet                 MinIO, central, opts.sidecars sidecars; stopped when t ends
//	f.central                                  *fleetCentral: url, db, bucketEndpoint, env, args
//	  .start(t) .stop(t) .kill() .restart(t)   (re)start on the same port and database; stop = SIGTERM
//	  .metric(t, series) .plan(intent)         a /metrics series; a plan asked of central directly
//	f.sidecars[i]                              *fleetSidecar: planner, s3, store, bucketEndpoint,
//	                                           centralEndpoint, env, args (applied at the next start)
//	  .start(t) .stop(t) .kill() .restart(t)   same ports and store; stop = SIGTERM (reports flushed),
//	                                           then a data race in its output fails the test
//	  .fresh(t, res)                           stop, empty the store (a new runner pod), start; res
//	                                           (may be nil) gets the stop and start times
//	  .metric(t, series)                       a /metrics series of the running process
//	f.addSidecar(t, env, args) *fleetSidecar   one more sidecar with extra env and arguments
//	f.stopMinio() f.restartMinio(t)            SIGKILL MinIO / start it again on the same port and data
//	f.runBuild(ctx, runner, b) buildResult     one build on sidecar runner (safe from any goroutine)
//	f.runAll(ctx, builds) []buildResult        builds round-robin over the sidecars: parallel across
//	                                           runners, one at a time per runner, started in order
//	f.checkBucket(t) bucketCheck               every acknowledged upload is in the bucket, byte for byte
//	f.peakRSSMiB(t) float64                    the highest VmHWM seen of central and the sidecars
//	prebuildFleet()                            the binaries a fleet runs, built side by side
//	loadFleetBuilds(t, project, commits, keep) a trace's builds, exported by kache-replay
//	summarize(results) / quarterHitRates(...)  figures for recordScenario
//
// The build client (runBuild) posts kache's intent to the runner's planner
// endpoint (/v2/prefetch-plan, 750 ms timeout, no retry; a failure means
// kache plans locally: buildResult.PlanErr), then for each unit in build
// order HEADs the entry manifest through the runner's S3 surface; on a hit
// it GETs the entry manifest and the pack and compares the sha256 of each
// with what the fleet uploaded under that key (the registry, shared by all
// builds: a difference is a corrupt read); on a miss it "compiles" (sleeps
// compile_ms / compileDivisor, at most compileCap) and uploads a real pack
// (zstd tar with meta.json) then its entry manifest. At the end it uploads
// the build manifest (`_manifests/{target}.json`) and, for namespaced
// builds, the Cargo.lock shards. A failed HEAD or GET is counted as an error
// and the unit is compiled, as kache does with an unreachable remote.
//
// A local hit is a pack the runner's store held before the build asked for
// it (the pack file in the store directory, sidecar/internal/store layout):
// with opts.coldRunners (each build on a fresh sidecar with an empty store,
// as a runner pod per job) only the sidecar's prefetch can have put it
// there. Without it, prefetchHits leaves out keys the runner's own earlier
// traffic brought in.
//
// Every PUT is remembered (start, end, bytes, acknowledged or not), so
// checkBucket can tell, after faults, that an acknowledged upload was lost:
// the bucket must hold, for each key with an acknowledged PUT, the bytes of
// a PUT no later acknowledged PUT superseded.
//
// Fault scenarios run f.runAll in a goroutine and break things from the
// test goroutine meanwhile: call the process methods (start, stop, kill,
// restart) and the checks from the test goroutine (runBuild's own fresh
// returns its failure instead). A component's endpoint, env and args fields
// are read at its next start: with coldRunners every build starts its
// sidecar, so change them only while no build runs on it.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// fleetOptions configures a fleet; zero values take the defaults noted.
type fleetOptions struct {
	// sidecars is the number of runners. Default 3.
	sidecars int
	// coldRunners gives every build a fresh sidecar with an empty store
	// (fleetSidecar.fresh before the build).
	coldRunners bool
	// compileDivisor scales a unit's compile time down to the sleep a miss
	// costs; compileCap bounds the sleep. Defaults 200 and 100 ms.
	compileDivisor float64
	compileCap     time.Duration
	// packDivisor scales a unit's artifact size down to its pack's
	// payload, clamped to [packMin, packMax]. Defaults 64, 2 KiB, 64 KiB.
	packDivisor      uint64
	packMin, packMax int
	// planTimeout is kache's planner timeout. Default 750 ms.
	planTimeout time.Duration
	// crawlInterval is central's bucket crawl interval. Default 1 h: only
	// the startup crawl (of an empty bucket) happens during a run.
	crawlInterval time.Duration
	// centralEnv, centralArgs, sidecarEnv and sidecarArgs are added to
	// every start of central and of each sidecar.
	centralEnv, centralArgs []string
	sidecarEnv, sidecarArgs []string
	// repository is the sidecars' KACHE_SIDECAR_REPOSITORY. Default
	// "acme/app".
	repository string
	// plainBinaries runs kache-service and kache-sidecar built without the
	// race detector (the demo); default race-built, as tests want.
	plainBinaries bool
	// onBuild, when set, is called by runAll as each build ends (from the
	// runner's goroutine).
	onBuild func(i int, r buildResult)
}

func (o fleetOptions) withDefaults() fleetOptions {
	if o.sidecars == 0 {
		o.sidecars = 3
	}
	if o.compileDivisor == 0 {
		o.compileDivisor = 200
	}
	if o.compileCap == 0 {
		o.compileCap = 100 * time.Millisecond
	}
	if o.packDivisor == 0 {
		o.packDivisor = 64
	}
	if o.packMin == 0 {
		o.packMin = 2 << 10
	}
	if o.packMax == 0 {
		o.packMax = 64 << 10
	}
	if o.planTimeout == 0 {
		o.planTimeout = 750 * time.Millisecond
	}
	if o.crawlInterval == 0 {
		o.crawlInterval = time.Hour
	}
	if o.repository == "" {
		o.repository = "acme/app"
	}
	return o
}

// fleet is MinIO, central and the sidecars, with the registry of what its
// builds uploaded.
type fleet struct {
	t        testing.TB
	opts     fleetOptions
	minio    *testenv.Minio
	objects  *objectStore
	central  *fleetCentral
	sidecars []*fleetSidecar
	reg      *uploadRegistry

	rssMu   sync.Mutex
	peakRSS int64
}

// startFleet starts MinIO, central (ready: its startup crawl is done) and
// the sidecars (both surfaces serving).
func startFleet(t testing.TB, opts fleetOptions) *fleet {
	t.Helper()
	opts = opts.withDefaults()
	m := testenv.StartMinio(t)
	f := &fleet{t: t, opts: opts, minio: m, objects: &objectStore{endpoint: m.Endpoint, client: m.Client}, reg: newUploadRegistry()}
	port := testenv.FreePort(t)
	f.central = &fleetCentral{
		f: f, addr: fmt.Sprintf("127.0.0.1:%d", port), db: filepath.Join(t.TempDir(), "central-db"),
		bucketEndpoint: m.Endpoint, env: slices.Clone(opts.centralEnv), args: slices.Clone(opts.centralArgs),
	}
	f.central.url = "http://" + f.central.addr
	f.central.start(t)
	for range opts.sidecars {
		f.addSidecar(t, nil, nil)
	}
	return f
}

// addSidecar starts one more sidecar (runner index len(f.sidecars)) with
// env and args added to the fleet's.
func (f *fleet) addSidecar(t testing.TB, env, args []string) *fleetSidecar {
	t.Helper()
	dir := t.TempDir()
	s := &fleetSidecar{
		f: f, index: len(f.sidecars), dir: dir, store: filepath.Join(dir, "store-0"),
		planner:         fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		s3:              fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		bucketEndpoint:  f.minio.Endpoint,
		centralEndpoint: f.central.url,
		env:             append(slices.Clone(f.opts.sidecarEnv), env...),
		args:            append(slices.Clone(f.opts.sidecarArgs), args...),
		touched:         map[string]bool{},
	}
	f.sidecars = append(f.sidecars, s)
	s.start(t)
	return s
}

// bin is one of the binaries the fleet runs: race-built unless
// opts.plainBinaries.
func (f *fleet) bin(t testing.TB, b binaries) string {
	t.Helper()
	if !f.opts.plainBinaries {
		return b.get(t)
	}
	bin, err := b.plain()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// stopMinio kills MinIO (SIGKILL); restartMinio starts it again on the same
// port and data directory and waits until it is ready.
func (f *fleet) stopMinio()                { f.minio.Stop() }
func (f *fleet) restartMinio(t testing.TB) { t.Helper(); f.minio.Restart(t) }
func (f *fleet) notePeakRSS(pid int)       { f.noteRSS(procHWM(pid)) }
func (f *fleet) noteRSS(b int64)           { f.rssMu.Lock(); f.peakRSS = max(f.peakRSS, b); f.rssMu.Unlock() }
func (f *fleet) peakRSSMiB(t testing.TB) float64 {
	t.Helper()
	if p := f.central.p; p != nil && !p.Exited() {
		f.notePeakRSS(p.Pid())
	}
	for _, s := range f.sidecars {
		if p := s.proc(); p != nil && !p.Exited() {
			f.notePeakRSS(p.Pid())
		}
	}
	f.rssMu.Lock()
	defer f.rssMu.Unlock()
	return mib(f.peakRSS)
}

// procHWM is a process's peak resident set size in bytes, 0 when it cannot
// be read (the process is gone).
func procHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// fleetCentral is the fleet's kache-service. Fields other than p may be
// changed between a stop and the next start.
type fleetCentral struct {
	f              *fleet
	addr, url      string // 127.0.0.1:port, http://addr
	db             string
	bucketEndpoint string
	env, args      []string
	p              *testenv.Proc
	starts         int
}

// start runs central on its port and database and waits until it is ready.
func (c *fleetCentral) start(t testing.TB) {
	t.Helper()
	c.starts++
	args := append([]string{"--bind", c.addr, "--db-path", c.db,
		"--s3-bucket", testBucket, "--s3-endpoint", c.bucketEndpoint, "--s3-crawl-interval", c.f.opts.crawlInterval.String()}, c.args...)
	env := append(append(c.f.objects.env(), "KACHE_LOG=info", noExitSleep), c.env...)
	c.p = testenv.Start(t, fmt.Sprintf("kache-service-%d", c.starts), env, c.f.bin(t, serviceBins), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return c.p.Exited() || c.status("/readyz") == 200 }) || c.p.Exited() {
		t.Fatalf("central not ready on %s:\n%s", c.addr, c.p.Tail(30))
	}
}

// kill ends central with SIGKILL (no shutdown at all).
func (c *fleetCentral) kill() {
	if c.p != nil {
		c.f.notePeakRSS(c.p.Pid())
		c.p.Kill()
	}
}

// stop ends central with SIGTERM and waits for it (SIGKILL after 30 s).
func (c *fleetCentral) stop(t testing.TB) {
	t.Helper()
	if c.p != nil {
		c.f.notePeakRSS(c.p.Pid())
		if err := stopProc(c.p, 30*time.Second); err != nil {
			t.Errorf("central: %v", err)
		}
		if err := raceReported(c.p); err != nil {
			t.Error(err)
		}
	}
}

// restart stops central gracefully (if it runs) and starts it again.
func (c *fleetCentral) restart(t testing.TB) {
	t.Helper()
	c.stop(t)
	c.start(t)
}

func (c *fleetCentral) status(path string) int {
	resp, err := httpc.Get(c.url + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (c *fleetCentral) metric(t testing.TB, series string) float64 {
	t.Helper()
	return metricValue(t, c.url, series)
}

// plan asks central itself for a plan: the status (0 when nothing
// answered) and the plan on 200.
func (c *fleetCentral) plan(intent []byte) (int, wire.PrefetchPlan) {
	return (&replica{addr: c.url}).planFor(string(intent))
}

// noExitSleep spares a race-built process the race detector's one-second
// sleep at exit: a cold runner stops its sidecar after every build.
const noExitSleep = "GORACE=atexit_sleep_ms=0"

// stopProc sends SIGTERM and waits for the process, killing it after
// grace.
func stopProc(p *testenv.Proc, grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.Name, grace)
	}
}

// fleetSidecar is one runner's kache-sidecar. Fields other than p, k and
// touched may be changed between a stop and the next start.
type fleetSidecar struct {
	f     *fleet
	index int
	dir   string // holds the store directories
	// planner and s3 are host:port of the two surfaces.
	planner, s3     string
	store           string
	bucketEndpoint  string
	centralEndpoint string
	env, args       []string

	mu     sync.Mutex
	p      *testenv.Proc
	k      *kacheS3
	starts int
	// touched are the cache keys this runner's builds read or wrote
	// through the sidecar since its store was last emptied.
	touched map[string]bool
}

func (s *fleetSidecar) proc() *testenv.Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

func (s *fleetSidecar) client() *kacheS3 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.k
}

// start runs the sidecar on its ports and store and waits until both
// surfaces answer.
func (s *fleetSidecar) start(t testing.TB) {
	t.Helper()
	if err := s.startErr(t); err != nil {
		t.Fatal(err)
	}
}

// startErr is start returning its failure (for use off the test
// goroutine).
func (s *fleetSidecar) startErr(t testing.TB) error {
	s.mu.Lock()
	s.starts++
	name := fmt.Sprintf("kache-sidecar-%d-%d", s.index, s.starts)
	s.mu.Unlock()
	env := append([]string{
		"KACHE_SIDECAR_PLANNER_LISTEN=" + s.planner,
		"KACHE_SIDECAR_S3_LISTEN=" + s.s3,
		"KACHE_SIDECAR_STORE_DIR=" + s.store,
		"KACHE_SIDECAR_STORE_FSYNC=false",
		"KACHE_SIDECAR_S3_ENDPOINT=" + s.bucketEndpoint,
		"KACHE_SIDECAR_S3_BUCKET=" + testBucket,
		"KACHE_SIDECAR_CENTRAL_ENDPOINT=" + s.centralEndpoint,
		"KACHE_SIDECAR_REPOSITORY=" + s.f.opts.repository,
		"KACHE_SIDECAR_LOG_LEVEL=info",
		"AWS_ACCESS_KEY_ID=" + testenv.MinioUser,
		"AWS_SECRET_ACCESS_KEY=" + testenv.MinioSecret,
		"KACHE_SIDECAR_LOCAL_ACCESS_KEY=" + localAccessKey,
		"KACHE_SIDECAR_LOCAL_SECRET_KEY=" + localSecretKey,
		noExitSleep,
	}, s.env...)
	p := testenv.Start(t, name, env, s.f.bin(t, sidecarBins), append([]string{"serve"}, s.args...)...)
	// A new client per process: no keep-alive connection to the last one.
	k := newKacheS3(t, "http://"+s.s3, testBucket, localAccessKey, localSecretKey)
	s.mu.Lock()
	s.p, s.k = p, k
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 25*time.Millisecond, func() bool {
		if p.Exited() {
			return true
		}
		resp, err := httpc.Get("http://" + s.planner + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false
		}
		resp, err = httpc.Get("http://" + s.s3 + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("x-amz-request-id") != ""
	}) || p.Exited() {
		return fmt.Errorf("%s not serving on %s and %s:\n%s", name, s.planner, s.s3, p.Tail(30))
	}
	return nil
}

// kill ends the sidecar with SIGKILL.
func (s *fleetSidecar) kill() {
	if p := s.proc(); p != nil {
		s.f.notePeakRSS(p.Pid())
		p.Kill()
	}
}

// stop ends the sidecar with SIGTERM (it flushes its reports to central)
// and waits for it.
func (s *fleetSidecar) stop(t testing.TB) {
	t.Helper()
	if err := s.stopErr(); err != nil {
		t.Error(err)
	}
}

func (s *fleetSidecar) stopErr() error {
	p := s.proc()
	if p == nil {
		return nil
	}
	// The job is over: kache's connections are gone too.
	if k := s.client(); k != nil {
		k.http.CloseIdleConnections()
	}
	s.f.notePeakRSS(p.Pid())
	if err := stopProc(p, 30*time.Second); err != nil {
		return err
	}
	return raceReported(p)
}

// raceReported returns an error when the race detector reported a data
// race in the process's output.
func raceReported(p *testenv.Proc) error {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err
	}
	if i := bytes.Index(b, []byte("WARNING: DATA RACE")); i >= 0 {
		return fmt.Errorf("%s: data race:\n%s", p.Name, b[i:min(len(b), i+4000)])
	}
	return nil
}

// restart stops the sidecar gracefully (if it runs) and starts it again
// on the same ports and store.
func (s *fleetSidecar) restart(t testing.TB) {
	t.Helper()
	s.stop(t)
	s.start(t)
}

// fresh is a new runner pod: the sidecar stops, its store is replaced by
// an empty one, and it starts again on the same ports.
func (s *fleetSidecar) fresh(t testing.TB, res *buildResult) error {
	if res == nil {
		res = &buildResult{}
	}
	start := time.Now()
	if err := s.stopErr(); err != nil {
		return err
	}
	res.Stopping = time.Since(start)
	defer func() { res.Starting = time.Since(start) - res.Stopping }()
	s.mu.Lock()
	old := s.store
	s.store = filepath.Join(s.dir, fmt.Sprintf("store-%d", s.starts))
	s.touched = map[string]bool{}
	s.mu.Unlock()
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("remove store: %w", err)
	}
	return s.startErr(t)
}

func (s *fleetSidecar) metric(t testing.TB, series string) float64 {
	t.Helper()
	return metricValue(t, "http://"+s.planner, series)
}

// hasPack reports whether the sidecar's store holds the pack.
func (s *fleetSidecar) hasPack(crate, key string) bool {
	s.mu.Lock()
	dir := s.store
	s.mu.Unlock()
	_, err := os.Stat(storePath(dir, "packs", crate, key, ".tar.zst"))
	return err == nil
}

// touch records that the runner's traffic brought key into its store and
// reports whether it had before.
func (s *fleetSidecar) touch(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	had := s.touched[key]
	s.touched[key] = true
	return had
}

// fleetBuild is one line of kache-replay --export-builds.
type fleetBuild struct {
	Seq    int    `json:"seq"`
	Commit string `json:"commit"`
	Job    struct {
		Target   string `json:"target"`
		Profile  string `json:"profile"`
		Features string `json:"features"`
	} `json:"job"`
	Namespace     *string         `json:"namespace"`
	FirstOfBranch bool            `json:"first_of_branch"`
	MainLine      bool            `json:"main_line"`
	StartMs       int64           `json:"start_ms"`
	Toolchain     string          `json:"toolchain"`
	Intent        json.RawMessage `json:"intent"`
	Units         []fleetUnit     `json:"units"`
}

type fleetUnit struct {
	Crate     string `json:"crate"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Key       string `json:"key"`
	CompileMs uint64 `json:"compile_ms"`
	SizeBytes uint64 `json:"size_bytes"`
	Demand    int    `json:"demand"`
	Deps      []int  `json:"deps"`
}

// replayBin builds kache-replay once per test binary (no race detector:
// it only exports).
var replayBin = sync.OnceValues(func() (string, error) {
	return buildBinary("kache-replay", "../central/cmd/kache-replay", false)
})

// prebuildFleet builds kache-replay and the race-built kache-service and
// kache-sidecar side by side (each is built once per test binary; a later
// call waits for its build).
func prebuildFleet() {
	var wg sync.WaitGroup
	for _, build := range []func() (string, error){replayBin, serviceBins.race, sidecarBins.race} {
		wg.Go(func() { _, _ = build() })
	}
	wg.Wait()
}

// tracesDir is where the Cargo.lock histories are: $KACHE_TRACES_DIR, else
// the slice shipped in testdata/traces (README there), so the scenarios
// need nothing outside the repository.
func tracesDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KACHE_TRACES_DIR")
	if dir == "" {
		dir = filepath.Join("testdata", "traces")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("traces: %v (set KACHE_TRACES_DIR)", err)
	}
	return dir
}

// loadFleetBuilds exports the builds of the first commits of a trace's
// history with kache-replay (default seed and jobs) and keeps those keep
// accepts (all when nil), in start order.
func loadFleetBuilds(t testing.TB, project string, commits int, keep func(*fleetBuild) bool) []fleetBuild {
	t.Helper()
	bin, err := replayBin()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), project+"-builds.jsonl")
	cmd := exec.Command(bin, "--trace", filepath.Join(tracesDir(t), project), "--export-builds", out,
		"--commits", strconv.Itoa(commits), "--quiet")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kache-replay --export-builds: %v\n%s", err, b)
	}
	fh, err := os.Open(out)
	must(t, err)
	defer fh.Close()
	var builds []fleetBuild
	dec := json.NewDecoder(fh)
	for {
		var b fleetBuild
		if err := dec.Decode(&b); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode export: %v", err)
		}
		if keep == nil || keep(&b) {
			builds = append(builds, b)
		}
	}
	return builds
}

// uploadRegistry is what the fleet's builds uploaded: the one body of each
// pack and entry manifest (generated once per cache key and reused, so
// every upload of a key sends the same bytes), and every PUT attempt.
type uploadRegistry struct {
	mu      sync.Mutex
	entries map[string]*fleetEntry // cache key -> entry
	// sums is the sha256 of the only body ever written under a pack or
	// entry manifest key, set before its first PUT is sent.
	sums map[string]string
	puts map[string][]putAttempt // object key -> attempts
}

type fleetEntry struct {
	kacheEntry
	packSum, manifestSum string
}

type putAttempt struct {
	start, end time.Time
	sum        string
	size       int
	acked      bool
}

func newUploadRegistry() *uploadRegistry {
	return &uploadRegistry{entries: map[string]*fleetEntry{}, sums: map[string]string{}, puts: map[string][]putAttempt{}}
}

// entry returns the entry of u, made on first use with a pack of about
// size payload bytes.
func (r *uploadRegistry) entry(u fleetUnit, size int) (*fleetEntry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.entries[u.Key]; ok {
		return e, nil
	}
	raw, err := hex.DecodeString(u.Key[:16])
	if err != nil {
		return nil, fmt.Errorf("cache key %q: %w", u.Key, err)
	}
	ke, err := makeKacheEntry(u.Crate, u.Key, binary.BigEndian.Uint64(raw), size, max(u.CompileMs, 1))
	if err != nil {
		return nil, err
	}
	e := &fleetEntry{kacheEntry: ke, packSum: sha256Hex(ke.pack), manifestSum: sha256Hex(ke.manifest)}
	r.entries[u.Key] = e
	r.sums[ke.packKey()] = e.packSum
	r.sums[ke.manifestKey()] = e.manifestSum
	return e, nil
}

// expected is the sha256 of what the fleet wrote under an object key.
func (r *uploadRegistry) expected(objectKey string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sums[objectKey]
	return s, ok
}

func (r *uploadRegistry) record(key string, a putAttempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.puts[key] = append(r.puts[key], a)
}

// put uploads body through k and records the attempt.
func (f *fleet) put(ctx context.Context, k *kacheS3, key string, body []byte, contentType string, res *buildResult) error {
	a := putAttempt{start: time.Now(), sum: sha256Hex(body), size: len(body)}
	err := k.Put(ctx, key, body, contentType)
	a.end, a.acked = time.Now(), err == nil
	f.reg.record(key, a)
	res.Writing += a.end.Sub(a.start)
	return err
}

// buildResult is what one build did.
type buildResult struct {
	Seq    int
	Runner int
	First  bool
	Units  int
	// LocalHits are packs the runner's store held before the build asked
	// for them; PrefetchHits those of them the runner's own reads and
	// uploads had not brought in; RemoteHits hits the sidecar fetched from
	// the bucket on demand; Misses units compiled.
	LocalHits, PrefetchHits, RemoteHits, Misses int
	// Planned are units whose key the plan named; Candidates the plan's
	// size.
	Planned, Candidates int
	Disposition         string
	PlanLatency         time.Duration
	PlanErr             error
	BytesRead           int64
	BytesUploaded       int64
	// CompileMsSaved is the (unscaled) compile time of the hits.
	CompileMsSaved uint64
	// Corrupt counts reads whose bytes differ from what was uploaded.
	Corrupt int
	// Errors are failed requests (plan failures are in PlanErr only).
	Errors []error
	Took   time.Duration
	// Reading, Writing and Compiling are the time spent in reads (HEAD and
	// GET), in uploads (summed over concurrent shard PUTs) and in compile
	// sleeps.
	Reading, Writing, Compiling time.Duration
	// Stopping and Starting are how long the runner's sidecar took to stop
	// and to serve again before the build (coldRunners).
	Stopping, Starting time.Duration
	// Done is false when the build stopped early (context ended).
	Done bool
}

func (r *buildResult) fail(err error) { r.Errors = append(r.Errors, err) }

// runBuild runs b on runner the way kache would, and returns what happened.
func (f *fleet) runBuild(ctx context.Context, runner int, b fleetBuild) buildResult {
	res := buildResult{Seq: b.Seq, Runner: runner, First: b.FirstOfBranch, Units: len(b.Units)}
	start := time.Now()
	f.build(ctx, runner, b, &res)
	res.Took = time.Since(start)
	return res
}

func (f *fleet) build(ctx context.Context, runner int, b fleetBuild, res *buildResult) {
	s := f.sidecars[runner]
	if f.opts.coldRunners {
		if err := s.fresh(f.t, res); err != nil {
			res.fail(fmt.Errorf("fresh runner: %w", err))
			return
		}
	}
	planned := f.askPlan(ctx, s, b.Intent, res)
	k := s.client()
	entries := make([]kacheEntry, 0, len(b.Units))
	for _, u := range b.Units {
		if ctx.Err() != nil {
			return
		}
		if planned[u.Key] {
			res.Planned++
		}
		e, ok := f.fetchUnit(ctx, s, k, u, res)
		if !ok {
			var err error
			if e, err = f.compileUnit(ctx, s, k, u, res); err != nil {
				res.fail(err)
				continue
			}
		}
		entries = append(entries, e)
	}
	// `kache save-manifest`: the build manifest, and the shards of a
	// namespaced build.
	type upload struct {
		key  string
		body []byte
	}
	uploads := []upload{{layout.BuildManifestKey("artifacts", b.Job.Target), buildManifestFor(b.Job.Target, entries)}}
	if b.Namespace != nil {
		var intent wire.BuildIntent
		if err := json.Unmarshal(b.Intent, &intent); err != nil {
			res.fail(fmt.Errorf("decode intent: %w", err))
		}
		shards := shardObjectsOf(*b.Namespace, intent.CargoLockDeps, entries)
		for _, key := range slices.Sorted(maps.Keys(shards)) {
			uploads = append(uploads, upload{key, shards[key]})
		}
	}
	// The build manifest, then the shards, 16 at a time as kache's
	// upload_shards does.
	var mu sync.Mutex
	var wg sync.WaitGroup
	limit := make(chan struct{}, 16)
	for i, up := range uploads {
		one := func() {
			var r buildResult
			err := f.put(ctx, k, up.key, up.body, "application/json", &r)
			mu.Lock()
			defer mu.Unlock()
			res.Writing += r.Writing
			if err != nil {
				res.fail(err)
			} else {
				res.BytesUploaded += int64(len(up.body))
			}
		}
		if i == 0 {
			one()
			continue
		}
		limit <- struct{}{}
		wg.Go(func() {
			defer func() { <-limit }()
			one()
		})
	}
	wg.Wait()
	res.Done = ctx.Err() == nil
}

// askPlan posts kache's intent to the runner's planner endpoint as kache's
// daemon does (kache-protocol.md 3.3: a new client per call, the whole
// exchange within the timeout, no retry) and returns the planned keys.
func (f *fleet) askPlan(ctx context.Context, s *fleetSidecar, intent []byte, res *buildResult) map[string]bool {
	hc := &http.Client{Timeout: f.opts.planTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	plan, err := func() (wire.PrefetchPlan, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.planner+"/v2/prefetch-plan", bytes.NewReader(intent))
		if err != nil {
			return wire.PrefetchPlan{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return wire.PrefetchPlan{}, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return wire.PrefetchPlan{}, err
		}
		if resp.StatusCode/100 != 2 {
			return wire.PrefetchPlan{}, fmt.Errorf("planner returned an error status: %d %s", resp.StatusCode, body)
		}
		return wire.DecodePlan(body)
	}()
	res.PlanLatency = time.Since(start)
	if err != nil {
		res.PlanErr = err
		res.Disposition = "error"
		return nil
	}
	res.Disposition = string(plan.Disposition)
	res.Candidates = len(plan.Candidates)
	keys := make(map[string]bool, len(plan.Candidates))
	for _, c := range plan.Candidates {
		keys[c.CacheKey] = true
	}
	return keys
}

// fetchUnit is kache's remote lookup of a unit: HEAD the entry manifest,
// then GET it and the pack, each checked against what was uploaded. It
// reports false when the unit has to be compiled.
func (f *fleet) fetchUnit(ctx context.Context, s *fleetSidecar, k *kacheS3, u fleetUnit, res *buildResult) (kacheEntry, bool) {
	defer func(start time.Time) { res.Reading += time.Since(start) }(time.Now())
	mkey, pkey := layout.EntryManifestKey("artifacts", u.Crate, u.Key), layout.PackKey("artifacts", u.Crate, u.Key)
	ok, err := k.Exists(ctx, mkey)
	if err != nil {
		res.fail(err)
		return kacheEntry{}, false
	}
	if !ok {
		return kacheEntry{}, false
	}
	manifest, err := k.Get(ctx, mkey)
	if err != nil {
		res.fail(err)
		return kacheEntry{}, false
	}
	local := s.hasPack(u.Crate, u.Key)
	own := s.touch(u.Key)
	pack, err := k.Get(ctx, pkey)
	if err != nil {
		res.fail(err)
		return kacheEntry{}, false
	}
	res.BytesRead += int64(len(manifest) + len(pack))
	for _, read := range []struct {
		key  string
		body []byte
	}{{mkey, manifest}, {pkey, pack}} {
		want, known := f.reg.expected(read.key)
		if !known || sha256Hex(read.body) != want {
			res.Corrupt++
			res.fail(fmt.Errorf("corrupt read of %s: %d bytes, sha256 %s, uploaded %s", read.key, len(read.body), sha256Hex(read.body), want))
			return kacheEntry{}, false
		}
	}
	switch {
	case local && !own:
		res.LocalHits++
		res.PrefetchHits++
	case local:
		res.LocalHits++
	default:
		res.RemoteHits++
	}
	res.CompileMsSaved += u.CompileMs
	return kacheEntry{crate: u.Crate, key: u.Key, pack: pack, manifest: manifest, compileMs: u.CompileMs}, true
}

// compileUnit is a miss: the compile (scaled down), then kache's upload,
// pack first, then its entry manifest.
func (f *fleet) compileUnit(ctx context.Context, s *fleetSidecar, k *kacheS3, u fleetUnit, res *buildResult) (kacheEntry, error) {
	res.Misses++
	sleep := min(time.Duration(float64(u.CompileMs)/f.opts.compileDivisor*float64(time.Millisecond)), f.opts.compileCap)
	start := time.Now()
	select {
	case <-time.After(sleep):
	case <-ctx.Done():
		return kacheEntry{}, ctx.Err()
	}
	res.Compiling += time.Since(start)
	size := min(max(int(u.SizeBytes/f.opts.packDivisor), f.opts.packMin), f.opts.packMax)
	e, err := f.reg.entry(u, size)
	if err != nil {
		return kacheEntry{}, err
	}
	s.touch(u.Key)
	if err := f.put(ctx, k, e.packKey(), e.pack, "", res); err != nil {
		return kacheEntry{}, err
	}
	if err := f.put(ctx, k, e.manifestKey(), e.manifest, "application/json", res); err != nil {
		return kacheEntry{}, err
	}
	res.BytesUploaded += int64(len(e.pack) + len(e.manifest))
	out := e.kacheEntry
	out.compileMs = u.CompileMs
	return out, nil
}

// buildManifestFor is `kache save-manifest`'s build manifest under the
// job's target (kache's default manifest key is the host triple).
func buildManifestFor(target string, entries []kacheEntry) []byte {
	m := wire.BuildManifest{Version: 3, Created: time.Now().UTC().Format(time.RFC3339Nano), ManifestKey: target}
	for _, e := range entries {
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: e.key, CrateName: e.crate, CompileTimeMs: e.compileMs, ArtifactSize: uint64(len(e.pack))})
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return b
}

// runAll runs builds round-robin over the sidecars: build i on runner
// i mod N, runners in parallel, one build at a time per runner, and no
// build starting before the one ahead of it in the list has started. The
// results are in the order of builds; builds not run (ctx ended) have
// Done false.
func (f *fleet) runAll(ctx context.Context, builds []fleetBuild) []buildResult {
	n := len(f.sidecars)
	results := make([]buildResult, len(builds))
	started := make([]chan struct{}, len(builds))
	for i := range started {
		started[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() {
			for i := r; i < len(builds); i += n {
				if i > 0 {
					select {
					case <-started[i-1]:
					case <-ctx.Done():
					}
				}
				close(started[i])
				if ctx.Err() != nil {
					results[i] = buildResult{Seq: builds[i].Seq, Runner: r, First: builds[i].FirstOfBranch, Units: len(builds[i].Units)}
					continue
				}
				results[i] = f.runBuild(ctx, r, builds[i])
				if f.opts.onBuild != nil {
					f.opts.onBuild(i, results[i])
				}
			}
		})
	}
	wg.Wait()
	return results
}

// bucketCheck is the bucket against every PUT the builds made.
type bucketCheck struct {
	// Keys had at least one acknowledged PUT.
	Keys int
	// Lost are those whose object is missing or holds bytes no
	// unsuperseded PUT sent.
	Lost []string
}

// checkBucket lists the bucket and reads every object an acknowledged PUT
// wrote. An attempt is superseded when an acknowledged PUT of the same key
// started after it ended; the object must hold the bytes of an attempt
// that is not (concurrent PUTs may land in either order, and an
// unacknowledged one may or may not have landed).
func (f *fleet) checkBucket(t testing.TB) bucketCheck {
	t.Helper()
	present := map[string]bool{}
	for _, k := range minioKeys(t, f.objects, testBucket, "") {
		present[k] = true
	}
	f.reg.mu.Lock()
	puts := make(map[string][]putAttempt, len(f.reg.puts))
	for k, v := range f.reg.puts {
		puts[k] = slices.Clone(v)
	}
	f.reg.mu.Unlock()
	var c bucketCheck
	for _, key := range slices.Sorted(maps.Keys(puts)) {
		attempts := puts[key]
		if !slices.ContainsFunc(attempts, func(a putAttempt) bool { return a.acked }) {
			continue
		}
		c.Keys++
		if !present[key] {
			c.Lost = append(c.Lost, key+" (missing)")
			continue
		}
		body, _ := minioBytes(t, f.objects, testBucket, key)
		sum := sha256Hex(body)
		ok := false
		for _, a := range attempts {
			superseded := slices.ContainsFunc(attempts, func(b putAttempt) bool { return b.acked && b.start.After(a.end) })
			if !superseded && a.sum == sum {
				ok = true
				break
			}
		}
		if !ok {
			c.Lost = append(c.Lost, fmt.Sprintf("%s (%d bytes the bucket holds, not the last acknowledged)", key, len(body)))
		}
	}
	return c
}

// fleetSummary are a run's figures.
type fleetSummary struct {
	Builds, Finished, Units, LocalHits, PrefetchHits, RemoteHits, Misses, Planned int
	Corrupt, Errors, PlanErrors                                                   int
	BytesRead, BytesUploaded                                                      int64
	CompileMsSaved                                                                uint64
	PlanP50Ms, PlanP99Ms                                                          float64
	// MeanBuild, MeanStop and MeanStart are per build: the whole build,
	// and the fresh sidecar\'s stop and start within it.
	MeanBuild, MeanStop, MeanStart time.Duration
	Dispositions                   map[string]int
}

func summarize(results []buildResult) fleetSummary {
	s := fleetSummary{Builds: len(results), Dispositions: map[string]int{}}
	var lat []float64
	for _, r := range results {
		if r.Done {
			s.Finished++
		}
		s.Units += r.Units
		s.LocalHits += r.LocalHits
		s.PrefetchHits += r.PrefetchHits
		s.RemoteHits += r.RemoteHits
		s.Misses += r.Misses
		s.Planned += r.Planned
		s.Corrupt += r.Corrupt
		s.Errors += len(r.Errors)
		s.BytesRead += r.BytesRead
		s.BytesUploaded += r.BytesUploaded
		s.CompileMsSaved += r.CompileMsSaved
		if r.PlanErr != nil {
			s.PlanErrors++
		}
		s.MeanBuild += r.Took / time.Duration(len(results))
		s.MeanStop += r.Stopping / time.Duration(len(results))
		s.MeanStart += r.Starting / time.Duration(len(results))
		if r.Disposition != "" {
			s.Dispositions[r.Disposition]++
			lat = append(lat, ms(r.PlanLatency))
		}
	}
	s.PlanP50Ms, s.PlanP99Ms = quantile(lat, 0.5), quantile(lat, 0.99)
	return s
}

// quantile is the q-quantile of xs (nearest rank), 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// quarterHitRates are, for each quarter of the builds (by position), the
// local hit rate (local hits / units) of the builds sel accepts, and how
// many builds that was.
func quarterHitRates(results []buildResult, sel func(*buildResult) bool) (rates [4]float64, builds [4]int) {
	var hits, units [4]int
	for i := range results {
		r := &results[i]
		if !sel(r) {
			continue
		}
		q := i * 4 / len(results)
		builds[q]++
		hits[q] += r.LocalHits
		units[q] += r.Units
	}
	for q := range rates {
		if units[q] > 0 {
			rates[q] = float64(hits[q]) / float64(units[q])
		}
	}
	return rates, builds
}
