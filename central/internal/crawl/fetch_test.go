package crawl

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// slowBucket answers GETs after a delay and counts how many are in flight.
type slowBucket struct {
	*memBucket
	delay     time.Duration
	fail      string
	inflight  atomic.Int64
	mu        sync.Mutex
	maxFlight int64
}

func (b *slowBucket) ReadAll(ctx context.Context, key string, limit int64) ([]byte, error) {
	n := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	b.mu.Lock()
	b.maxFlight = max(b.maxFlight, n)
	b.mu.Unlock()
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if key == b.fail {
		return nil, errors.New("connection reset")
	}
	return b.memBucket.ReadAll(ctx, key, limit)
}

func manifestsBucket(n int) *memBucket {
	b := newMemBucket()
	for i := range n {
		b.put(layout.BuildManifestKey("p", fmt.Sprintf("m%03d", i)), wire.BuildManifest{Version: 3, Created: "2026-01-02T00:00:00Z",
			Entries: []wire.ManifestEntry{{CacheKey: key(i + 1), CrateName: fmt.Sprintf("c%d", i%7), CompileTimeMs: 5, ArtifactSize: 6}}})
	}
	return b
}

// Manifests are fetched in parallel, never more than Fetchers at once, and
// every one is ingested and counted.
func TestPassFetchesInParallel(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	noErr(t, err)
	defer st.Close()
	b := &slowBucket{memBucket: manifestsBucket(60), delay: 5 * time.Millisecond}
	c := New(b, st, Config{Prefix: "p", Fetchers: 6})
	s, err := c.Pass(context.Background())
	noErr(t, err)
	if s.Manifests != 60 || s.Invalid != 0 {
		t.Fatalf("pass %+v", s)
	}
	if b.maxFlight > 6 || b.maxFlight < 2 {
		t.Fatalf("%d GETs at once, want 2-6", b.maxFlight)
	}
	for i := range 60 {
		if _, err := st.Artifact(key(i + 1)); err != nil {
			t.Fatalf("manifest %d not ingested: %v", i, err)
		}
	}
	if s, err = c.Pass(context.Background()); err != nil || s.Unchanged != 60 || s.Manifests != 0 {
		t.Fatalf("second pass %+v %v", s, err)
	}
}

// A failed GET fails the pass; what was applied stays marked, and the next
// pass reads only the rest.
func TestPassFetchErrorStops(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	noErr(t, err)
	defer st.Close()
	b := &slowBucket{memBucket: manifestsBucket(40), delay: time.Millisecond, fail: layout.BuildManifestKey("p", "m010")}
	c := New(b, st, Config{Prefix: "p", Fetchers: 4})
	if _, err := c.Pass(context.Background()); err == nil {
		t.Fatal("pass succeeded with a failing GET")
	}
	b.fail = ""
	s, err := c.Pass(context.Background())
	noErr(t, err)
	if s.Manifests+s.Unchanged != 40 || s.Manifests == 0 {
		t.Fatalf("second pass %+v", s)
	}
}

// The byte budget bounds the bodies in flight: objects larger than it are
// fetched one at a time.
func TestPassFetchBudget(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	noErr(t, err)
	defer st.Close()
	b := &slowBucket{memBucket: manifestsBucket(12), delay: 2 * time.Millisecond}
	c := New(b, st, Config{Prefix: "p", Fetchers: 8, FetchBudgetBytes: 1})
	s, err := c.Pass(context.Background())
	noErr(t, err)
	if s.Manifests != 12 || b.maxFlight != 1 {
		t.Fatalf("pass %+v, %d GETs at once", s, b.maxFlight)
	}
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
