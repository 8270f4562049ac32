package api

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// BenchmarkPlanHandler measures one 500-crate plan through the whole HTTP
// path (in-memory listener), with and without the plan cache.
func BenchmarkPlanHandler(b *testing.B) {
	for _, cached := range []bool{false, true} {
		b.Run(fmt.Sprintf("cache=%v", cached), func(b *testing.B) {
			h := newHarness(b, func(c *Config) {
				if !cached {
					c.PlanCacheBytes = 0
				}
				c.MaxManifestBytes = 4 << 20
			})
			ns := "bench"
			for build := range 4 {
				m := wire.BuildManifest{Version: 3, Namespace: &ns}
				for i := range 1000 {
					m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: fmt.Sprintf("%032x%032x", build+1, i+1), CrateName: fmt.Sprintf("crate_%05d", i), CompileTimeMs: uint64(i), ArtifactSize: 1000})
					m.CargoLockDeps = append(m.CargoLockDeps, wire.LockDep{Name: fmt.Sprintf("crate-%05d", i), Version: "1.0.0"})
				}
				body, _ := json.Marshal(m)
				if r := h.postJSON("/v1/manifests", string(body)); r.status != 200 {
					b.Fatalf("ingest %d %s", r.status, r.body)
				}
			}
			in := wire.BuildIntent{Namespace: &ns}
			for i := range 500 {
				in.CrateNames = append(in.CrateNames, fmt.Sprintf("crate-%05d", i))
				in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: fmt.Sprintf("crate-%05d", i), Version: "1.0.0"})
			}
			body, _ := json.Marshal(in)
			b.ResetTimer()
			for b.Loop() {
				if r := h.do("POST", "/v2/prefetch-plan", body, "Content-Type", "application/json"); r.status != 200 {
					b.Fatal(r.status)
				}
			}
		})
	}
}
