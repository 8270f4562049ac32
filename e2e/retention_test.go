//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// retentionCrates are the crates of the retention tests, one key each.
var retentionCrates = []string{"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}

func retentionKey(i int) string { return fmt.Sprintf("%02x", 0xa0+i) + strings.Repeat("5e", 31) }

const retentionIntent = `{"crate_names":["alpha","beta","gamma","delta","epsilon","zeta"],"namespace":null,"cargo_lock_deps":[]}`

// planned is the set of keys central plans for the retention intent.
func (r *replica) planned(t *testing.T) map[string]bool {
	t.Helper()
	st, p := r.planFor(retentionIntent)
	if st != 200 {
		t.Fatalf("plan status %d", st)
	}
	out := map[string]bool{}
	for _, c := range p.Candidates {
		out[c.CacheKey] = true
	}
	return out
}

// waitPlanned waits until central plans exactly the keys of want.
func (r *replica) waitPlanned(t *testing.T, what string, want ...int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var got map[string]bool
	if !waitUntil(ctx, 100*time.Millisecond, func() bool {
		got = r.planned(t)
		if len(got) != len(want) {
			return false
		}
		for _, i := range want {
			if !got[retentionKey(i)] {
				return false
			}
		}
		return true
	}) {
		var have []int
		for i := range retentionCrates {
			if got[retentionKey(i)] {
				have = append(have, i)
			}
		}
		t.Fatalf("%s: central plans keys %v, want %v\n%s", what, have, want, r.p.Tail(30))
	}
}

func (r *replica) metric(t *testing.T, series string) float64 {
	t.Helper()
	v := (&sidecar{addr: strings.TrimPrefix(r.addr, "http://")}).metric(t, series)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("metric %s: %q", series, v)
	}
	return f
}

func (r *replica) reportMissing(t *testing.T, keys ...int) wire.MissingKeysResult {
	t.Helper()
	var req wire.MissingKeys
	for _, i := range keys {
		req.Keys = append(req.Keys, wire.MissingKey{CacheKey: retentionKey(i), CrateName: retentionCrates[i]})
	}
	b, _ := json.Marshal(req)
	resp, err := httpc.Post(r.addr+"/v1/missing-keys", "application/json", bytes.NewReader(b))
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var res wire.MissingKeysResult
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &res) != nil {
		t.Fatalf("missing-keys: %d %s", resp.StatusCode, body)
	}
	return res
}

func (r *replica) postManifest(t *testing.T, m wire.BuildManifest) {
	t.Helper()
	b, _ := json.Marshal(m)
	resp, err := httpc.Post(r.addr+"/v1/manifests", "application/json", bytes.NewReader(b))
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("manifest: %d %s", resp.StatusCode, body)
	}
}

// retentionManifest is a build of the given keys, created at.
func retentionManifest(at time.Time, keys ...int) wire.BuildManifest {
	m := wire.BuildManifest{Version: 3, Created: at.UTC().Format(time.RFC3339Nano), ManifestKey: "x86_64-unknown-linux-gnu"}
	for _, i := range keys {
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: retentionKey(i), CrateName: retentionCrates[i],
			CompileTimeMs: uint64(1000 * (i + 1)), ArtifactSize: 4096})
	}
	return m
}

func startRetentionCentral(t *testing.T, env []string, args ...string) *replica {
	t.Helper()
	port := testenv.FreePort(t)
	r := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	r.p = testenv.Start(t, "kache-service", append(env, "KACHE_LOG=info"), serviceBin(t), append([]string{
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(t.TempDir(), "db"), "--retention-interval", "500ms"}, args...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return r.status("/readyz") == 200 }) {
		t.Fatalf("central not ready:\n%s", r.p.Tail(20))
	}
	return r
}

// TestRetentionBucket runs central crawling a real MinIO bucket every
// second, and a real sidecar prefetching its plans: a key whose entry
// manifest (or whole entry) is deleted from the bucket stops being planned
// after the crawl; a key whose pack is gone is reported by the sidecar's
// prefetch, confirmed with a HEAD and dropped, and is not brought back by
// the crawl; a reported key the bucket still has is kept; and every key
// still in the bucket is planned throughout.
func TestRetentionBucket(t *testing.T) {
	o := startMinio(t)
	ctx := context.Background()
	put := func(key string, body []byte) {
		_, err := o.client.PutObject(ctx, testBucket, key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
		must(t, err)
	}
	remove := func(key string) {
		must(t, o.client.RemoveObject(ctx, testBucket, key, minio.RemoveObjectOptions{}))
	}
	all := make([]int, len(retentionCrates))
	for i, crate := range retentionCrates {
		all[i] = i
		k := retentionKey(i)
		pack := append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{byte(i)}, 4092)...)
		put(layout.PackKey("artifacts", crate, k), pack)
		em, _ := json.Marshal(wire.EntryManifest{Version: 3, CacheKey: k, CrateName: crate, PackKey: layout.PackKey("artifacts", crate, k),
			PackBytes: uint64(len(pack)), OriginalBytes: uint64(len(pack)), FileCount: 1})
		put(layout.EntryManifestKey("artifacts", crate, k), em)
	}
	o.putManifest(t, "x86_64-unknown-linux-gnu", retentionManifest(time.Now(), all...))

	central := startRetentionCentral(t, o.env(), o.args()...)
	central.waitPlanned(t, "after the first crawl", all...)

	// 1 loses its entry manifest, 4 its whole entry: both leave plans
	// after the crawl (the second complete listing without them).
	remove(layout.EntryManifestKey("artifacts", retentionCrates[1], retentionKey(1)))
	remove(layout.EntryManifestKey("artifacts", retentionCrates[4], retentionKey(4)))
	remove(layout.PackKey("artifacts", retentionCrates[4], retentionKey(4)))
	start := time.Now()
	central.waitPlanned(t, "after deleting 1 and 4", 0, 2, 3, 5)
	t.Logf("deleted keys left plans %s after their objects left the bucket (crawl every 1s)", time.Since(start).Round(100*time.Millisecond))
	if n := central.metric(t, `kache_planner_keys_dropped_total{reason="deleted"}`); n != 2 {
		t.Fatalf("dropped as deleted: %v", n)
	}

	// 2's pack goes: its entry manifest is still listed, so only a runner
	// finds out. A sidecar prefetching central's plan gets the 404 and
	// reports it; central checks with a HEAD and drops the key.
	remove(layout.PackKey("artifacts", retentionCrates[2], retentionKey(2)))
	sc := startSidecar(t, o, central.addr)
	p, _ := sc.plan(t, retentionIntent)
	if p.Disposition != wire.Execute || len(p.Candidates) != 4 {
		t.Fatalf("plan through the sidecar: %+v", p)
	}
	central.waitPlanned(t, "after the sidecar's 404 report", 0, 3, 5)
	if n := central.metric(t, `kache_planner_keys_dropped_total{reason="reported_404"}`); n != 1 {
		t.Fatalf("dropped as reported: %v", n)
	}
	if v := sc.metric(t, `kache_sidecar_missing_keys_reported_total{result="sent"}`); v != "1" {
		t.Fatalf("sidecar reports sent: %q\n%s", v, sc.p.Tail(20))
	}

	// A report of keys the bucket has (a misconfigured sidecar) drops
	// nothing.
	if res := central.reportMissing(t, 0, 3); res != (wire.MissingKeysResult{Present: 2}) {
		t.Fatalf("report of present keys: %+v", res)
	}

	// Crawls go on: what is in the bucket stays planned, what left stays
	// out (2 included: its listed entry manifest is the one that 404ed).
	deleted := central.metric(t, `kache_planner_keys_dropped_total{reason="deleted"}`)
	time.Sleep(4 * time.Second)
	if got := central.planned(t); len(got) != 3 || !got[retentionKey(0)] || !got[retentionKey(3)] || !got[retentionKey(5)] {
		t.Fatalf("after more crawls central plans %v", got)
	}
	if n := central.metric(t, `kache_planner_keys_dropped_total{reason="deleted"}`); n != deleted {
		t.Fatalf("more keys dropped as deleted: %v", n)
	}
	if n := central.metric(t, `kache_planner_db_size_bytes`); n <= 0 {
		t.Fatalf("database size %v", n)
	}
}

// TestRetentionAgePolicy runs central without a bucket: the age policy
// drops keys not built or used within --retention and keeps the rest, and
// a reported 404 drops a key at once (nothing to check it against).
func TestRetentionAgePolicy(t *testing.T) {
	central := startRetentionCentral(t, nil, "--retention", "1h")
	central.postManifest(t, retentionManifest(time.Now().Add(-2*time.Hour), 0, 1, 2))
	central.postManifest(t, retentionManifest(time.Now(), 2, 3, 4))
	// 2 was built again since: it stays.
	central.waitPlanned(t, "after the age policy", 2, 3, 4)
	if n := central.metric(t, `kache_planner_keys_dropped_total{reason="retention"}`); n != 2 {
		t.Fatalf("dropped by retention: %v", n)
	}
	time.Sleep(time.Second)
	if got := central.planned(t); len(got) != 3 {
		t.Fatalf("the age policy dropped recent keys: %v", got)
	}

	if res := central.reportMissing(t, 3, 0); res != (wire.MissingKeysResult{Dropped: 1, Unknown: 1}) {
		t.Fatalf("report: %+v", res)
	}
	got := central.planned(t)
	if !slices.Equal([]bool{got[retentionKey(2)], got[retentionKey(3)], got[retentionKey(4)]}, []bool{true, false, true}) {
		t.Fatalf("after the report central plans %v", got)
	}
}
