package retention

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"))
}

func key(i int) string { return fmt.Sprintf("%064x", i+1) }

// fakeBucket answers HEADs from a set of object keys; errKeys fail.
type fakeBucket struct {
	mu      sync.Mutex
	objects map[string]bool
	errKeys map[string]bool
	heads   int
}

func (b *fakeBucket) Stat(_ context.Context, k string) (s3source.Object, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.heads++
	switch {
	case b.errKeys[k]:
		return s3source.Object{}, errors.New("connection refused")
	case b.objects[k]:
		return s3source.Object{Key: k}, nil
	}
	return s3source.Object{}, &s3source.APIError{Code: "NoSuchKey", Status: 404, Key: k}
}

func newStore(t *testing.T, atMs int64, keys ...int) *store.Store {
	t.Helper()
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var obs store.Observation
	for _, k := range keys {
		obs.Artifacts = append(obs.Artifacts, store.Artifact{CacheKey: key(k), CrateName: "serde", SeenAtMs: atMs})
	}
	if _, err := st.Apply(obs); err != nil {
		t.Fatal(err)
	}
	return st
}

func missing(keys ...int) []wire.MissingKey {
	var out []wire.MissingKey
	for _, k := range keys {
		out = append(out, wire.MissingKey{CacheKey: key(k), CrateName: "serde"})
	}
	return out
}

func TestReportMissingWithoutBucketDropsAtOnce(t *testing.T) {
	st := newStore(t, time.Now().UnixMilli(), 0, 1)
	reg := prometheus.NewRegistry()
	s, err := New(Config{}, st, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.ReportMissing(context.Background(), missing(0, 7))
	if err != nil {
		t.Fatal(err)
	}
	if res != (wire.MissingKeysResult{Dropped: 1, Unknown: 1}) {
		t.Fatalf("result %+v", res)
	}
	if _, err := st.Artifact(key(0)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reported key still known: %v", err)
	}
	if _, err := st.Artifact(key(1)); err != nil {
		t.Fatalf("other key: %v", err)
	}
	for reason, want := range map[string]float64{"deleted": 0, "reported_404": 1, "retention": 0} {
		if got := gathered(t, reg, "kache_planner_keys_dropped_total", "reason", reason); got != want {
			t.Errorf("dropped{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if n := gathered(t, reg, "kache_planner_missing_keys_total", "result", "unknown"); n != 1 {
		t.Fatalf("unknown reports %v", n)
	}
}

// TestReportMissingConfirmsWithHead: with the bucket, only keys whose entry
// manifest or pack is really gone are dropped; a failed check keeps the key.
func TestReportMissingConfirmsWithHead(t *testing.T) {
	st := newStore(t, time.Now().UnixMilli(), 0, 1, 2, 3)
	b := &fakeBucket{objects: map[string]bool{}, errKeys: map[string]bool{}}
	for _, k := range []int{0, 1, 3} {
		b.objects[layout.EntryManifestKey("artifacts", "serde", key(k))] = true
	}
	for _, k := range []int{0, 2, 3} {
		b.objects[layout.PackKey("artifacts", "serde", key(k))] = true
	}
	b.errKeys[layout.EntryManifestKey("artifacts", "serde", key(3))] = true
	s, err := New(Config{Prefix: "artifacts", MaxHeads: 2}, st, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 0: both objects there; 1: pack gone; 2: entry manifest gone; 3: the
	// check fails.
	res, err := s.ReportMissing(context.Background(), missing(0, 1, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	if res != (wire.MissingKeysResult{Dropped: 2, Present: 1, Unconfirmed: 1}) {
		t.Fatalf("result %+v", res)
	}
	for k, want := range map[int]bool{0: true, 1: false, 2: false, 3: true} {
		if _, err := st.Artifact(key(k)); (err == nil) != want {
			t.Errorf("key %d kept=%v, want %v", k, err == nil, want)
		}
	}
}

func TestRunExpiresAndCompacts(t *testing.T) {
	now := time.Now()
	st := newStore(t, now.Add(-40*24*time.Hour).UnixMilli(), 0, 1, 2)
	if _, err := st.Apply(store.Observation{Artifacts: []store.Artifact{{CacheKey: key(3), CrateName: "serde", SeenAtMs: now.UnixMilli()}}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Config{Retention: 30 * 24 * time.Hour, CompactAfter: 1}, st, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Expired.Keys != 3 || res.Swept.Keys != 3 || !res.Compacted || st.ArtifactCount() != 1 {
		t.Fatalf("run %+v, %d keys left", res, st.ArtifactCount())
	}
	if n := st.Dropped(store.DropExpired); n != 3 {
		t.Fatalf("dropped %v", n)
	}
	if n := gathered(t, reg, "kache_planner_db_size_bytes", "", ""); n <= 0 {
		t.Fatalf("size metric %v", n)
	}

	// Off: nothing expires.
	off, _ := New(Config{}, st, nil, nil)
	if res, err := off.Run(context.Background()); err != nil || res.Expired != (store.ExpireResult{}) {
		t.Fatalf("off: %+v %v", res, err)
	}
}

func TestStartRunsOnScheduleAndStops(t *testing.T) {
	st := newStore(t, 1, 0)
	s, err := New(Config{Retention: time.Hour, Interval: 10 * time.Millisecond}, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.ArtifactCount() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st.ArtifactCount() != 0 {
		t.Fatal("the scheduled run did not expire the key")
	}
}

// gathered is the value of the series of a metric with label=value (or the
// metric's only series with label "").
func gathered(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool {
				return lp.GetName() == label && lp.GetValue() == value
			}) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}
