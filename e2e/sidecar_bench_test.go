//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// BenchmarkSidecarPlanLatency measures the sidecar's planner surface as kache
// sees it (one new connection per request, as kache's reqwest client per
// call): answers from the hint cache, and with central killed, from the hint
// cache and from the bucket's shards. Run with `just bench-sidecar`.
func BenchmarkSidecarPlanLatency(b *testing.B) {
	o := startMinio(b)
	const ns = "ci-main"
	// 300 crates with a shard object each, and a build manifest for central.
	const crates = 300
	var deps []wire.LockDep
	var names []string
	var manifest wire.BuildManifest
	manifest.Version, manifest.ManifestKey = 3, "x86_64-unknown-linux-gnu"
	keyOf := map[string]string{}
	for i := range crates {
		name := fmt.Sprintf("crate_%03d", i)
		key := fmt.Sprintf("%064x", i+1)
		keyOf[name] = key
		names = append(names, name)
		deps = append(deps, wire.LockDep{Name: name, Version: "1.0.0"})
		manifest.Entries = append(manifest.Entries, wire.ManifestEntry{CacheKey: key, CrateName: name, CompileTimeMs: uint64(100 + i), ArtifactSize: uint64(1000 * (i + 1))})
	}
	o.putManifest(b, manifest.ManifestKey, manifest)
	for _, sh := range layout.Shards(deps) {
		so := wire.ShardObject{Version: 3}
		for _, d := range sh.Deps {
			so.Entries = append(so.Entries, wire.ShardEntry{CacheKey: keyOf[d.Name], CrateName: d.Name})
		}
		body, _ := json.Marshal(so)
		_, err := o.client.PutObject(context.Background(), testBucket, layout.ShardObjectKey("artifacts", ns, sh.Hash), bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
		must(b, err)
	}
	port := testenv.FreePort(b)
	central := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	central.p = testenv.Start(b, "kache-service", o.env(), serviceBin(b), append([]string{
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(b.TempDir(), "db")}, o.args()...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return central.status("/readyz") == 200 }) {
		b.Fatal("central not ready")
	}
	// Prefetching is off: this measures the planner surface alone.
	sc := startSidecar(b, o, central.addr, "--prefetch-on-plan=false")
	intentJSON := func(ns string, n, salt int) string {
		in := wire.BuildIntent{CrateNames: names[:n], CargoLockDeps: []wire.LockDep{}}
		if ns != "" {
			in.Namespace = &ns
			in.CargoLockDeps = slices.Clone(deps[:n])
			// A different lock each time, so neither hints nor shards repeat.
			in.CargoLockDeps[0].Version = "1.0." + strconv.Itoa(salt)
		}
		body, _ := json.Marshal(in)
		return string(body)
	}
	kache := intentJSON("", crates, 0)
	if p, _ := sc.plan(b, kache); p.Planner != "planner" || len(p.Candidates) != crates {
		b.Fatalf("first answer not from central: %s, %d candidates", p.Planner, len(p.Candidates))
	}
	const n = 400
	measure := func(label string, body func(i int) string, wantPlanner string) {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			p, took := sc.plan(b, body(i))
			if p.Disposition != wire.Execute || (wantPlanner != "" && p.Planner != wantPlanner) {
				b.Fatalf("%s: answer %d: %s from %s", label, i, p.Disposition, p.Planner)
			}
			lat = append(lat, took)
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		fmt.Printf("sidecar plan latency, %-34s p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  (%d requests, %d candidates)\n",
			label+":", ms(p50), ms(p99), ms(lat[len(lat)-1]), n, crates)
		b.ReportMetric(ms(p99), strings.NewReplacer(" ", "-", ",", "").Replace(label)+"-p99-ms")
	}
	for b.Loop() {
		measure("hint cache, central up", func(int) string { return kache }, "planner")
		central.p.Kill()
		measure("hint cache, central down", func(int) string { return kache }, "planner")
		measure("bucket shards, central down", func(i int) string { return intentJSON(ns, crates, i+1) }, "kache-sidecar")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkSidecarPrefetchRSS measures the sidecar process's peak RSS while
// it prefetches about 2 GiB (20 packs of 64 MiB and 400 of 2 MiB) from
// MinIO; the plan comes from a stub central on loopback. Goal: under 64 MiB,
// since packs are streamed to disk, never held whole.
func BenchmarkSidecarPrefetchRSS(b *testing.B) {
	o := startMinio(b)
	type obj struct {
		crate, key string
		size       int64
	}
	var objs []obj
	for i := range 20 {
		objs = append(objs, obj{fmt.Sprintf("big_%02d", i), fmt.Sprintf("%064x", 1000+i), 64 << 20})
	}
	for i := range 400 {
		objs = append(objs, obj{fmt.Sprintf("small_%03d", i), fmt.Sprintf("%064x", 5000+i), 2 << 20})
	}
	var total int64
	seed := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, x := range objs {
		total += x.size
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body := io.MultiReader(bytes.NewReader([]byte{0x28, 0xb5, 0x2f, 0xfd}), io.LimitReader(patternReader{}, x.size-4))
			_, err := o.client.PutObject(context.Background(), testBucket, layout.PackKey("artifacts", x.crate, x.key), body, x.size,
				minio.PutObjectOptions{PartSize: 128 << 20, DisableMultipart: true})
			if err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	b.Logf("seeded %d packs, %.2f GiB, in %s", len(objs), float64(total)/(1<<30), time.Since(seed).Round(time.Second))
	cands := make([]wire.PrefetchCandidate, 0, len(objs))
	for i, x := range objs {
		d := uint32(i)
		cands = append(cands, wire.PrefetchCandidate{CacheKey: x.key, CrateName: x.crate, SizeBytes: uint64(x.size), Source: wire.SourceHistory, DemandIndex: &d})
	}
	planBody, _ := json.Marshal(wire.PrefetchPlan{PlanID: "plan-rss", Planner: "stub", Disposition: wire.Execute, Candidates: cands})
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !strings.HasSuffix(r.URL.Path, "/prefetch-plan") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(planBody)
	}))
	defer stub.Close()
	for b.Loop() {
		sc := startSidecar(b, o, stub.URL, "--prefetch-max-bytes", "4GiB", "--store-max-bytes", "8GiB", "--prefetch-max-keys", "0")
		before := vmHWM(b, sc.p.Pid())
		start := time.Now()
		p, _ := sc.plan(b, `{"crate_names":["big_00"],"namespace":null,"cargo_lock_deps":[]}`)
		if len(p.Candidates) != len(objs) {
			b.Fatalf("plan has %d candidates", len(p.Candidates))
		}
		var prog struct {
			Fetched  int   `json:"fetched"`
			Failed   int   `json:"failed"`
			Bytes    int64 `json:"bytes"`
			Finished bool  `json:"finished"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		ok := waitUntil(ctx, 200*time.Millisecond, func() bool {
			resp, err := httpc.Get("http://" + sc.addr + "/v1/prefetch/sessions/" + p.PlanID)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&prog) == nil && prog.Finished
		})
		cancel()
		took := time.Since(start)
		if !ok || prog.Fetched != len(objs) {
			b.Fatalf("prefetch did not finish: %+v\n%s", prog, sc.p.Tail(20))
		}
		peak := vmHWM(b, sc.p.Pid())
		fmt.Printf("sidecar prefetch of %.2f GiB (%d packs): %s, %.0f MiB/s; peak RSS %.1f MiB (%.1f MiB before the plan)\n",
			float64(prog.Bytes)/(1<<30), prog.Fetched, took.Round(time.Millisecond), float64(prog.Bytes)/(1<<20)/took.Seconds(),
			float64(peak)/(1<<20), float64(before)/(1<<20))
		b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
		sc.p.Kill()
	}
}

// patternReader yields a non-repeating-looking byte stream cheaply.
type patternReader struct{}

func (patternReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*31 + i>>7)
	}
	return len(p), nil
}

// vmHWM is a process's peak resident set size in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
