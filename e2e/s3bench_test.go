//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// The benchmark's workload: sets of 48 packs of 64 KiB and 24 of 4 MiB
// (about 99 MiB a set), interleaved two small to one large.
const (
	s3bSmall      = 64 << 10
	s3bLarge      = 4 << 20
	s3bPerSet     = 72
	s3bRounds     = 3 // rounds of the surface figures, each with two new sets
	s3bConc       = 8 // clients at once in a throughput pass
	s3bHitPasses  = 3 // hit and direct passes per round, alternating
	s3bLatReps    = 5 // sequential GETs of each small object per round and path
	s3bEngineConc = 12
	s3bBigSize    = 512 << 20
	s3bBigClients = 16
	s3bPrefix     = "artifacts"
	s3bLocalKey   = "kache-bench-local"
	s3bLocalSec   = "kache-bench-local-secret"
)

// BenchmarkS3Surface (`just bench-s3`) measures kache-sidecar's S3 surface
// (the real binary, defaults as a new user gets them: fsync on, 12 prefetch
// workers) in front of MinIO on loopback, against the same AWS SDK v2
// client talking to MinIO directly, on the same objects (a mix of 64 KiB
// and 4 MiB packs):
//
//   - local-hit GET throughput, 8 clients at once, over direct GETs (goal >= 2);
//   - local-hit p50 latency of 64 KiB GETs, one client, over direct (goal <= 1/3);
//   - read-through miss GETs and write-through PUTs, 8 clients at once, over
//     the same requests sent to MinIO directly (goal <= 1.15 each);
//   - the sidecar's peak RSS (VmHWM) while 16 clients stream 512 MiB objects
//     through it, GET and PUT (goal < 64 MiB);
//   - prefetching into the store over plain minio-go GETs of the same packs
//     and entry manifests written to files (temp, write, fsync, rename: the
//     floor of a file-per-object store), 12 at once (goal >= 0.9), and the
//     CPU seconds per GiB each costs.
//
// Every figure is printed with its goal and MET or NOT MET. The phases are
// sub-benchmarks (get-put, prefetch, rss) that -bench can pick one by one.
// KACHE_BENCH_NOSYNC=1 turns fsync off in the store and the floor alike;
// KACHE_BENCH_PERF=<dir> records the sidecar's CPU profile of each phase
// with perf.
func BenchmarkS3Surface(b *testing.B) {
	o := startMinio(b)
	sidecarBin(b) // built before anything is timed
	var f s3bFigures
	start := time.Now()
	b.Run("get-put", func(b *testing.B) {
		for b.Loop() {
			s3bSurface(b, o, &f)
		}
		f.reportSurface(b)
	})
	b.Run("prefetch", func(b *testing.B) {
		for b.Loop() {
			s3bPrefetch(b, o, &f)
		}
		f.reportPrefetch(b)
	})
	b.Run("rss", func(b *testing.B) {
		for b.Loop() {
			s3bPeakRSS(b, o, &f)
		}
		f.reportRSS(b)
	})
	f.print(time.Since(start))
}

// s3bFigures are what one run measured.
type s3bFigures struct {
	directGet, hitGet, missGet      s3bAgg // GET passes
	pairedDirect                    s3bAgg // the direct pass paired with each miss pass
	directPut, sidecarPut           s3bAgg
	directLat, hitLat               []time.Duration // 64 KiB GETs, one at a time
	floorLat                        []time.Duration // the same from a server answering at once
	seeded                          bool            // the surface phase left its sets in the bucket
	hitCPU, missCPU, putCPU, latCPU time.Duration   // the sidecar's, over the passes above
	hitClientCPU, directClientCPU   time.Duration   // this process's, over the hit and direct passes
	directMinioCPU, putMinioCPU     time.Duration   // MinIO\'s, over the direct GET and PUT passes
	floor, engine                   s3bAgg          // prefetch phase
	floorCPU, engineCPU             time.Duration
	rssGet, rssPut, rssBase         int64
	rssGetTook, rssPutTook          time.Duration
}

// s3bAgg sums passes: bytes moved and wall time.
type s3bAgg struct {
	bytes int64
	took  time.Duration
	n     int
}

func (a *s3bAgg) add(bytes int64, took time.Duration) {
	a.bytes += bytes
	a.took += took
	a.n++
}

func (a s3bAgg) rate() float64 { return s3bMiB(a.bytes) / a.took.Seconds() }

func s3bMiB(n int64) float64 { return float64(n) / (1 << 20) }

// s3bObject is one pack: its crate, cache key and size.
type s3bObject struct {
	crate, key string
	size       int
}

func (x s3bObject) packKey() string     { return layout.PackKey(s3bPrefix, x.crate, x.key) }
func (x s3bObject) manifestKey() string { return layout.EntryManifestKey(s3bPrefix, x.crate, x.key) }

// s3bSet is the named set of s3bPerSet packs.
func s3bSet(name string) []s3bObject {
	objs := make([]s3bObject, 0, s3bPerSet)
	for i := range s3bPerSet {
		size := s3bSmall
		if i%3 == 2 {
			size = s3bLarge
		}
		crate := fmt.Sprintf("s3b_%s_%02d", name, i)
		sum := sha256.Sum256([]byte(crate))
		objs = append(objs, s3bObject{crate: crate, key: hex.EncodeToString(sum[:]), size: size})
	}
	return objs
}

func s3bSmalls(objs []s3bObject) []s3bObject {
	return slices.DeleteFunc(slices.Clone(objs), func(x s3bObject) bool { return x.size != s3bSmall })
}

func s3bTotal(objs []s3bObject) int64 {
	var n int64
	for _, x := range objs {
		n += int64(x.size)
	}
	return n
}

// s3bBodies are the bytes of every small and every large pack: random, so
// nothing along the way compresses them, behind zstd's magic number.
type s3bBodies struct{ small, large []byte }

func newS3bBodies() s3bBodies {
	r := rand.New(rand.NewChaCha8([32]byte{'s', '3', 'b'}))
	body := func(n int) []byte {
		p := make([]byte, n)
		for i := 0; i < n; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < n; j++ {
				p[i+j] = byte(v >> (8 * j))
			}
		}
		copy(p, []byte{0x28, 0xb5, 0x2f, 0xfd})
		return p
	}
	return s3bBodies{small: body(s3bSmall), large: body(s3bLarge)}
}

func (bs s3bBodies) of(x s3bObject) []byte {
	if x.size == s3bSmall {
		return bs.small
	}
	return bs.large
}

// s3bClient is an AWS SDK for Go v2 S3 client as config.LoadDefaultConfig
// sets one up (CRC32 request checksums, response checksums validated), path
// style, with no retries (a failure fails the benchmark instead of being
// timed) and a transport with room for every client of a pass.
func s3bClient(b testing.TB, endpoint, accessKey, secretKey string) *s3.Client {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 2 * s3bBigClients,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
		DisableCompression:  true,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return s3.New(s3.Options{
		Region:       testenv.MinioRegion,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}, nil
		}),
		HTTPClient:                 &http.Client{Transport: tr, Timeout: 10 * time.Minute},
		RetryMaxAttempts:           1,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported,
		// The sidecar serves local objects without the x-amz-checksum-*
		// headers MinIO stored; the SDK then skips validation, and
		// would log that it did for every GET.
		DisableLogOutputChecksumValidationSkipped: true,
	})
}

// discard takes writes and nothing else, so io.CopyBuffer reads through
// the caller's buffer (io.Discard's ReadFrom reads 8 KiB at a time).
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// s3bGet reads a whole object through c and returns its length.
func s3bGet(ctx context.Context, c *s3.Client, key string, buf []byte) (int64, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	defer out.Body.Close()
	n, err := io.CopyBuffer(discard{}, out.Body, buf)
	if err != nil {
		return n, fmt.Errorf("read %s: %w", key, err)
	}
	return n, nil
}

// s3bPut writes body to key through c.
func s3bPut(ctx context.Context, c *s3.Client, key string, body io.Reader, size int64, opts ...func(*s3.Options)) error {
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key),
		Body: body, ContentLength: aws.Int64(size)}, opts...)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// s3bPass runs op on every object, conc at a time, and returns the wall
// time. op returns the bytes it moved, which must be the object's size.
func s3bPass(b *testing.B, objs []s3bObject, conc int, op func(ctx context.Context, x s3bObject, buf []byte) (int64, error)) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(objs) || failed.Load() != nil {
					return
				}
				n, err := op(ctx, objs[i], buf)
				if err == nil && n != int64(objs[i].size) {
					err = fmt.Errorf("%s: %d bytes, want %d", objs[i].crate, n, objs[i].size)
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	return took
}

// s3bSidecar is a `kache-sidecar serve` with its S3 surface, its store in
// a directory of its own that stop removes.
type s3bSidecar struct {
	sidecar
	endpoint string // the S3 surface, http://127.0.0.1:port
	dir      string
}

// s3bStartSidecar starts the sidecar in front of o's bucket with the
// defaults a new user gets (fsync unless KACHE_BENCH_NOSYNC=1 or fsync is
// false), asking central for plans when centralURL is set.
func s3bStartSidecar(b *testing.B, o *objectStore, centralURL string, fsync bool) *s3bSidecar {
	b.Helper()
	dir, err := os.MkdirTemp("", "kache-bench-s3-*")
	must(b, err)
	s3Addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	sc := &s3bSidecar{
		sidecar:  sidecar{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)), store: filepath.Join(dir, "store")},
		endpoint: "http://" + s3Addr,
		dir:      dir,
	}
	env := []string{
		"KACHE_SIDECAR_PLANNER_LISTEN=" + sc.addr,
		"KACHE_SIDECAR_S3_LISTEN=" + s3Addr,
		"KACHE_SIDECAR_STORE_DIR=" + sc.store,
		"KACHE_SIDECAR_STORE_FSYNC=" + strconv.FormatBool(fsync && !s3bNoSync()),
		"KACHE_SIDECAR_S3_ENDPOINT=" + o.endpoint,
		"KACHE_SIDECAR_S3_BUCKET=" + testBucket,
		"KACHE_SIDECAR_S3_PREFIX=" + s3bPrefix,
		"KACHE_SIDECAR_REPOSITORY=acme/app",
		"KACHE_SIDECAR_CENTRAL_ENDPOINT=" + centralURL,
		"AWS_ACCESS_KEY_ID=" + testenv.MinioUser,
		"AWS_SECRET_ACCESS_KEY=" + testenv.MinioSecret,
		"KACHE_SIDECAR_LOCAL_ACCESS_KEY=" + s3bLocalKey,
		"KACHE_SIDECAR_LOCAL_SECRET_KEY=" + s3bLocalSec,
	}
	sc.p = testenv.Start(b, "kache-sidecar", env, sidecarBin(b), "serve")
	b.Cleanup(sc.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ready := func(url string, ok func(*http.Response) bool) bool {
		resp, err := httpc.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return ok(resp)
	}
	if !waitUntil(ctx, 20*time.Millisecond, func() bool {
		return sc.p.Exited() ||
			ready("http://"+sc.addr+"/healthz", func(r *http.Response) bool { return r.StatusCode == 200 }) &&
				ready(sc.endpoint+"/", func(r *http.Response) bool { return r.Header.Get("x-amz-request-id") != "" })
	}) || sc.p.Exited() {
		b.Fatalf("kache-sidecar S3 surface not serving on %s:\n%s", s3Addr, sc.p.Tail(30))
	}
	return sc
}

// stop kills the sidecar and removes its store.
func (sc *s3bSidecar) stop() {
	sc.p.Kill()
	os.RemoveAll(sc.dir)
}

// counter reads a counter from the sidecar's /metrics (absent: 0).
func (sc *s3bSidecar) counter(b *testing.B, series string) int {
	b.Helper()
	v := sc.metric(b, series)
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	must(b, err)
	return int(f)
}

func s3bNoSync() bool { return os.Getenv("KACHE_BENCH_NOSYNC") == "1" }

// s3bCPU is a process's user plus system CPU time so far, from
// /proc/<pid>/stat (in clock ticks of 10 ms).
func s3bCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(b, err)
	// The command name may hold spaces; the fields after it do not.
	i := bytes.LastIndexByte(data, ')')
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state): utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	must(b, errors.Join(err1, err2))
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// s3bPerf starts `perf record -g` on process pid when KACHE_BENCH_PERF
// names a directory, writing <dir>/<phase>.data (read it with `perf report
// -i`), and returns what stops it. The sidecar has no pprof endpoint;
// perf samples the real binary as it runs. Profiling skews the figures.
func s3bPerf(b *testing.B, pid int, phase string) (stop func()) {
	b.Helper()
	dir := os.Getenv("KACHE_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-g", "-q", "-p", strconv.Itoa(pid), "-o", filepath.Join(dir, phase+".data"))
	cmd.Stderr = os.Stderr
	must(b, cmd.Start())
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}

// s3bMinioPid finds the MinIO server listening on host (a child of this
// process, started by testenv) by its command line.
func s3bMinioPid(b *testing.B, host string) int {
	b.Helper()
	dirs, err := os.ReadDir("/proc")
	must(b, err)
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmd, []byte("\x00--address\x00"+host+"\x00")) {
			return pid
		}
	}
	b.Fatalf("no MinIO process listening on %s", host)
	return 0
}

// s3bSelfCPU is this process's CPU time so far.
func s3bSelfCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	must(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// s3bSurface measures GETs and PUTs through the sidecar against MinIO: per
// round, two new sets are PUT, one to MinIO directly (D) and one through
// the sidecar (S); D is then read through the sidecar (every GET a miss)
// and directly, then again through the sidecar (every GET a local hit) and
// directly, alternating; then D's small packs one at a time, alternating,
// each also from an in-process server that answers at once (the client's
// own share of the latency). Which path goes first alternates with the
// round.
func s3bSurface(b *testing.B, o *objectStore, f *s3bFigures) {
	bodies := newS3bBodies()
	sc := s3bStartSidecar(b, o, "", true)
	defer sc.stop()
	minioPid := s3bMinioPid(b, strings.TrimPrefix(o.endpoint, "http://"))
	direct := s3bClient(b, o.endpoint, testenv.MinioUser, testenv.MinioSecret)
	via := s3bClient(b, sc.endpoint, s3bLocalKey, s3bLocalSec)
	instant := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(bodies.small)))
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(bodies.small)
	}))
	defer instant.Close()
	floor := s3bClient(b, instant.URL, s3bLocalKey, s3bLocalSec)
	put := func(c *s3.Client) func(ctx context.Context, x s3bObject, _ []byte) (int64, error) {
		return func(ctx context.Context, x s3bObject, _ []byte) (int64, error) {
			body := bodies.of(x)
			return int64(len(body)), s3bPut(ctx, c, x.packKey(), bytes.NewReader(body), int64(len(body)))
		}
	}
	get := func(c *s3.Client) func(ctx context.Context, x s3bObject, buf []byte) (int64, error) {
		return func(ctx context.Context, x s3bObject, buf []byte) (int64, error) {
			return s3bGet(ctx, c, x.packKey(), buf)
		}
	}
	// sidecarPass times a pass through the sidecar and charges its CPU.
	sidecarPass := func(objs []s3bObject, op func(context.Context, s3bObject, []byte) (int64, error), cpu *time.Duration) time.Duration {
		before := s3bCPU(b, sc.p.Pid())
		took := s3bPass(b, objs, s3bConc, op)
		*cpu += s3bCPU(b, sc.p.Pid()) - before
		return took
	}
	const (
		fetched = `kache_sidecar_demand_requests_total{result="fetched"}`
		local   = `kache_sidecar_demand_requests_total{result="local"}`
	)
	for round := range s3bRounds {
		d, s := s3bSet(fmt.Sprintf("d%d", round)), s3bSet(fmt.Sprintf("s%d", round))
		size := s3bTotal(d)
		first := round%2 == 0

		var putD, putS time.Duration
		prof := s3bPerf(b, sc.p.Pid(), fmt.Sprintf("put-r%d", round+1))
		s3bInOrder(first,
			func() {
				before := s3bCPU(b, minioPid)
				putD = s3bPass(b, d, s3bConc, put(direct))
				f.putMinioCPU += s3bCPU(b, minioPid) - before
			},
			func() { putS = sidecarPass(s, put(via), &f.putCPU) })
		prof()
		f.directPut.add(size, putD)
		f.sidecarPut.add(size, putS)

		// D is in the bucket only: every GET through the sidecar is a miss.
		was := sc.counter(b, fetched)
		var paired, miss time.Duration
		prof = s3bPerf(b, sc.p.Pid(), fmt.Sprintf("miss-r%d", round+1))
		s3bInOrder(first,
			func() { paired = s3bPass(b, d, s3bConc, get(direct)) },
			func() { miss = sidecarPass(d, get(via), &f.missCPU) })
		prof()
		f.missGet.add(size, miss)
		f.pairedDirect.add(size, paired)
		f.directGet.add(size, paired)
		if n := sc.counter(b, fetched) - was; n != len(d) {
			b.Fatalf("round %d: %d of %d miss GETs fetched from the bucket", round, n, len(d))
		}

		// Now D is local: every GET through the sidecar is a hit.
		was = sc.counter(b, local)
		var hits, directs s3bAgg
		prof = s3bPerf(b, sc.p.Pid(), fmt.Sprintf("hit-r%d", round+1))
		for pass := range s3bHitPasses {
			s3bInOrder((round+pass)%2 == 1,
				func() {
					before, minioBefore := s3bSelfCPU(b), s3bCPU(b, minioPid)
					directs.add(size, s3bPass(b, d, s3bConc, get(direct)))
					f.directClientCPU += s3bSelfCPU(b) - before
					f.directMinioCPU += s3bCPU(b, minioPid) - minioBefore
				},
				func() {
					before := s3bSelfCPU(b)
					hits.add(size, sidecarPass(d, get(via), &f.hitCPU))
					f.hitClientCPU += s3bSelfCPU(b) - before
				})
		}
		prof()
		f.directGet.add(directs.bytes, directs.took)
		f.hitGet.add(hits.bytes, hits.took)
		if n := sc.counter(b, local) - was; n != s3bHitPasses*len(d) {
			b.Fatalf("round %d: %d of %d GETs were local hits", round, n, s3bHitPasses*len(d))
		}

		buf := make([]byte, 256<<10)
		one := func(c *s3.Client, x s3bObject, into *[]time.Duration) {
			start := time.Now()
			n, err := s3bGet(context.Background(), c, x.packKey(), buf)
			*into = append(*into, time.Since(start))
			if err == nil && n != int64(x.size) {
				err = fmt.Errorf("%s: %d bytes", x.crate, n)
			}
			must(b, err)
		}
		prof = s3bPerf(b, sc.p.Pid(), fmt.Sprintf("latency-r%d", round+1))
		before := s3bCPU(b, sc.p.Pid())
		for rep := range s3bLatReps {
			for i, x := range s3bSmalls(d) {
				s3bInOrder((rep+i)%2 == 0,
					func() { one(direct, x, &f.directLat) },
					func() { one(via, x, &f.hitLat) })
				one(floor, x, &f.floorLat)
			}
		}
		f.latCPU += s3bCPU(b, sc.p.Pid()) - before
		prof()
		fmt.Printf("bench-s3: round %d  PUT direct %5.0f ms, via sidecar %5.0f ms;  GET direct %5.0f ms, miss %5.0f ms;  hits %5.0f MiB/s, direct %5.0f MiB/s  (%.0f MiB a pass)\n",
			round+1, ms(putD), ms(putS), ms(paired), ms(miss), hits.rate(), directs.rate(), s3bMiB(size))
	}
	f.seeded = true
}

// s3bInOrder runs x then y, or y then x.
func s3bInOrder(xFirst bool, x, y func()) {
	if xFirst {
		x()
		y()
		return
	}
	y()
	x()
}

// s3bPrefetch compares prefetching every pack the surface phase left in
// the bucket (with its entry manifest) into a fresh sidecar's store with
// plain minio-go GETs of the same objects written to files, 12 at a time,
// alternating over two rounds.
func s3bPrefetch(b *testing.B, o *objectStore, f *s3bFigures) {
	var objs []s3bObject
	for round := range s3bRounds {
		objs = append(objs, s3bSet(fmt.Sprintf("d%d", round))...)
		objs = append(objs, s3bSet(fmt.Sprintf("s%d", round))...)
	}
	if !f.seeded {
		bodies := newS3bBodies()
		s3bPass(b, objs, s3bConc, func(ctx context.Context, x s3bObject, _ []byte) (int64, error) {
			body := bodies.of(x)
			_, err := o.client.PutObject(ctx, testBucket, x.packKey(), bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
			return int64(len(body)), err
		})
		f.seeded = true
	}
	manifests := map[string][]byte{}
	cands := make([]wire.PrefetchCandidate, 0, len(objs))
	var total int64
	for _, x := range objs {
		m, err := json.Marshal(wire.EntryManifest{Version: 3, CacheKey: x.key, CrateName: x.crate, PackKey: x.packKey(),
			PackBytes: uint64(x.size), OriginalBytes: uint64(x.size), FileCount: 1})
		must(b, err)
		manifests[x.key] = m
		total += int64(x.size) + int64(len(m))
		cands = append(cands, wire.PrefetchCandidate{CacheKey: x.key, CrateName: x.crate, SizeBytes: uint64(x.size), Source: wire.SourceHistory})
	}
	s3bPass(b, objs, s3bConc, func(ctx context.Context, x s3bObject, _ []byte) (int64, error) {
		m := manifests[x.key]
		_, err := o.client.PutObject(ctx, testBucket, x.manifestKey(), bytes.NewReader(m), int64(len(m)), minio.PutObjectOptions{ContentType: "application/json"})
		return int64(x.size), err
	})
	plan, err := json.Marshal(wire.PrefetchPlan{PlanID: "s3bench", Planner: "stub", Disposition: wire.Execute, Candidates: cands})
	must(b, err)
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !strings.HasSuffix(r.URL.Path, "/prefetch-plan") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(plan)
	}))
	defer stub.Close()
	fmt.Printf("bench-s3: prefetch plan of %d packs + %d entry manifests, %.1f MiB\n", len(objs), len(objs), s3bMiB(total))

	floor := func(round int) {
		before := s3bSelfCPU(b)
		took := s3bFloor(b, o, objs)
		f.floorCPU += s3bSelfCPU(b) - before
		f.floor.add(total, took)
		fmt.Printf("bench-s3: round %d  plain GETs to files  %7.1f MiB/s  (%s, temp+write+fsync %s+rename)\n",
			round+1, s3bMiB(total)/took.Seconds(), took.Round(time.Millisecond), s3bOnOff(!s3bNoSync()))
	}
	engine := func(round int) {
		sc := s3bStartSidecar(b, o, stub.URL, true)
		defer sc.stop()
		prof := s3bPerf(b, sc.p.Pid(), fmt.Sprintf("prefetch-r%d", round+1))
		defer prof()
		before := s3bCPU(b, sc.p.Pid())
		start := time.Now()
		p, _ := sc.plan(b, `{"crate_names":["s3b"],"namespace":null,"cargo_lock_deps":[]}`)
		if len(p.Candidates) != len(cands) {
			b.Fatalf("plan has %d candidates, want %d", len(p.Candidates), len(cands))
		}
		var prog struct {
			Fetched  int   `json:"fetched"`
			Failed   int   `json:"failed"`
			Bytes    int64 `json:"bytes"`
			Finished bool  `json:"finished"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		ok := waitUntil(ctx, 10*time.Millisecond, func() bool {
			resp, err := httpc.Get("http://" + sc.addr + "/v1/prefetch/sessions/" + p.PlanID)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&prog) == nil && prog.Finished
		})
		took := time.Since(start)
		if !ok || prog.Fetched != len(cands) || prog.Bytes != total {
			b.Fatalf("prefetch did not finish: %+v, want %d packs, %d bytes\n%s", prog, len(cands), total, sc.p.Tail(20))
		}
		f.engineCPU += s3bCPU(b, sc.p.Pid()) - before
		f.engine.add(total, took)
		fmt.Printf("bench-s3: round %d  sidecar prefetch     %7.1f MiB/s  (%s, fsync %s)\n",
			round+1, s3bMiB(total)/took.Seconds(), took.Round(time.Millisecond), s3bOnOff(!s3bNoSync()))
	}
	for round := range 2 {
		s3bInOrder(round == 0, func() { floor(round) }, func() { engine(round) })
	}
}

func s3bOnOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// s3bFloor GETs each entry manifest then its pack with minio-go, 12 at a
// time, each into its own file as any file-per-object store must write it
// (temp file, write, fsync, rename), and returns the wall time.
func s3bFloor(b *testing.B, o *objectStore, objs []s3bObject) time.Duration {
	dir, err := os.MkdirTemp("", "kache-bench-files-*")
	must(b, err)
	defer os.RemoveAll(dir)
	return s3bPass(b, objs, s3bEngineConc, func(ctx context.Context, x s3bObject, buf []byte) (int64, error) {
		var n int64
		for _, key := range []string{x.manifestKey(), x.packKey()} {
			var err error
			if n, err = s3bToFile(ctx, o, key, filepath.Join(dir, strings.ReplaceAll(key, "/", "_")), buf); err != nil {
				return 0, err
			}
		}
		return n, nil // the pack's size, which the pass checks
	})
}

func s3bToFile(ctx context.Context, o *objectStore, key, path string, buf []byte) (int64, error) {
	obj, err := o.client.GetObject(ctx, testBucket, key, minio.GetObjectOptions{})
	if err != nil {
		return 0, err
	}
	defer obj.Close()
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return 0, err
	}
	// Through buf, as the engine copies (os.File's ReadFrom would use 32 KiB).
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, obj, buf)
	if err == nil && !s3bNoSync() {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return n, err
}

// s3bPattern is a seekable body of n bytes: a random 1 MiB block over and
// over, the first starting with zstd's magic number.
type s3bPattern struct {
	block []byte
	off   int64
	n     int64
}

func (p *s3bPattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	total := 0
	for len(b) > 0 {
		c := copy(b, p.block[p.off%int64(len(p.block)):])
		b, p.off, total = b[c:], p.off+int64(c), total+c
	}
	return total, nil
}

func (p *s3bPattern) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += p.off
	case io.SeekEnd:
		off += p.n
	default:
		return 0, errors.New("bad whence")
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	p.off = off
	return off, nil
}

// s3bPeakRSS streams 512 MiB packs through fresh sidecars, 16 clients at
// once, and reads the sidecar's VmHWM: GETs of two packs (eight clients
// each) that only the bucket has, so each is fetched once and the others
// join, then the same again as local hits; and in another sidecar, PUTs of
// 512 MiB by 16 clients (to two keys, so the bucket keeps only two). The
// store does not fsync here, and the PUTs are UNSIGNED-PAYLOAD (the SDK
// hashes no body, the sidecar verifies none): neither the page cache nor
// hashing is any part of RSS, and both would only make the run long.
func s3bPeakRSS(b *testing.B, o *objectStore, f *s3bFigures) {
	block := newS3bBodies().large[:1<<20]
	keys := []string{
		layout.PackKey(s3bPrefix, "s3b_big_get_0", strings.Repeat("b0", 32)),
		layout.PackKey(s3bPrefix, "s3b_big_get_1", strings.Repeat("b1", 32)),
	}
	for _, k := range keys {
		_, err := o.client.PutObject(context.Background(), testBucket, k, &s3bPattern{block: block, n: s3bBigSize}, s3bBigSize,
			minio.PutObjectOptions{DisableMultipart: true})
		must(b, err)
	}
	defer func() {
		for _, k := range keys {
			o.client.RemoveObject(context.Background(), testBucket, k, minio.RemoveObjectOptions{})
		}
	}()
	together := func(op func(i int) error) time.Duration {
		var wg sync.WaitGroup
		errs := make(chan error, s3bBigClients)
		start := time.Now()
		for i := range s3bBigClients {
			wg.Go(func() {
				if err := op(i); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		return took
	}

	sc := s3bStartSidecar(b, o, "", false)
	f.rssBase = vmHWM(b, sc.p.Pid())
	c := s3bClient(b, sc.endpoint, s3bLocalKey, s3bLocalSec)
	get := func(i int) error {
		n, err := s3bGet(context.Background(), c, keys[i%len(keys)], make([]byte, 256<<10))
		if err == nil && n != s3bBigSize {
			err = fmt.Errorf("GET %s: %d bytes", keys[i%len(keys)], n)
		}
		return err
	}
	f.rssGetTook = together(get)  // misses, joined
	f.rssGetTook += together(get) // local hits
	f.rssGet = vmHWM(b, sc.p.Pid())
	sc.stop()

	sc = s3bStartSidecar(b, o, "", false)
	c = s3bClient(b, sc.endpoint, s3bLocalKey, s3bLocalSec)
	f.rssPutTook = together(func(i int) error {
		key := layout.PackKey(s3bPrefix, "s3b_big_put", strings.Repeat(strconv.Itoa(i%2), 64))
		return s3bPut(context.Background(), c, key, &s3bPattern{block: block, n: s3bBigSize}, s3bBigSize,
			s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware))
	})
	f.rssPut = vmHWM(b, sc.p.Pid())
	sc.stop()
	for i := range 2 {
		o.client.RemoveObject(context.Background(), testBucket, layout.PackKey(s3bPrefix, "s3b_big_put", strings.Repeat(strconv.Itoa(i), 64)), minio.RemoveObjectOptions{})
	}
}

func s3bP50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func s3bPerGiB(cpu time.Duration, bytes int64) float64 {
	return cpu.Seconds() / (float64(bytes) / (1 << 30))
}

// The figures, each computed from what the phases measured.
func (f *s3bFigures) hitRatio() float64 { return f.hitGet.rate() / f.directGet.rate() }
func (f *s3bFigures) p50Ratio() float64 {
	return float64(s3bP50(f.hitLat)) / float64(s3bP50(f.directLat))
}
func (f *s3bFigures) missRatio() float64 {
	return f.missGet.took.Seconds() / f.pairedDirect.took.Seconds()
}
func (f *s3bFigures) putRatio() float64 {
	return f.sidecarPut.took.Seconds() / f.directPut.took.Seconds()
}
func (f *s3bFigures) prefetchRatio() float64 { return f.engine.rate() / f.floor.rate() }

func (f *s3bFigures) reportSurface(b *testing.B) {
	b.ReportMetric(f.hitRatio(), "hit/direct")
	b.ReportMetric(f.p50Ratio(), "p50-hit/direct")
	b.ReportMetric(f.missRatio(), "miss/direct")
	b.ReportMetric(f.putRatio(), "put/direct")
}

func (f *s3bFigures) reportPrefetch(b *testing.B) {
	b.ReportMetric(f.prefetchRatio(), "prefetch/files")
	b.ReportMetric(s3bPerGiB(f.engineCPU, f.engine.bytes), "prefetch-cpu-s/GiB")
}

func (f *s3bFigures) reportRSS(b *testing.B) {
	b.ReportMetric(s3bMiB(max(f.rssGet, f.rssPut)), "peak-rss-MiB")
}

// print writes every figure measured with its goal and verdict.
func (f *s3bFigures) print(took time.Duration) {
	fmt.Printf("bench-s3: figures (%d clients, sets of %d packs: 48 x 64 KiB + 24 x 4 MiB; store fsync %s; %s in all)\n",
		s3bConc, s3bPerSet, s3bOnOff(!s3bNoSync()), took.Round(time.Second))
	row := func(name, measured, goal string, ok bool) {
		verdict := "NOT MET"
		if ok {
			verdict = "MET"
		}
		fmt.Printf("bench-s3:   %-42s %-46s goal %-7s %s\n", name, measured, goal, verdict)
	}
	perPass := func(a s3bAgg) float64 { return ms(a.took) / float64(a.n) }
	if f.hitGet.n > 0 {
		row("local-hit GET throughput / direct MinIO", fmt.Sprintf("%.2f (%.0f vs %.0f MiB/s)", f.hitRatio(), f.hitGet.rate(), f.directGet.rate()),
			">= 2", f.hitRatio() >= 2)
		row("local-hit p50 / direct MinIO p50, 64 KiB", fmt.Sprintf("%.2f (%.3f vs %.3f ms)", f.p50Ratio(), ms(s3bP50(f.hitLat)), ms(s3bP50(f.directLat))),
			"<= 0.33", f.p50Ratio() <= 1.0/3)
		row("read-through miss GET time / direct", fmt.Sprintf("%.2f (%.0f vs %.0f ms a pass)", f.missRatio(), perPass(f.missGet), perPass(f.pairedDirect)),
			"<= 1.15", f.missRatio() <= 1.15)
		row("write-through PUT time / direct", fmt.Sprintf("%.2f (%.0f vs %.0f ms a pass)", f.putRatio(), perPass(f.sidecarPut), perPass(f.directPut)),
			"<= 1.15", f.putRatio() <= 1.15)
	}
	if f.rssGet > 0 {
		row("sidecar peak RSS, 16 x 512 MiB GET through", fmt.Sprintf("%.1f MiB (%.1f MiB idle; %s)", s3bMiB(f.rssGet), s3bMiB(f.rssBase), f.rssGetTook.Round(time.Second)),
			"< 64", f.rssGet < 64<<20)
		row("sidecar peak RSS, 16 x 512 MiB PUT through", fmt.Sprintf("%.1f MiB (%s)", s3bMiB(f.rssPut), f.rssPutTook.Round(time.Second)),
			"< 64", f.rssPut < 64<<20)
	}
	if f.engine.n > 0 {
		row("prefetch into store / plain GETs to files", fmt.Sprintf("%.2f (%.0f vs %.0f MiB/s)", f.prefetchRatio(), f.engine.rate(), f.floor.rate()),
			">= 0.9", f.prefetchRatio() >= 0.9)
		fmt.Printf("bench-s3:   CPU seconds per GiB: sidecar prefetch %.2f (plain GETs to files, this process: %.2f)\n",
			s3bPerGiB(f.engineCPU, f.engine.bytes), s3bPerGiB(f.floorCPU, f.floor.bytes))
	}
	if f.hitGet.n > 0 {
		direct := f.directGet.bytes - f.pairedDirect.bytes // the direct passes among the hit passes
		fmt.Printf("bench-s3:   CPU seconds per GiB: the sidecar serving local hits %.2f, misses %.2f, PUTs %.2f; MinIO serving direct GETs %.2f, PUTs %.2f; the client (this process) reading local hits %.2f, direct GETs %.2f\n",
			s3bPerGiB(f.hitCPU, f.hitGet.bytes), s3bPerGiB(f.missCPU, f.missGet.bytes), s3bPerGiB(f.putCPU, f.sidecarPut.bytes),
			s3bPerGiB(f.directMinioCPU, direct), s3bPerGiB(f.putMinioCPU, f.directPut.bytes),
			s3bPerGiB(f.hitClientCPU, f.hitGet.bytes), s3bPerGiB(f.directClientCPU, direct))
		fmt.Printf("bench-s3:   reference: the same SDK client against an in-process server that answers 64 KiB at once: p50 %.3f ms (%.2f of direct MinIO's); the sidecar's CPU per 64 KiB local hit: %.0f µs\n",
			ms(s3bP50(f.floorLat)), float64(s3bP50(f.floorLat))/float64(s3bP50(f.directLat)),
			float64(f.latCPU.Microseconds())/float64(len(f.hitLat)))
	}
}
