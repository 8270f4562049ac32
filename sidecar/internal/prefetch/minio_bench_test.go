//go:build e2e

package prefetch

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// benchPackSizes is the benchmark's 700 packs, drawn from a fixed seed so
// every run moves the same bytes (about 0.9 GiB), in a shuffled plan order:
//
//	595 (85%)  1 KiB - 1 MiB, log-uniform   (most rlibs)
//	 91 (13%)  1 MiB - 10 MiB, log-uniform
//	 11 (1.6%) 10 MiB - 50 MiB, log-uniform
//	  3 (0.4%) 50 MiB - 96 MiB, uniform     (the few huge crates)
func benchPackSizes() []int {
	r := rand.New(rand.NewPCG(700, 0x7369646563617200))
	logUniform := func(lo, hi float64) int { return int(math.Exp(math.Log(lo) + r.Float64()*(math.Log(hi)-math.Log(lo)))) }
	var sizes []int
	for range 595 {
		sizes = append(sizes, logUniform(1<<10, 1<<20))
	}
	for range 91 {
		sizes = append(sizes, logUniform(1<<20, 10<<20))
	}
	for range 11 {
		sizes = append(sizes, logUniform(10<<20, 50<<20))
	}
	for range 3 {
		sizes = append(sizes, 50<<20+r.IntN(46<<20))
	}
	r.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	return sizes
}

const benchConcurrency = 12

// BenchmarkPrefetchThroughput (`just bench-sidecar`) seeds MinIO with 700
// packs and their entry manifests (benchPackSizes), then, alternating to
// even out noise, measures (a) plain minio-go GETs of every object (entry
// manifest then pack, in plan order, 12 at a time) into io.Discard and (b)
// the Engine prefetching the same plan into a fresh store (12 workers, fsync
// on as in production). It prints both rates and their ratio; the goal is
// at least 0.8. For reference it also times plain GETs each written to a
// file (temp, fsync, rename): the disk's share of the gap.
func BenchmarkPrefetchThroughput(b *testing.B) {
	bf := startBucket(b)
	sizes := benchPackSizes()
	var total int64
	cands := make([]wire.PrefetchCandidate, len(sizes))
	seedStart := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(sizes) {
					return
				}
				crate, k := fmt.Sprintf("bench_crate_%d", i), hexKey(i)
				bf.putEntry(b, crate, k, packBody(sizes[i], uint64(i)), sizes[i])
				cands[i] = wire.PrefetchCandidate{CacheKey: k, CrateName: crate, Source: wire.SourceShard}
			}
		})
	}
	wg.Wait()
	for i, c := range cands {
		total += int64(sizes[i]) + int64(len(entryManifest(c.CrateName, c.CacheKey, sizes[i])))
	}
	sorted := slices.Sorted(slices.Values(sizes))
	var under1M, over50M int
	for _, s := range sizes {
		if s < 1<<20 {
			under1M++
		}
		if s > 50<<20 {
			over50M++
		}
	}
	fmt.Printf("bench-sidecar: seeded %d packs + %d entry manifests, %.1f MiB in %s; packs under 1 MiB %d, over 50 MiB %d; median %.0f KiB, p90 %.1f MiB, max %.1f MiB\n",
		len(sizes), len(sizes), mib(total), time.Since(seedStart).Round(time.Millisecond), under1M, over50M,
		float64(sorted[len(sorted)/2])/1024, mib(int64(sorted[len(sorted)*9/10])), mib(int64(sorted[len(sorted)-1])))

	plain := plainClient(b, bf.m)
	for b.Loop() {
		var plainRates, engineRates, diskRates []float64
		for round := range 2 {
			runPlain := func() {
				el := plainGets(b, plain, bf.m.Bucket, cands, total, false)
				plainRates = append(plainRates, mib(total)/el.Seconds())
				fmt.Printf("bench-sidecar: round %d  plain minio-go GETs  %7.1f MiB/s  (%s)\n", round+1, mib(total)/el.Seconds(), el.Round(time.Millisecond))
			}
			runEngine := func() {
				el := enginePrefetch(b, bf, cands, total)
				engineRates = append(engineRates, mib(total)/el.Seconds())
				fmt.Printf("bench-sidecar: round %d  engine into store    %7.1f MiB/s  (%s, fsync %s)\n", round+1, mib(total)/el.Seconds(), el.Round(time.Millisecond), syncMode())
			}
			runDisk := func() {
				el := plainGets(b, plain, bf.m.Bucket, cands, total, true)
				diskRates = append(diskRates, mib(total)/el.Seconds())
				fmt.Printf("bench-sidecar: round %d  plain GETs to files  %7.1f MiB/s  (%s, temp+write+fsync %s+rename, reference)\n", round+1, mib(total)/el.Seconds(), el.Round(time.Millisecond), syncMode())
			}
			if round%2 == 0 {
				runPlain()
				runEngine()
				runDisk()
			} else {
				runDisk()
				runEngine()
				runPlain()
			}
		}
		d := mean(diskRates)
		p, e := mean(plainRates), mean(engineRates)
		ratio := e / p
		verdict := "meets"
		if ratio < 0.8 {
			verdict = "BELOW"
		}
		fmt.Printf("bench-sidecar: plain %.1f MiB/s, engine %.1f MiB/s, ratio %.2f (%s the goal of >= 0.80)\n", p, e, ratio, verdict)
		fmt.Printf("bench-sidecar: reference: plain GETs written to files %.1f MiB/s (%.2f of plain); engine / files %.2f\n", d, d/p, e/d)
		b.ReportMetric(p, "plain-MiB/s")
		b.ReportMetric(e, "engine-MiB/s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(d, "files-MiB/s")
	}
}

func syncMode() string {
	if os.Getenv("KACHE_BENCH_NOSYNC") == "1" {
		return "off"
	}
	return "on"
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// plainClient is a minio-go client tuned as s3source tunes its own.
func plainClient(b *testing.B, m *testenv.Minio) *minio.Client {
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		b.Fatal(err)
	}
	tr.MaxIdleConnsPerHost = 16
	tr.DisableCompression = true
	b.Cleanup(tr.CloseIdleConnections)
	c, err := minio.New(m.Host, &minio.Options{Creds: credentials.NewStaticV4(testenv.MinioUser, testenv.MinioSecret, ""),
		Region: testenv.MinioRegion, BucketLookup: minio.BucketLookupPath, Transport: tr, MaxRetries: 3})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// plainGets GETs every entry manifest and pack, 12 candidates at a time,
// into io.Discard, or, with toDisk, each into its own file the way any
// cache must write it (temp file, fsync, rename; no engine, no checks) to
// show what the disk alone costs.
func plainGets(b *testing.B, c *minio.Client, bucket string, cands []wire.PrefetchCandidate, want int64, toDisk bool) time.Duration {
	ctx := context.Background()
	var dir string
	if toDisk {
		var err error
		if dir, err = os.MkdirTemp("", "kache-bench-files-*"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	var next atomic.Int64
	var got atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchConcurrency)
	start := time.Now()
	for range benchConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cands) {
					return
				}
				for _, ref := range []store.Ref{manifestRef(cands[i]), packRef(cands[i])} {
					obj, err := c.GetObject(ctx, bucket, ref.ObjectKey(testPrefix), minio.GetObjectOptions{})
					if err != nil {
						errs <- err
						return
					}
					var n int64
					if toDisk {
						n, err = copyToFile(obj, dir, fmt.Sprintf("%d-%d", i, ref.Kind))
					} else {
						n, err = io.Copy(io.Discard, obj)
					}
					obj.Close()
					if err != nil {
						errs <- err
						return
					}
					got.Add(n)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if got.Load() != want {
		b.Fatalf("plain GETs read %d bytes, want %d", got.Load(), want)
	}
	return el
}

func copyToFile(r io.Reader, dir, name string) (int64, error) {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil && os.Getenv("KACHE_BENCH_NOSYNC") != "1" {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	return n, err
}

// enginePrefetch prefetches the plan into a fresh store with fsync on and
// removes the store afterwards.
func enginePrefetch(b *testing.B, bf *bucketFixture, cands []wire.PrefetchCandidate, want int64) time.Duration {
	dir, err := os.MkdirTemp("", "kache-bench-store-*")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// KACHE_BENCH_NOSYNC=1 turns fsync off (here and in copyToFile), to
	// tell the disk's cost from the engine's.
	st, err := store.Open(store.Config{Dir: dir, NoSync: os.Getenv("KACHE_BENCH_NOSYNC") == "1"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := DefaultConfig()
	cfg.Prefix = testPrefix
	cfg.Concurrency = benchConcurrency
	e := New(cfg, bf.src, st, nil, nil, nil)
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer e.Stop(context.Background())
	start := time.Now()
	s := e.Submit(Plan{ID: "bench", Candidates: cands, Budget: Budget{MaxBytes: 1 << 40}})
	<-s.Done()
	el := time.Since(start)
	if p := e.Progress(s); p.Fetched != len(cands) || p.Bytes != want {
		b.Fatalf("engine: %+v, want %d fetched, %d bytes", p, len(cands), want)
	}
	return el
}
