//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// sidecarLock is the workspace the sidecar tests build: four crates, two
// with hyphenated package names (kache's package/crate-name mismatch).
const sidecarLock = `version = 3

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde", "proc-macro2", "tokio"]

[[package]]
name = "proc-macro2"
version = "1.0.86"

[[package]]
name = "serde"
version = "1.0.210"
dependencies = ["proc-macro2"]

[[package]]
name = "tokio"
version = "1.36.0"
`

type seededEntry struct {
	crate string
	key   string
	size  int
}

// seedSidecarBucket writes, for each crate, a pack (zstd magic first) and
// its entry manifest in kache's layout, one build manifest for central to
// crawl, and the namespace's shard objects for the sidecar's own plan.
func seedSidecarBucket(t *testing.T, o *objectStore, ns string) []seededEntry {
	t.Helper()
	ctx := context.Background()
	entries := []seededEntry{
		{"proc_macro2", strings.Repeat("1a", 32), 300 << 10},
		{"serde", strings.Repeat("2b", 32), 2 << 20},
		{"tokio", strings.Repeat("3c", 32), 5 << 20},
		{"app", strings.Repeat("4d", 32), 40 << 10},
	}
	var manifest wire.BuildManifest
	manifest.Version = 3
	manifest.ManifestKey = "x86_64-unknown-linux-gnu"
	byCrate := map[string]seededEntry{}
	for i, e := range entries {
		body := bytes.Repeat([]byte{byte(i + 1)}, e.size)
		copy(body, []byte{0x28, 0xb5, 0x2f, 0xfd})
		pk := layout.PackKey("artifacts", e.crate, e.key)
		_, err := o.client.PutObject(ctx, testBucket, pk, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
		must(t, err)
		em, _ := json.Marshal(wire.EntryManifest{Version: 3, CacheKey: e.key, CrateName: e.crate, PackKey: pk, PackBytes: uint64(e.size), OriginalBytes: uint64(e.size), FileCount: 1})
		_, err = o.client.PutObject(ctx, testBucket, layout.EntryManifestKey("artifacts", e.crate, e.key), bytes.NewReader(em), int64(len(em)), minio.PutObjectOptions{ContentType: "application/json"})
		must(t, err)
		manifest.Entries = append(manifest.Entries, wire.ManifestEntry{CacheKey: e.key, CrateName: e.crate, CompileTimeMs: uint64(1000 * (i + 1)), ArtifactSize: uint64(e.size)})
		byCrate[e.crate] = e
	}
	o.putManifest(t, manifest.ManifestKey, manifest)
	deps := []wire.LockDep{{Name: "app", Version: "0.1.0"}, {Name: "proc-macro2", Version: "1.0.86"}, {Name: "serde", Version: "1.0.210"}, {Name: "tokio", Version: "1.36.0"}}
	for _, sh := range layout.Shards(deps) {
		var so wire.ShardObject
		so.Version = 3
		for _, d := range sh.Deps {
			e := byCrate[strings.ReplaceAll(d.Name, "-", "_")]
			size := uint64(e.size)
			so.Entries = append(so.Entries, wire.ShardEntry{CacheKey: e.key, CrateName: e.crate, ArtifactSize: &size})
		}
		b, _ := json.MarshalIndent(so, "", "  ")
		_, err := o.client.PutObject(ctx, testBucket, layout.ShardObjectKey("artifacts", ns, sh.Hash), bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{ContentType: "application/json"})
		must(t, err)
	}
	return entries
}

type sidecar struct {
	p     *testenv.Proc
	addr  string
	store string
}

func startSidecar(t testing.TB, o *objectStore, centralURL string, extra ...string) *sidecar {
	t.Helper()
	port := testenv.FreePort(t)
	sc := &sidecar{addr: fmt.Sprintf("127.0.0.1:%d", port), store: filepath.Join(t.TempDir(), "store")}
	sc.start(t, "kache-sidecar", o, centralURL, extra...)
	return sc
}

// restart starts a new sidecar process on the same address, store and
// hints, once the previous one has exited.
func (sc *sidecar) restart(t testing.TB, o *objectStore, centralURL string, extra ...string) {
	t.Helper()
	sc.start(t, "kache-sidecar-restarted", o, centralURL, extra...)
}

func (sc *sidecar) start(t testing.TB, name string, o *objectStore, centralURL string, extra ...string) {
	t.Helper()
	env := []string{
		"KACHE_SIDECAR_PLANNER_LISTEN=" + sc.addr,
		"KACHE_SIDECAR_STORE_DIR=" + sc.store,
		"KACHE_SIDECAR_S3_ENDPOINT=" + o.endpoint,
		"KACHE_SIDECAR_S3_BUCKET=" + testBucket,
		"KACHE_SIDECAR_CENTRAL_ENDPOINT=" + centralURL,
		"KACHE_SIDECAR_REPOSITORY=acme/app",
		"AWS_ACCESS_KEY_ID=" + testenv.MinioUser,
		"AWS_SECRET_ACCESS_KEY=" + testenv.MinioSecret,
	}
	sc.p = testenv.Start(t, name, env, sidecarBin(t), append([]string{"serve"}, extra...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool {
		resp, err := httpc.Get("http://" + sc.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatalf("%s not live:\n%s", name, sc.p.Tail(20))
	}
}

// plan posts a kache intent and returns the plan and how long it took.
func (sc *sidecar) plan(t testing.TB, body string) (wire.PrefetchPlan, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := httpc.Post("http://"+sc.addr+"/v2/prefetch-plan", "application/json", strings.NewReader(body))
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode != 200 {
		t.Fatalf("plan status %d: %s", resp.StatusCode, b)
	}
	p, err := wire.DecodePlan(b)
	must(t, err)
	return p, took
}

func (sc *sidecar) metric(t testing.TB, series string) string {
	t.Helper()
	resp, err := httpc.Get("http://" + sc.addr + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}

// stored reads an object from the sidecar's store directory.
func (sc *sidecar) stored(kind, crate, key, ext string) ([]byte, error) {
	return os.ReadFile(storePath(sc.store, kind, crate, key, ext))
}

// storePath is where the sidecar keeps an object (sidecar/internal/store).
func storePath(dir, kind, crate, key, ext string) string {
	return filepath.Join(dir, "objects", kind, key[:1], key+"."+crate+ext)
}

// TestSidecarPlansAndPrefetches runs the real binaries: central crawling a
// MinIO bucket, and a sidecar in front of it. A kache intent is answered
// from central (with the runner context), every planned pack and entry
// manifest lands byte-exact in the sidecar's store; a graceful stop reports
// the prefetch session to central as a build timeline; after a restart and
// with central killed, the same intent is answered from the persisted hint
// cache and a new one from the bucket's shards, inside kache's budget; warm
// works through the running sidecar.
func TestSidecarPlansAndPrefetches(t *testing.T) {
	o := startMinio(t)
	const ns = "ci-main"
	entries := seedSidecarBucket(t, o, ns)

	port := testenv.FreePort(t)
	central := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	central.p = testenv.Start(t, "kache-service", append(o.env(), "KACHE_LOG=info"), serviceBin(t), append([]string{
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(t.TempDir(), "db")}, o.args()...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return central.status("/readyz") == 200 }) {
		t.Fatal("central not ready")
	}
	sc := startSidecar(t, o, central.addr)

	// kache's own intent: package names, no namespace.
	kacheIntent := `{"crate_names":["proc-macro2","serde","tokio","app"],"namespace":null,"cargo_lock_deps":[]}`
	p, took := sc.plan(t, kacheIntent)
	if p.Disposition != wire.Execute || len(p.Candidates) != len(entries) || p.Planner != "planner" {
		t.Fatalf("plan from central: %+v", p)
	}
	t.Logf("plan through the sidecar from central: %d candidates in %s", len(p.Candidates), took)

	// The sidecar prefetches the plan it answered.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	if !waitUntil(ctx2, 100*time.Millisecond, func() bool {
		for _, e := range entries {
			if _, err := sc.stored("packs", e.crate, e.key, ".tar.zst"); err != nil {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("packs not prefetched:\n%s", sc.p.Tail(30))
	}
	for _, e := range entries {
		got, err := sc.stored("packs", e.crate, e.key, ".tar.zst")
		must(t, err)
		obj, err := o.client.GetObject(context.Background(), testBucket, layout.PackKey("artifacts", e.crate, e.key), minio.GetObjectOptions{})
		must(t, err)
		want, err := io.ReadAll(obj)
		obj.Close()
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: stored pack differs from the bucket's (%d vs %d bytes)", e.crate, len(got), len(want))
		}
		if _, err := sc.stored("manifests", e.crate, e.key, ".json"); err != nil {
			t.Fatalf("%s: entry manifest not stored: %v", e.crate, err)
		}
	}
	filepath.WalkDir(sc.store, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file left in the store: %s", path)
		}
		return nil
	})

	if v := sc.metric(t, `kache_sidecar_plan_requests_total{source="central"}`); v != "1" {
		t.Errorf("central answers counted: %q, want 1", v)
	}
	// A graceful stop closes the prefetch session and reports it to central
	// as a build timeline; a restarted sidecar (same store and hints) keeps
	// what it had.
	must(t, sc.p.Signal(syscall.SIGTERM))
	select {
	case <-sc.p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not stop on SIGTERM")
	}
	if code := sc.p.ExitCode(); code != 0 {
		t.Fatalf("sidecar exited %d:\n%s", code, sc.p.Tail(20))
	}
	if v := (&sidecar{addr: strings.TrimPrefix(central.addr, "http://")}).metric(t, `kache_planner_build_timelines_total{outcome="inserted"}`); v == "" || v == "0" {
		t.Fatalf("central stored no timeline from the sidecar (%q)", v)
	}
	sc.restart(t, o, central.addr)

	// Central goes away: the same intent comes from the hint cache, an
	// intent with a namespace and lock deps from the bucket's shards.
	central.p.Kill()
	p2, took := sc.plan(t, kacheIntent)
	if p2.Disposition != wire.Execute || len(p2.Candidates) != len(entries) {
		t.Fatalf("plan from the hint cache with central down: %+v", p2)
	}
	nsIntent := `{"crate_names":["proc-macro2","serde","tokio","app"],"namespace":"` + ns + `",` +
		`"cargo_lock_deps":[["app","0.1.0"],["proc-macro2","1.0.86"],["serde","1.0.210"],["tokio","1.36.0"]]}`
	p3, took3 := sc.plan(t, nsIntent)
	if p3.Disposition != wire.Execute || len(p3.Candidates) != len(entries) || p3.Planner != "kache-sidecar" {
		t.Fatalf("plan from the bucket with central down: %+v", p3)
	}
	for _, c := range p3.Candidates {
		if c.Source != wire.SourceShard {
			t.Fatalf("bucket plan candidate not from a shard: %+v", c)
		}
	}
	if took > 750*time.Millisecond || took3 > 750*time.Millisecond {
		t.Fatalf("answers with central down took %s and %s, over kache's 750ms", took, took3)
	}
	t.Logf("central down: hint answer in %s, bucket answer in %s", took, took3)
	for _, src := range []string{"hint", "bucket"} {
		if v := sc.metric(t, `kache_sidecar_plan_requests_total{source="`+src+`"}`); v == "" || v == "0" {
			t.Errorf("no %s answers counted by the restarted sidecar (%q)", src, v)
		}
	}

	// warm through the running sidecar: it asks for a plan and watches the
	// prefetch, which finds every pack already present.
	ws := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ws, "Cargo.lock"), []byte(sidecarLock), 0o644))
	cmd := exec.Command(sidecarBin(t), "warm", "--workspace", ws, "--namespace", ns, "--planner-listen", sc.addr,
		"--store-dir", t.TempDir(), "--progress", "never", "--strict", "--timeout", "60s")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("warm: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(`"via":"sidecar"`)) || !bytes.Contains(out, []byte(`"present":4`)) {
		t.Fatalf("warm did not go through the sidecar or found packs missing:\n%s", out)
	}
}

// TestWarmStandalone: with no sidecar serving, warm plans from the bucket
// itself and prefetches into its store directory; with nothing reachable it
// exits 0, or 3 with --strict.
func TestWarmStandalone(t *testing.T) {
	o := startMinio(t)
	const ns = "ci-main"
	entries := seedSidecarBucket(t, o, ns)
	ws := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ws, "Cargo.lock"), []byte(sidecarLock), 0o644))
	store := filepath.Join(t.TempDir(), "store")
	unused := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	warm := func(extra ...string) (int, []byte) {
		args := append([]string{"warm", "--workspace", ws, "--namespace", ns, "--planner-listen", unused,
			"--store-dir", store, "--progress", "never", "--timeout", "60s"}, extra...)
		cmd := exec.Command(sidecarBin(t), args...)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+testenv.MinioUser, "AWS_SECRET_ACCESS_KEY="+testenv.MinioSecret)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), out
	}
	code, out := warm("--s3-endpoint", o.endpoint, "--s3-bucket", testBucket, "--strict")
	if code != 0 || !bytes.Contains(out, []byte(`"via":"standalone"`)) || !bytes.Contains(out, []byte(`"fetched":4`)) {
		t.Fatalf("standalone warm: exit %d\n%s", code, out)
	}
	for _, e := range entries {
		if _, err := os.Stat(storePath(store, "packs", e.crate, e.key, ".tar.zst")); err != nil {
			t.Fatalf("%s not prefetched: %v", e.crate, err)
		}
	}
	// Nothing reachable: central and the bucket are both down, and a fresh
	// runner holds nothing either.
	store = filepath.Join(t.TempDir(), "fresh")
	dead := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	if code, out := warm("--central-endpoint", dead, "--s3-endpoint", dead, "--s3-bucket", testBucket); code != 0 {
		t.Fatalf("warm must not fail a build: exit %d\n%s", code, out)
	}
	if code, out := warm("--central-endpoint", dead, "--s3-endpoint", dead, "--s3-bucket", testBucket, "--strict"); code != 3 {
		t.Fatalf("warm --strict with nothing reachable: exit %d\n%s", code, out)
	}
}
