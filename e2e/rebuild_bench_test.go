//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// BenchmarkRebuildFromBucket measures how long a kache-service with an empty
// disk takes to become ready from a bucket of N build manifests (N from
// KACHE_E2E_REBUILD_MANIFESTS, default 10,000; 300 entries each over 2,000
// crates). Run it with `just bench-rebuild`.
func BenchmarkRebuildFromBucket(b *testing.B) {
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("KACHE_E2E_REBUILD_MANIFESTS")); err == nil && v > 0 {
		n = v
	}
	o := startMinio(b)
	upload := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				m := buildManifest(i, 300)
				for j := range m.Entries {
					m.Entries[j].CrateName = fmt.Sprintf("crate_%d", (i*7+j)%2000)
				}
				o.putManifest(b, fmt.Sprintf("runner-%05d", i), m)
			}
		}()
	}
	wg.Wait()
	b.Logf("uploaded %d manifests in %s", n, time.Since(upload).Round(time.Millisecond))
	for b.Loop() {
		port := testenv.FreePort(b)
		r := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
		started := time.Now()
		r.p = testenv.Start(b, "kache-service", o.env(), serviceBin(b), append([]string{
			"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(b.TempDir(), "db")}, o.args()...)...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		ok := waitUntil(ctx, 100*time.Millisecond, func() bool { return r.status("/readyz") == 200 })
		cancel()
		if !ok {
			b.Fatal("not ready")
		}
		el := time.Since(started)
		b.ReportMetric(el.Seconds(), "s-to-ready")
		b.ReportMetric(float64(n)/el.Seconds(), "manifests/s")
		b.ReportMetric(float64(n*300)/el.Seconds(), "entries/s")
		r.p.Kill()
	}
}
