package crawl

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// memBucket is an in-memory Source.
type memBucket struct {
	mu      sync.Mutex
	objects map[string][]byte
	etags   map[string]string
	gets    int
}

func newMemBucket() *memBucket {
	return &memBucket{objects: map[string][]byte{}, etags: map[string]string{}}
}

func (b *memBucket) put(key string, v any) {
	data, ok := v.([]byte)
	if !ok {
		data, _ = json.Marshal(v)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[key] = data
	b.etags[key] = fmt.Sprintf("etag-%d-%d", len(data), len(b.etags))
}

func (b *memBucket) List(ctx context.Context, prefix string, fn func(s3source.Object) error) error {
	b.mu.Lock()
	var keys []string
	for k := range b.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	b.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		b.mu.Lock()
		o := s3source.Object{Key: k, ETag: b.etags[k], Size: int64(len(b.objects[k])), LastModified: time.UnixMilli(1_700_000_000_000)}
		b.mu.Unlock()
		if err := fn(o); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (b *memBucket) ReadAll(_ context.Context, key string, limit int64) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gets++
	d, ok := b.objects[key]
	if !ok {
		return nil, s3source.ErrNotFound
	}
	if int64(len(d)) > limit {
		return nil, s3source.ErrTooLarge
	}
	return d, nil
}

func key(i int) string { return fmt.Sprintf("%064x", i) }

func TestPassIngestsAndRemembers(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newMemBucket()
	b.put(layout.BuildManifestKey("artifacts", "x86_64-unknown-linux-gnu"), wire.BuildManifest{Version: 3, Created: "2026-01-02T00:00:00Z",
		Entries: []wire.ManifestEntry{{CacheKey: key(1), CrateName: "serde", CompileTimeMs: 900, ArtifactSize: 100}, {CacheKey: "bad", CrateName: "x"}}})
	b.put(layout.BuildManifestKey("artifacts", "id/0123456789abcdef/aarch64-apple-darwin/release"), wire.BuildManifest{Version: 3,
		Entries: []wire.ManifestEntry{{CacheKey: key(2), CrateName: "tokio", CompileTimeMs: 5, ArtifactSize: 6}}})
	cost := uint64(77)
	b.put(layout.ShardObjectKey("artifacts", "linux/hash/debug", strings.Repeat("ab", 32)), wire.ShardObject{Version: 3,
		Entries: []wire.ShardEntry{{CacheKey: key(3), CrateName: "syn", CompileTimeMs: &cost}}})
	b.put(layout.BuildManifestKey("artifacts", "garbage"), []byte("{not json"))
	b.put(layout.EntryManifestKey("artifacts", "rand", key(4)), []byte("{}"))
	b.put(layout.EntryManifestKey("artifacts", "serde", key(1)), []byte("{}"))
	b.put("artifacts/v3/manifests/../evil/"+key(5)+".json", []byte("{}"))

	c := New(b, st, Config{Prefix: "artifacts"})
	s, err := c.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Manifests != 2 || s.Shards != 1 || s.Listed != 1 || s.ListedSeen != 1 || s.Invalid != 3 {
		t.Fatalf("first pass %+v", s)
	}
	if vs, _ := st.Variants("serde"); len(vs) != 1 || vs[0].CompileTimeMs != 900 {
		t.Fatalf("serde %+v", vs)
	}
	if vs, _ := st.Variants("tokio"); len(vs) != 1 || vs[0].Target != "aarch64-apple-darwin" || vs[0].Profile != "release" {
		t.Fatalf("identity dims not read: %+v", vs)
	}
	if vs, _ := st.Variants("syn"); len(vs) != 1 || vs[0].CompileTimeMs != 77 {
		t.Fatalf("shard entry %+v", vs)
	}
	if keys, _ := st.CrateKeys("rand", 0); len(keys) != 1 {
		t.Fatalf("listed key missing: %v", keys)
	}
	gets := b.gets
	s, err = c.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Manifests != 0 || s.Shards != 0 || s.Unchanged != 4 || b.gets != gets {
		t.Fatalf("second pass re-read objects: %+v, gets %d -> %d", s, gets, b.gets)
	}
	// A rewritten manifest (new ETag) is read again.
	b.put(layout.BuildManifestKey("artifacts", "x86_64-unknown-linux-gnu"), wire.BuildManifest{Version: 3, Created: "2026-01-03T00:00:00Z",
		Entries: []wire.ManifestEntry{{CacheKey: key(9), CrateName: "serde", CompileTimeMs: 1000, ArtifactSize: 100}}})
	if s, _ = c.Pass(context.Background()); s.Manifests != 1 {
		t.Fatalf("changed manifest not re-read: %+v", s)
	}
	if vs, _ := st.Variants("serde"); len(vs) != 2 || vs[0].CacheKey != key(9) {
		t.Fatalf("serde after update %+v", vs)
	}
}

func TestStartSignalsSyncedOnceAndStops(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newMemBucket()
	b.put(layout.BuildManifestKey("p", "k"), wire.BuildManifest{Entries: []wire.ManifestEntry{{CacheKey: key(1), CrateName: "a"}}})
	synced := make(chan struct{}, 10)
	c := New(b, st, Config{Prefix: "p", Interval: 10 * time.Millisecond, OnSynced: func() { synced <- struct{}{} }})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-synced:
	case <-time.After(5 * time.Second):
		t.Fatal("never synced")
	}
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 0 {
		t.Fatalf("OnSynced called %d more times", len(synced))
	}
}
