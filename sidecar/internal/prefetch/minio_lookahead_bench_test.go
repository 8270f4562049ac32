//go:build e2e

package prefetch

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// The same-region bucket the look-ahead benchmark models: every request's
// time to first byte, and each response's own streaming rate.
const (
	laLatency = 40 * time.Millisecond
	laRate    = 20 << 20 // bytes per second, per response
	laChunk   = 32 << 10
	laPacks   = 200
	laRuns    = 3
	laAhead   = 12
)

// lookaheadPackSizes is the plan's packs, like a first build's: log-uniform
// 20 KiB - 4 MiB from a fixed seed, in the order drawn.
func lookaheadPackSizes() []int {
	r := rand.New(rand.NewPCG(200, 0x6c6f6f6b61686561))
	lo, hi := math.Log(20<<10), math.Log(4<<20)
	sizes := make([]int, laPacks)
	for i := range sizes {
		sizes[i] = int(math.Exp(lo + r.Float64()*(hi-lo)))
	}
	return sizes
}

// slowBucket is an HTTP proxy on loopback in front of MinIO that waits
// laLatency before forwarding each request and paces each response body at
// laRate, in laChunk writes. The Host header goes through unchanged, so the
// client's SigV4 signature (made for the proxy's address) still verifies.
// It counts GETs in flight and pack bodies streaming (first body byte to
// last), with their peaks.
type slowBucket struct {
	target string
	tr     *http.Transport
	srv    *http.Server
	url    string

	gets, bodies         atomic.Int64
	peakGets, peakBodies atomic.Int64
}

func startSlowBucket(b *testing.B, target string) *slowBucket {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &slowBucket{target: target, tr: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	p.srv = &http.Server{Handler: p}
	p.url = "http://" + ln.Addr().String()
	go p.srv.Serve(ln)
	b.Cleanup(func() {
		p.srv.Close()
		p.tr.CloseIdleConnections()
	})
	return p
}

func (p *slowBucket) resetPeaks() {
	p.peakGets.Store(0)
	p.peakBodies.Store(0)
}

var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *slowBucket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		raisePeak(&p.peakGets, p.gets.Add(1))
		defer p.gets.Add(-1)
	}
	select {
	case <-time.After(laLatency):
	case <-r.Context().Done():
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	pack := r.Method == http.MethodGet && resp.StatusCode/100 == 2 && strings.HasSuffix(r.URL.Path, ".tar.zst")
	fl, _ := w.(http.Flusher)
	buf := make([]byte, laChunk)
	var sent int64
	var start time.Time
	for {
		n, rerr := io.ReadFull(resp.Body, buf)
		if n > 0 {
			if start.IsZero() {
				start = time.Now()
				if pack {
					raisePeak(&p.peakBodies, p.bodies.Add(1))
					defer p.bodies.Add(-1)
				}
			}
			sent += int64(n)
			// This chunk's last byte leaves no earlier than the rate allows.
			time.Sleep(time.Until(start.Add(time.Duration(sent * int64(time.Second) / laRate))))
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if rerr != nil {
			return
		}
	}
}

// predictLookahead is the model's wall time for the plan: `workers` send a
// pack's GET as soon as they take it (plan order, earliest free worker);
// its body starts laLatency later or when the earliest lane frees, whichever
// is last, and streams at laRate. With workers == lanes (no look-ahead) each
// lane does latency + size/rate per pack, in plan order on the earliest
// free lane.
func predictLookahead(sizes []int, lanes, workers int) time.Duration {
	workerFree := make([]time.Duration, workers)
	laneFree := make([]time.Duration, lanes)
	var end time.Duration
	for _, sz := range sizes {
		w := slices.Index(workerFree, slices.Min(workerFree))
		l := slices.Index(laneFree, slices.Min(laneFree))
		start := max(workerFree[w]+laLatency, laneFree[l])
		done := start + time.Duration(int64(sz)*int64(time.Second)/laRate)
		workerFree[w], laneFree[l] = done, done
		end = max(end, done)
	}
	return end
}

// readCounting counts the pack bodies the engine is reading (first Read to
// last byte, or Close): the bodies that hold a lane. The proxy's count also
// holds bodies whose first bytes go into loopback TCP buffers while their
// GET waits for a lane.
type readCounting struct {
	Source
	reading, peak atomic.Int64
}

func (c *readCounting) Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error) {
	body, obj, err := c.Source.Open(ctx, key)
	if err != nil || !strings.HasSuffix(key, ".tar.zst") {
		return body, obj, err
	}
	return &countedBody{ReadCloser: body, c: c, left: obj.Size}, obj, nil
}

type countedBody struct {
	io.ReadCloser
	c             *readCounting
	left          int64
	started, done bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		raisePeak(&b.c.peak, b.c.reading.Add(1))
	}
	n, err := b.ReadCloser.Read(p)
	if b.left -= int64(n); b.left <= 0 || err != nil {
		b.end()
	}
	return n, err
}

func (b *countedBody) end() {
	if b.started && !b.done {
		b.done = true
		b.c.reading.Add(-1)
	}
}

func (b *countedBody) Close() error {
	b.end()
	return b.ReadCloser.Close()
}

func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)/2]
}

// BenchmarkPrefetchLookahead (`just bench-lookahead`) measures what the
// look-ahead buys against a bucket 40 ms away: MinIO behind slowBucket (40
// ms to first byte, 20 MiB/s per response), a plan of 200 packs of 20 KiB
// - 4 MiB and their entry manifests, the engine with 12 lanes and no
// splitting, Lookahead 0 and 12 alternating, 3 runs each into a fresh
// store. It prints each setting's median wall time next to the model's
// prediction for the same plan, their ratio, the proxy's peak GETs in
// flight and pack bodies sending, and the peak pack bodies the engine reads
// at once (at most its 12 lanes).
func BenchmarkPrefetchLookahead(b *testing.B) {
	bf := startBucket(b)
	sizes := lookaheadPackSizes()
	cands := make([]wire.PrefetchCandidate, len(sizes))
	var total, packBytes int64
	for i, sz := range sizes {
		crate, k := fmt.Sprintf("la_crate_%d", i), hexKey(i)
		bf.putEntry(b, crate, k, packBody(sz, uint64(i)), sz)
		cands[i] = wire.PrefetchCandidate{CacheKey: k, CrateName: crate, Source: wire.SourceShard}
		packBytes += int64(sz)
		total += int64(sz) + int64(len(entryManifest(crate, k, sz)))
	}
	proxy := startSlowBucket(b, bf.m.Endpoint)
	// No RangeSource through the wrapper: SplitParts is 1 anyway.
	src := &readCounting{Source: bf.source(b, proxy.url)}
	sorted := slices.Sorted(slices.Values(sizes))
	fmt.Printf("bench-lookahead: %d packs (%.1f MiB, median %.0f KiB, max %.1f MiB) + entry manifests; bucket behind a proxy: %s to first byte, %d MiB/s per response\n",
		len(sizes), mib(packBytes), float64(sorted[len(sorted)/2])/1024, mib(int64(sorted[len(sorted)-1])), laLatency, laRate>>20)

	run := func(ahead int) (el time.Duration, peakGets, peakBodies, peakReads int64) {
		dir, err := os.MkdirTemp(b.TempDir(), "store-*")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		st, err := store.Open(store.Config{Dir: filepath.Join(dir, "store"), NoSync: os.Getenv("KACHE_BENCH_NOSYNC") == "1"})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		cfg := DefaultConfig()
		cfg.Prefix = testPrefix
		cfg.Concurrency = benchConcurrency
		cfg.Lookahead = ahead
		cfg.SplitParts = 1
		e := New(cfg, src, st, nil, nil, nil)
		if err := e.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer e.Stop(context.Background())
		proxy.resetPeaks()
		src.peak.Store(0)
		start := time.Now()
		s := e.Submit(Plan{ID: fmt.Sprintf("lookahead-%d", ahead), Candidates: cands, Budget: Budget{MaxBytes: 1 << 40}})
		select {
		case <-s.Done():
		case <-time.After(2 * time.Minute):
			b.Fatalf("lookahead %d: session not done after 2m: %+v", ahead, e.Progress(s))
		}
		el = time.Since(start)
		if p := e.Progress(s); p.Fetched != len(cands) || p.Bytes != total {
			b.Fatalf("lookahead %d: %+v, want %d fetched, %d bytes", ahead, p, len(cands), total)
		}
		for i, c := range cands {
			f, info, err := st.Open(packRef(c))
			if err != nil {
				b.Fatalf("lookahead %d: pack %d: %v", ahead, i, err)
			}
			f.Close()
			if info.Size != int64(sizes[i]) {
				b.Fatalf("lookahead %d: pack %d stored %d bytes, want %d", ahead, i, info.Size, sizes[i])
			}
		}
		return el, proxy.peakGets.Load(), proxy.peakBodies.Load(), src.peak.Load()
	}

	for b.Loop() {
		times := map[int][]time.Duration{}
		peakGets, peakBodies, peakReads := map[int]int64{}, map[int]int64{}, map[int]int64{}
		for i := range 2 * laRuns {
			ahead := 0
			if i%2 == 1 {
				ahead = laAhead
			}
			el, g, bo, rd := run(ahead)
			times[ahead] = append(times[ahead], el)
			peakGets[ahead], peakBodies[ahead], peakReads[ahead] = max(peakGets[ahead], g), max(peakBodies[ahead], bo), max(peakReads[ahead], rd)
			fmt.Printf("bench-lookahead: run %d  lookahead %2d  %s  (%.1f MiB/s; peak at the proxy: GETs in flight %d, pack bodies sending %d; pack bodies the engine reads %d)\n",
				i/2+1, ahead, el.Round(time.Millisecond), mib(total)/el.Seconds(), g, bo, rd)
		}
		none, ahead := median(times[0]), median(times[laAhead])
		pNone := predictLookahead(sizes, benchConcurrency, benchConcurrency)
		pAhead := predictLookahead(sizes, benchConcurrency, benchConcurrency+laAhead)
		fmt.Printf("bench-lookahead: lookahead  0: measured %s, predicted %s (measured/predicted %.2f); peak GETs %d, pack bodies sending %d, read %d\n",
			none.Round(time.Millisecond), pNone.Round(time.Millisecond), none.Seconds()/pNone.Seconds(), peakGets[0], peakBodies[0], peakReads[0])
		fmt.Printf("bench-lookahead: lookahead %d: measured %s, predicted %s (measured/predicted %.2f); peak GETs %d, pack bodies sending %d, read %d\n",
			laAhead, ahead.Round(time.Millisecond), pAhead.Round(time.Millisecond), ahead.Seconds()/pAhead.Seconds(), peakGets[laAhead], peakBodies[laAhead], peakReads[laAhead])
		fmt.Printf("bench-lookahead: ratio lookahead/none measured %.2f, predicted %.2f\n",
			ahead.Seconds()/none.Seconds(), pAhead.Seconds()/pNone.Seconds())
		b.ReportMetric(none.Seconds(), "none-s")
		b.ReportMetric(ahead.Seconds(), "lookahead-s")
		b.ReportMetric(ahead.Seconds()/none.Seconds(), "ratio")
		b.ReportMetric(pNone.Seconds(), "pred-none-s")
		b.ReportMetric(pAhead.Seconds(), "pred-lookahead-s")
		b.ReportMetric(pAhead.Seconds()/pNone.Seconds(), "pred-ratio")
		b.ReportMetric(float64(peakGets[laAhead]), "peak-gets")
		b.ReportMetric(float64(peakBodies[laAhead]), "peak-pack-bodies-sending")
		b.ReportMetric(float64(peakReads[laAhead]), "peak-pack-bodies-read")
		if peakReads[laAhead] > benchConcurrency {
			b.Errorf("the engine read %d pack bodies at once, more than its %d lanes", peakReads[laAhead], benchConcurrency)
		}
	}
}
