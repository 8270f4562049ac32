//go:build e2e

// The engine against a real MinIO server (internal/testenv), through the
// real s3source.Bucket and store: `go test -race -tags e2e ./sidecar/internal/prefetch/`.
// MinIO comes from e2e/tools.sh; without it these tests fail under CI=true
// and skip elsewhere. Everything listens on 127.0.0.1.

package prefetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

const testPrefix = "artifacts"

// bucketFixture is a MinIO bucket seeded in kache's layout, with the
// SHA-256 of every object put, to check what lands in the store.
type bucketFixture struct {
	m   *testenv.Minio
	src *s3source.Bucket

	mu   sync.Mutex
	sums map[string][32]byte // object key -> SHA-256
}

func startBucket(t testing.TB) *bucketFixture {
	t.Helper()
	m := testenv.StartMinio(t)
	src, err := s3source.New(s3source.Config{Endpoint: m.Endpoint, Bucket: m.Bucket, Region: testenv.MinioRegion,
		AccessKey: testenv.MinioUser, SecretKey: testenv.MinioSecret, MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return &bucketFixture{m: m, src: src, sums: map[string][32]byte{}}
}

// source is the bucket as another endpoint sees it (a proxy in front).
func (b *bucketFixture) source(t testing.TB, endpoint string) *s3source.Bucket {
	t.Helper()
	src, err := s3source.New(s3source.Config{Endpoint: endpoint, Bucket: b.m.Bucket, Region: testenv.MinioRegion,
		AccessKey: testenv.MinioUser, SecretKey: testenv.MinioSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return src
}

func (b *bucketFixture) put(t testing.TB, key string, data []byte) {
	t.Helper()
	_, err := b.m.Client.PutObject(context.Background(), b.m.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	b.mu.Lock()
	b.sums[key] = sha256.Sum256(data)
	b.mu.Unlock()
}

// putEntry puts a pack and its entry manifest, whose pack_bytes is
// packBytes (normally len(body)).
func (b *bucketFixture) putEntry(t testing.TB, crate, key string, body []byte, packBytes int) {
	t.Helper()
	b.put(t, layout.PackKey(testPrefix, crate, key), body)
	b.put(t, layout.EntryManifestKey(testPrefix, crate, key), entryManifest(crate, key, packBytes))
}

func entryManifest(crate, key string, packBytes int) []byte {
	m, _ := json.Marshal(wire.EntryManifest{Version: 3, CacheKey: key, CrateName: crate,
		PackKey: layout.PackKey(testPrefix, crate, key), PackBytes: uint64(packBytes), OriginalBytes: uint64(packBytes) * 3, FileCount: 7})
	return m
}

// seedPacks puts one pack of each size (crates crate_0..., keys hexKey(i))
// and returns the plan's candidates in order.
func (b *bucketFixture) seedPacks(t testing.TB, sizes []int) []wire.PrefetchCandidate {
	t.Helper()
	cands := make([]wire.PrefetchCandidate, len(sizes))
	for i, sz := range sizes {
		crate, k := fmt.Sprintf("crate_%d", i), hexKey(i)
		b.putEntry(t, crate, k, packBody(sz, uint64(i)), sz)
		cands[i] = wire.PrefetchCandidate{CacheKey: k, CrateName: crate, Source: wire.SourceShard}
	}
	return cands
}

// packBody is size deterministic bytes that start like a zstd frame (the
// engine checks the magic) and do not compress.
func packBody(size int, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 0x6b61636865))
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	copy(b, zstdMagic[:])
	return b
}

func packRef(c wire.PrefetchCandidate) store.Ref {
	return store.Ref{Kind: store.Pack, Crate: c.CrateName, CacheKey: c.CacheKey}
}

func manifestRef(c wire.PrefetchCandidate) store.Ref {
	return store.Ref{Kind: store.EntryManifest, Crate: c.CrateName, CacheKey: c.CacheKey}
}

// countingSource counts the GETs the engine starts through the real
// Bucket, per object key. (minio-go's own retries of a request that failed
// before its body are inside one Open and not counted.) wrap, when set,
// wraps each body: a test can hold a transfer open mid-stream or slow it.
type countingSource struct {
	src  Source
	wrap func(ctx context.Context, key string, body io.ReadCloser) io.ReadCloser

	mu   sync.Mutex
	gets map[string]int
}

func newCounting(src Source) *countingSource {
	return &countingSource{src: src, gets: map[string]int{}}
}

func (c *countingSource) Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error) {
	c.mu.Lock()
	c.gets[key]++
	c.mu.Unlock()
	body, obj, err := c.src.Open(ctx, key)
	if err == nil && c.wrap != nil {
		body = c.wrap(ctx, key, body)
	}
	return body, obj, err
}

func (c *countingSource) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets[key]
}

// gatedBody holds its first Read until gate closes: a transfer that has
// started (the GET is answered, the connection is open) but is slow.
type gatedBody struct {
	io.ReadCloser
	ctx  context.Context
	gate <-chan struct{}
}

func (g *gatedBody) Read(p []byte) (int, error) {
	select {
	case <-g.gate:
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
	return g.ReadCloser.Read(p)
}

// slowBody reads at most chunk bytes per pause.
type slowBody struct {
	io.ReadCloser
	chunk int
	pause time.Duration
}

func (s *slowBody) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	return s.ReadCloser.Read(p)
}

type realEngine struct {
	*Engine
	st  *store.Store
	dir string
	m   *Metrics
}

// startRealEngine runs an engine on src with a fresh store in dir (a new
// temp dir when empty).
func startRealEngine(t testing.TB, cfg Config, src Source, dir string, storeMax int64) *realEngine {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := store.Open(store.Config{Dir: dir, MaxBytes: storeMax, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Prefix = testPrefix
	m := NewMetrics(prometheus.NewRegistry())
	e := New(cfg, src, st, m, nil, nil)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return &realEngine{Engine: e, st: st, dir: dir, m: m}
}

func (r *realEngine) received() int64 { return int64(counterOf(r.m.bytes)) }

// counterOf reads a counter (prometheus/testutil would add a module to
// go.mod for this one call).
func counterOf(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func waitSession(t testing.TB, s *Session, within time.Duration) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(within):
		t.Fatalf("session did not finish in %s", within)
	}
}

// checkStore proves the store is consistent with its directory and the
// bucket: no temp file is left, every file under objects/ is indexed with
// its size, the index holds nothing more, no reservation is outstanding,
// and every stored object's bytes are the bucket's. It returns the refs.
func checkStore(t testing.TB, b *bucketFixture, r *realEngine) map[store.Ref]bool {
	t.Helper()
	for _, name := range tempFiles(t, r.dir) {
		t.Errorf("temp file left in the store: %s", name)
	}
	refs := map[store.Ref]bool{}
	var files int
	var bytesOnDisk int64
	for _, kind := range []store.Kind{store.Pack, store.EntryManifest} {
		sub, ext := "packs", ".tar.zst"
		if kind == store.EntryManifest {
			sub, ext = "manifests", ".json"
		}
		root := filepath.Join(r.dir, "objects", sub)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			// objects/{kind}/{key[0]}/{key}.{crate}{ext}
			name := strings.TrimSuffix(d.Name(), ext)
			if len(name) < 66 {
				t.Errorf("unexpected file name %s", path)
				return nil
			}
			ref := store.Ref{Kind: kind, Crate: name[65:], CacheKey: name[:64]}
			info, err := d.Info()
			if err != nil {
				return err
			}
			files++
			bytesOnDisk += info.Size()
			if !r.st.Has(ref) {
				t.Errorf("%s is on disk but not in the index", path)
				return nil
			}
			refs[ref] = true
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			want, ok := b.sums[ref.ObjectKey(testPrefix)]
			if !ok || sha256.Sum256(data) != want {
				t.Errorf("%s (%d bytes) does not hold the bucket's object", ref, len(data))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	st := r.st.Stats()
	if st.Objects != files || st.Bytes != bytesOnDisk || st.ReservedBytes != 0 {
		t.Errorf("store stats %+v, on disk %d files of %d bytes", st, files, bytesOnDisk)
	}
	return refs
}

// TestMinioPrefetchSeededBucket: a plan of packs of mixed sizes (some over
// minio-go's 16 MiB multipart threshold, so their ETag is not an MD5) lands
// byte for byte in the store with every entry manifest; each object is one
// GET; a second plan for the same keys issues no GET at all.
func TestMinioPrefetchSeededBucket(t *testing.T) {
	b := startBucket(t)
	sizes := []int{100, 4 << 10, 300 << 10, 999 << 10, 17 << 20, 64, 2 << 20, 50 << 10, 5, 128 << 10}
	for i := range 30 {
		sizes = append(sizes, 1000+i*7919)
	}
	cands := b.seedPacks(t, sizes)
	cands = append(cands, wire.PrefetchCandidate{CacheKey: hexKey(999), CrateName: "not_in_bucket"})
	src := newCounting(b.src)
	r := startRealEngine(t, Config{Concurrency: 12}, src, "", 0)

	s := r.Submit(Plan{ID: "seeded", Candidates: cands})
	waitSession(t, s, 60*time.Second)
	p := r.Progress(s)
	if p.Keys != len(sizes)+1 || p.Fetched != len(sizes) || p.NotFound != 1 || p.Failed != 0 || !p.Finished {
		t.Fatalf("progress %+v", p)
	}
	var want int64
	for i, sz := range sizes {
		want += int64(sz + len(entryManifest(cands[i].CrateName, cands[i].CacheKey, sz)))
	}
	if p.Bytes != want || r.received() != want {
		t.Fatalf("received %d bytes (metric %d), the objects are %d", p.Bytes, r.received(), want)
	}
	refs := checkStore(t, b, r)
	if len(refs) != 2*len(sizes) {
		t.Fatalf("store holds %d objects, want %d", len(refs), 2*len(sizes))
	}
	for _, c := range cands[:len(sizes)] {
		for _, ref := range []store.Ref{packRef(c), manifestRef(c)} {
			if n := src.count(ref.ObjectKey(testPrefix)); n != 1 {
				t.Errorf("%s: %d GETs", ref, n)
			}
		}
	}

	s2 := r.Submit(Plan{ID: "again", Candidates: cands[:len(sizes)]})
	waitSession(t, s2, 30*time.Second)
	if p := r.Progress(s2); p.Present != len(sizes) || p.Bytes != 0 {
		t.Fatalf("second plan progress %+v", p)
	}
	if n := src.count(layout.PackKey(testPrefix, cands[0].CrateName, cands[0].CacheKey)); n != 1 {
		t.Fatalf("a present pack was fetched again (%d GETs)", n)
	}
}

// TestMinioBudgets: the byte budget caps bytes received on the wire (entry
// manifests included), whatever is in flight; the key budget keeps the
// plan's first keys.
func TestMinioBudgets(t *testing.T) {
	b := startBucket(t)
	sizes := make([]int, 40)
	for i := range sizes {
		sizes[i] = 100<<10 + 37<<10*(i%5)
	}
	cands := b.seedPacks(t, sizes)

	t.Run("bytes", func(t *testing.T) {
		const budget = 1<<20 + 12345
		r := startRealEngine(t, Config{Concurrency: 12}, b.src, "", 0)
		s := r.Submit(Plan{Candidates: cands, Budget: Budget{MaxBytes: budget}})
		waitSession(t, s, 30*time.Second)
		p := r.Progress(s)
		if p.Bytes > budget || r.received() > budget {
			t.Fatalf("received %d bytes (metric %d) with a budget of %d", p.Bytes, r.received(), budget)
		}
		if p.Fetched == 0 || p.Skipped == 0 || p.Failed != 0 {
			t.Fatalf("want some fetched, some over budget, none failed: %+v", p)
		}
		checkStore(t, b, r)
		if st := r.st.Stats(); st.Bytes != p.Bytes {
			t.Fatalf("store holds %d bytes, the session received %d", st.Bytes, p.Bytes)
		}
		t.Logf("byte budget %d: fetched %d packs, %d bytes received", budget, p.Fetched, p.Bytes)
	})

	t.Run("bytes with size hints", func(t *testing.T) {
		// With sizes in the plan, a pack that cannot fit is not requested.
		hinted := append([]wire.PrefetchCandidate(nil), cands...)
		for i := range hinted {
			hinted[i].SizeBytes = uint64(sizes[i])
		}
		const budget = 500 << 10
		src := newCounting(b.src)
		r := startRealEngine(t, Config{Concurrency: 4, SkipEntryManifests: true}, src, "", 0)
		s := r.Submit(Plan{Candidates: hinted, Budget: Budget{MaxBytes: budget}})
		waitSession(t, s, 30*time.Second)
		p := r.Progress(s)
		if p.Bytes > budget {
			t.Fatalf("received %d bytes with a budget of %d", p.Bytes, budget)
		}
		gets := 0
		for _, c := range hinted {
			gets += src.count(layout.PackKey(testPrefix, c.CrateName, c.CacheKey))
		}
		if gets != p.Fetched {
			t.Fatalf("%d GETs for %d packs fetched: packs known not to fit were requested", gets, p.Fetched)
		}
		checkStore(t, b, r)
	})

	t.Run("keys", func(t *testing.T) {
		r := startRealEngine(t, Config{Concurrency: 3}, b.src, "", 0)
		s := r.Submit(Plan{Candidates: cands, Budget: Budget{MaxKeys: 5}})
		waitSession(t, s, 30*time.Second)
		for i, c := range cands {
			if has := r.st.Has(packRef(c)); has != (i < 5) {
				t.Errorf("candidate %d stored=%v", i, has)
			}
		}
		if p := r.Progress(s); p.StopReason != "max_keys" || p.Fetched != 5 {
			t.Fatalf("progress %+v", p)
		}
		checkStore(t, b, r)
	})
}

// TestMinioDemandPreemption: speculative transfers are open against MinIO
// but held mid-stream (gatedBody stands in for a slow link); a demand for
// the plan's last key is served on a demand lane before any of them moves,
// and the session later counts it as present instead of fetching it again.
// A demand for a key whose speculative download is in flight joins it:
// one GET, one body's worth of bytes on the wire.
func TestMinioDemandPreemption(t *testing.T) {
	b := startBucket(t)
	sizes := make([]int, 12)
	for i := range sizes {
		sizes[i] = 3 << 20
	}
	cands := b.seedPacks(t, sizes)
	last := cands[len(cands)-1]

	t.Run("jumps the queue", func(t *testing.T) {
		gate := make(chan struct{})
		src := newCounting(b.src)
		lastKey := packRef(last).ObjectKey(testPrefix)
		src.wrap = func(ctx context.Context, key string, body io.ReadCloser) io.ReadCloser {
			if key == lastKey || strings.HasSuffix(key, ".json") {
				return body
			}
			return &gatedBody{ReadCloser: body, ctx: ctx, gate: gate}
		}
		r := startRealEngine(t, Config{Concurrency: 2}, src, "", 0)
		s := r.Submit(Plan{Candidates: cands})
		waitUntil(t, func() bool {
			return src.count(packRef(cands[0]).ObjectKey(testPrefix)) == 1 && src.count(packRef(cands[1]).ObjectKey(testPrefix)) == 1
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		started := time.Now()
		if err := r.Demand(ctx, packRef(last)); err != nil {
			close(gate)
			t.Fatalf("demand behind busy workers: %v", err)
		}
		took := time.Since(started)
		if !r.st.Has(packRef(last)) {
			t.Fatal("demanded pack not in the store")
		}
		p := r.Progress(s)
		if p.Done != 0 || p.Finished {
			t.Fatalf("speculative work moved while held: %+v", p)
		}
		if n := src.count(packRef(cands[2]).ObjectKey(testPrefix)); n != 0 {
			t.Fatalf("the queue advanced past the busy workers (%d GETs of candidate 2)", n)
		}
		t.Logf("demand for the last of %d planned keys served in %s while both workers were busy", len(cands), took.Round(time.Millisecond))
		close(gate)
		waitSession(t, s, 30*time.Second)
		p = r.Progress(s)
		if p.Fetched != len(cands)-1 || p.Present != 1 {
			t.Fatalf("after the demand: %+v", p)
		}
		if n := src.count(lastKey); n != 1 {
			t.Fatalf("demanded pack GET %d times", n)
		}
		if got := counterOf(r.m.demand.WithLabelValues("fetched")); got != 1 {
			t.Fatalf("demand metric fetched=%v", got)
		}
		checkStore(t, b, r)
	})

	t.Run("joins the download in flight", func(t *testing.T) {
		gate := make(chan struct{})
		src := newCounting(b.src)
		target := packRef(cands[0]).ObjectKey(testPrefix)
		src.wrap = func(ctx context.Context, key string, body io.ReadCloser) io.ReadCloser {
			if key != target {
				return body
			}
			return &gatedBody{ReadCloser: body, ctx: ctx, gate: gate}
		}
		r := startRealEngine(t, Config{Concurrency: 1}, src, "", 0)
		s := r.Submit(Plan{Candidates: cands[:1]})
		waitUntil(t, func() bool { return src.count(target) == 1 })
		errc := make(chan error, 3)
		for range 3 {
			go func() { errc <- r.Demand(context.Background(), packRef(cands[0])) }()
		}
		time.Sleep(50 * time.Millisecond)
		select {
		case err := <-errc:
			t.Fatalf("a demand returned (%v) before the download it joined finished", err)
		default:
		}
		close(gate)
		for range 3 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		waitSession(t, s, 30*time.Second)
		if n := src.count(target); n != 1 {
			t.Fatalf("pack GET %d times", n)
		}
		want := int64(sizes[0] + len(entryManifest(cands[0].CrateName, cands[0].CacheKey, sizes[0])))
		if got := r.received(); got != want {
			t.Fatalf("%d bytes received, one copy of the objects is %d", got, want)
		}
		if got := counterOf(r.m.demand.WithLabelValues("joined")); got != 3 {
			t.Fatalf("demand metric joined=%v, want 3", got)
		}
		checkStore(t, b, r)
	})
}

func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !testenv.WaitUntil(ctx, 2*time.Millisecond, cond) {
		t.Fatal("condition not reached in 20 s")
	}
}

// TestMinioRestartMidPrefetch kills MinIO (SIGKILL) while large packs are
// streaming, restarts it on the same port and data two seconds later, and
// checks that the session ends by itself, no partial or temp file is
// visible, the store's index matches its directory and the bucket byte for
// byte, and a second plan fetches whatever the first did not.
func TestMinioRestartMidPrefetch(t *testing.T) {
	b := startBucket(t)
	var sizes []int
	for i := range 24 {
		if i%4 == 0 {
			sizes = append(sizes, 24<<20)
		} else {
			sizes = append(sizes, 200<<10+i*1000)
		}
	}
	cands := b.seedPacks(t, sizes)
	src := newCounting(b.src)
	// About 8 MiB/s per stream, so transfers are surely mid-body at the kill.
	src.wrap = func(_ context.Context, _ string, body io.ReadCloser) io.ReadCloser {
		return &slowBody{ReadCloser: body, chunk: 64 << 10, pause: 8 * time.Millisecond}
	}
	dir := t.TempDir()
	r := startRealEngine(t, Config{Concurrency: 4}, src, dir, 0)
	s := r.Submit(Plan{ID: "before-restart", Candidates: cands})
	waitUntil(t, func() bool { return r.received() > 20<<20 })
	partial := r.received()
	tmp := tempFiles(t, dir)
	b.m.Stop()
	t.Logf("MinIO killed with %d bytes received and %d downloads writing", partial, len(tmp))
	if len(tmp) == 0 {
		t.Fatal("no download was in flight at the kill")
	}
	time.Sleep(2 * time.Second)
	b.m.Restart(t)
	waitSession(t, s, 120*time.Second)
	p := r.Progress(s)
	t.Logf("first session: %+v; retries %v", p, counterOf(r.m.retries))
	if p.Done != p.Keys {
		t.Fatalf("session finished with candidates pending: %+v", p)
	}
	checkStore(t, b, r)

	s2 := r.Submit(Plan{ID: "after-restart", Candidates: cands})
	waitSession(t, s2, 120*time.Second)
	p2 := r.Progress(s2)
	if p2.Failed != 0 || p2.Fetched+p2.Present != len(cands) || p2.Present < p.Fetched {
		t.Fatalf("second session %+v after first %+v", p2, p)
	}
	refs := checkStore(t, b, r)
	for _, c := range cands {
		for _, ref := range []store.Ref{packRef(c), manifestRef(c)} {
			if !refs[ref] {
				t.Errorf("%s missing after the second plan", ref)
			}
		}
	}
	// A process reopening the directory after this one sees the same
	// objects (the directory is locked while this one runs).
	before := r.st.Stats()
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	r.st.Close()
	st2, err := store.Open(store.Config{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if a, b := st2.Stats(), before; a.Objects != b.Objects || a.Bytes != b.Bytes {
		t.Fatalf("reopened store %+v, running store %+v", a, b)
	}
}

// truncatingProxy forwards loopback TCP to MinIO but cuts each connection
// after limit bytes of response: a transfer broken mid-body, as a dropped
// link or a crashing server does it.
func truncatingProxy(t testing.TB, upstream string, limit int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			wg.Go(func() { _, _ = io.CopyN(c, u, limit); c.Close(); u.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// TestMinioCorruptObjects: objects that are wrong are never kept under a
// pack's name, and are counted.
func TestMinioCorruptObjects(t *testing.T) {
	b := startBucket(t)
	good := packBody(5000, 1)
	cases := []struct {
		name      string
		body      []byte
		packBytes int
		retries   float64
	}{
		{name: "pack longer than pack_bytes", body: packBody(6000, 2), packBytes: 5000},
		{name: "pack shorter than pack_bytes (truncated upload)", body: packBody(3000, 3), packBytes: 5000},
		{name: "not a zstd frame", body: append([]byte("PK\x03\x04"), good[4:]...), packBytes: 5000},
		{name: "empty pack", body: []byte{}, packBytes: 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := wire.PrefetchCandidate{CacheKey: hexKey(100 + i), CrateName: "corrupt"}
			b.putEntry(t, c.CrateName, c.CacheKey, tc.body, tc.packBytes)
			r := startRealEngine(t, Config{Concurrency: 1}, b.src, "", 0)
			s := r.Submit(Plan{Candidates: []wire.PrefetchCandidate{c}})
			waitSession(t, s, 30*time.Second)
			if p := r.Progress(s); p.Failed != 1 {
				t.Fatalf("progress %+v", p)
			}
			if r.st.Has(packRef(c)) {
				t.Fatal("corrupt pack kept")
			}
			if got := counterOf(r.m.corrupt); got != 1 {
				t.Fatalf("corrupt metric %v", got)
			}
			if got := counterOf(r.m.retries); got != 0 {
				t.Fatalf("a corrupt object was retried %v times", got)
			}
			checkStore(t, b, r)
		})
	}

	t.Run("truncated in transit", func(t *testing.T) {
		// Entry manifests pass the proxy whole; every pack transfer is cut
		// after 64 KiB of a 1 MiB body, on every attempt.
		c := wire.PrefetchCandidate{CacheKey: hexKey(200), CrateName: "truncated"}
		body := packBody(1<<20, 4)
		b.putEntry(t, c.CrateName, c.CacheKey, body, len(body))
		src := newCounting(b.source(t, truncatingProxy(t, b.m.Host, 64<<10)))
		r := startRealEngine(t, Config{Concurrency: 1, Attempts: 3}, src, "", 0)
		s := r.Submit(Plan{Candidates: []wire.PrefetchCandidate{c}})
		waitSession(t, s, 60*time.Second)
		if p := r.Progress(s); p.Failed != 1 || p.Fetched != 0 {
			t.Fatalf("progress %+v", p)
		}
		if r.st.Has(packRef(c)) {
			t.Fatal("truncated pack kept")
		}
		if n := src.count(packRef(c).ObjectKey(testPrefix)); n != 3 {
			t.Fatalf("%d GETs of the truncated pack, want 3 attempts", n)
		}
		checkStore(t, b, r)
		// The same object through MinIO directly is fine.
		r2 := startRealEngine(t, Config{Concurrency: 1}, b.src, "", 0)
		s2 := r2.Submit(Plan{Candidates: []wire.PrefetchCandidate{c}})
		waitSession(t, s2, 30*time.Second)
		if !r2.st.Has(packRef(c)) {
			t.Fatalf("pack not fetched without the proxy: %+v", r2.Progress(s2))
		}
	})
}

// TestMinioPathTraversal: crate names and cache keys that could name a path
// outside the store (from central, a hint or the bucket) are dropped before
// any GET; nothing is written anywhere but the store directory.
func TestMinioPathTraversal(t *testing.T) {
	b := startBucket(t)
	ok := b.seedPacks(t, []int{4096})[0]
	evil := []wire.PrefetchCandidate{
		{CrateName: "../x", CacheKey: hexKey(1)},
		{CrateName: "..", CacheKey: hexKey(2)},
		{CrateName: "a/../../b", CacheKey: hexKey(3)},
		{CrateName: "/etc", CacheKey: hexKey(4)},
		{CrateName: `..\x`, CacheKey: hexKey(5)},
		{CrateName: "ok", CacheKey: "../../../../tmp/" + strings.Repeat("a", 49)},
		{CrateName: "ok", CacheKey: strings.Repeat("A", 64)},
		{CrateName: "ok", CacheKey: hexKey(6) + "/.."},
		{CrateName: "ok", CacheKey: hexKey(7)[:63]},
		{CrateName: "", CacheKey: hexKey(8)},
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	src := newCounting(b.src)
	r := startRealEngine(t, Config{Concurrency: 4}, src, dir, 0)
	s := r.Submit(Plan{Candidates: append(evil, ok)})
	waitSession(t, s, 30*time.Second)
	if p := r.Progress(s); p.Keys != 1 || p.Fetched != 1 {
		t.Fatalf("progress %+v: only the valid candidate may remain", p)
	}
	if got := counterOf(r.m.keys.WithLabelValues("invalid")); got != float64(len(evil)) {
		t.Fatalf("invalid metric %v, want %d", got, len(evil))
	}
	src.mu.Lock()
	for key := range src.gets {
		if key != packRef(ok).ObjectKey(testPrefix) && key != manifestRef(ok).ObjectKey(testPrefix) {
			t.Errorf("GET of %q", key)
		}
	}
	src.mu.Unlock()
	for _, c := range evil {
		err := r.Demand(context.Background(), packRef(c))
		if !errors.Is(err, store.ErrInvalidRef) {
			t.Errorf("demand %q/%q: %v, want ErrInvalidRef", c.CrateName, c.CacheKey, err)
		}
	}
	err := filepath.WalkDir(parent, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != parent && path != dir && !strings.HasPrefix(path, dir+string(filepath.Separator)) {
			t.Errorf("written outside the store: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if refs := checkStore(t, b, r); len(refs) != 2 {
		t.Fatalf("store holds %v", refs)
	}
}

// tempFiles lists the store's temp files (downloads in progress).
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking: a download just finished
			}
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), store.TempPrefix) {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}
