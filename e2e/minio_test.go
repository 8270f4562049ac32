//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

const testBucket = testenv.MinioBucket

// objectStore is a real MinIO server on loopback with one bucket.
type objectStore struct {
	endpoint string // http://127.0.0.1:port
	client   *minio.Client
}

func startMinio(t testing.TB) *objectStore {
	t.Helper()
	m := testenv.StartMinio(t)
	return &objectStore{endpoint: m.Endpoint, client: m.Client}
}

// putManifest uploads a kache build manifest as `kache save-manifest` would.
func (o *objectStore) putManifest(t testing.TB, key string, m wire.BuildManifest) {
	b, _ := json.MarshalIndent(m, "", "  ")
	_, err := o.client.PutObject(context.Background(), testBucket, layout.BuildManifestKey("artifacts", key),
		bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{ContentType: "application/json"})
	if err != nil {
		t.Fatalf("put manifest %s: %v", key, err)
	}
}

func (o *objectStore) env() []string {
	return []string{"KACHE_PLANNER_S3_ACCESS_KEY=" + testenv.MinioUser, "KACHE_PLANNER_S3_SECRET_KEY=" + testenv.MinioSecret}
}

func (o *objectStore) args() []string {
	return []string{"--s3-bucket", testBucket, "--s3-endpoint", o.endpoint, "--s3-crawl-interval", "1s"}
}

// buildManifest is build b of a workspace of crates crate_0..crate_{n-1}:
// each build changes the keys of the crates above b%n.
func buildManifest(b, n int) wire.BuildManifest {
	m := wire.BuildManifest{Version: 3, Created: time.UnixMilli(1_700_000_000_000 + int64(b)*60_000).UTC().Format(time.RFC3339Nano), ManifestKey: "x86_64-unknown-linux-gnu"}
	for i := range n {
		gen := 0
		if i >= b%n {
			gen = b
		}
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: fmt.Sprintf("%032x%032x", gen+1, i+1), CrateName: fmt.Sprintf("crate_%d", i), CompileTimeMs: uint64(100 * (i + 1)), ArtifactSize: uint64(1000 * (i + 1))})
	}
	return m
}

// TestRebuildFromBucket: a kache-service with an empty disk is not ready
// until it has crawled the bucket, then plans from what it found; a manifest
// added later is picked up by the next pass.
func TestRebuildFromBucket(t *testing.T) {
	o := startMinio(t)
	for b := range 50 {
		o.putManifest(t, fmt.Sprintf("build-%03d", b), buildManifest(b, 20))
	}
	port := testenv.FreePort(t)
	r := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	started := time.Now()
	r.p = testenv.Start(t, "kache-service", append(o.env(), "KACHE_LOG=info"), serviceBin(t), append([]string{
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(t.TempDir(), "db")}, o.args()...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return r.status("/readyz") == 200 }) {
		t.Fatal("not ready after crawling the bucket")
	}
	t.Logf("rebuilt from 50 manifests and ready in %s", time.Since(started).Round(time.Millisecond))
	resp, err := httpc.Post(r.addr+"/v2/prefetch-plan", "application/json", bytes.NewReader([]byte(`{"crate_names":["crate_0","crate_19"]}`)))
	must(t, err)
	var p wire.PrefetchPlan
	must(t, json.NewDecoder(resp.Body).Decode(&p))
	resp.Body.Close()
	// History takes the keys of each build family's newest build: one
	// key per crate here (every manifest is one family).
	if p.Disposition != wire.Execute || len(p.Candidates) != 2 {
		t.Fatalf("plan after rebuild: %+v", p)
	}
	newest := fmt.Sprintf("%032x%032x", 49+1, 19+1)
	if p.Candidates[0].CacheKey != newest && p.Candidates[1].CacheKey != newest {
		t.Fatalf("newest crate_19 key %s not first: %+v", newest, p.Candidates)
	}

	o.putManifest(t, "build-late", buildManifest(1000, 20))
	late := fmt.Sprintf("%032x%032x", 1000+1, 19+1)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if !waitUntil(ctx2, 200*time.Millisecond, func() bool {
		st, p := r.planFor(`{"crate_names":["crate_19"]}`)
		return st == 200 && len(p.Candidates) > 0 && p.Candidates[0].CacheKey == late
	}) {
		t.Fatal("a manifest added later was not crawled")
	}
}

func (r *replica) planFor(body string) (int, wire.PrefetchPlan) {
	resp, err := httpc.Post(r.addr+"/v2/prefetch-plan", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, wire.PrefetchPlan{}
	}
	defer resp.Body.Close()
	var p wire.PrefetchPlan
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&p) != nil {
		return resp.StatusCode, wire.PrefetchPlan{}
	}
	return 200, p
}
