package crawl

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func (b *memBucket) remove(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.objects, key)
	delete(b.etags, key)
}

// flakySource fails a listing of entry manifests after some objects, or
// lists them by cache key, the crates' keys not together.
type flakySource struct {
	*memBucket
	failAfter int
	byKey     bool
}

var errListing = errors.New("connection reset")

func (f *flakySource) List(ctx context.Context, prefix string, fn func(s3source.Object) error) error {
	if prefix != layout.EntryManifestsPrefix("artifacts") || (f.failAfter == 0 && !f.byKey) {
		return f.memBucket.List(ctx, prefix, fn)
	}
	var objs []s3source.Object
	_ = f.memBucket.List(ctx, prefix, func(o s3source.Object) error { objs = append(objs, o); return nil })
	if f.byKey {
		slices.SortFunc(objs, func(a, b s3source.Object) int { return strings.Compare(path.Base(a.Key), path.Base(b.Key)) })
	}
	for i, o := range objs {
		if f.failAfter > 0 && i == f.failAfter {
			return errListing
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

func known(st *store.Store, keys ...int) []int {
	var out []int
	for _, k := range keys {
		if _, err := st.Artifact(key(k)); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// TestDeletedKeysLeaveAfterTwoListings: a key whose entry manifest left
// the bucket is dropped by the second complete listing without it; keys
// still present, and keys no listing ever had, stay.
func TestDeletedKeysLeaveAfterTwoListings(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newMemBucket()
	src := &flakySource{memBucket: b}
	for k, crate := range map[int]string{1: "serde", 2: "serde", 3: "serde", 4: "tokio", 5: "syn"} {
		b.put(layout.EntryManifestKey("artifacts", crate, key(k)), []byte("{}"))
	}
	// Key 6 is only in a build manifest: central cannot tell a wrong
	// prefix from a deletion for it, so the listing never drops it.
	b.put(layout.BuildManifestKey("artifacts", "x"), wire.BuildManifest{Version: 3, Created: "2026-01-02T00:00:00Z",
		Entries: []wire.ManifestEntry{{CacheKey: key(1), CrateName: "serde"}, {CacheKey: key(6), CrateName: "serde"}}})
	c := New(src, st, Config{Prefix: "artifacts"})
	pass := func(name string) Stats {
		t.Helper()
		s, err := c.Pass(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return s
	}
	if s := pass("first"); s.Listed != 4 || s.ListedSeen != 1 || s.Unlisted != 0 {
		t.Fatalf("first pass %+v", s)
	}
	if v, _ := st.Artifact(key(1)); !v.Listed || !v.Built {
		t.Fatalf("built key listed: %+v", v)
	}

	b.remove(layout.EntryManifestKey("artifacts", "serde", key(2)))
	b.remove(layout.EntryManifestKey("artifacts", "tokio", key(4)))
	if s := pass("first miss"); s.Unlisted != 2 || s.Deleted != 0 {
		t.Fatalf("first miss %+v", s)
	}
	if got := known(st, 1, 2, 3, 4, 5, 6); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("dropped after one listing: %v", got)
	}

	// A listing that fails half way changes nothing.
	src.failAfter = 1
	if _, err := c.Pass(context.Background()); !errors.Is(err, errListing) {
		t.Fatalf("failed listing: %v", err)
	}
	if got := known(st, 2, 4); len(got) != 2 {
		t.Fatalf("a failed listing dropped keys: %v", got)
	}
	// Nor does one out of order (the crates' keys do not come together).
	src.failAfter, src.byKey = 0, true
	b.put(layout.EntryManifestKey("artifacts", "serde", key(7)), []byte("{}"))
	if s := pass("unordered"); s.Deleted != 0 || len(known(st, 2, 4)) != 2 {
		t.Fatalf("an unordered listing dropped keys: %+v", s)
	}
	src.byKey = false

	if s := pass("second miss"); s.Deleted != 2 {
		t.Fatalf("second miss %+v", s)
	}
	if got := known(st, 1, 2, 3, 4, 5, 6, 7); !slices.Equal(got, []int{1, 3, 5, 6, 7}) {
		t.Fatalf("after the second miss: %v", got)
	}
	if vs, _ := st.Variants("serde"); slices.ContainsFunc(vs, func(v store.Variant) bool { return v.CacheKey == key(2) }) {
		t.Fatalf("dropped key still a variant: %+v", vs)
	}

	// An empty listing (emptied bucket or wrong prefix) drops nothing.
	for k, crate := range map[int]string{1: "serde", 3: "serde", 5: "syn", 7: "serde"} {
		b.remove(layout.EntryManifestKey("artifacts", crate, key(k)))
	}
	pass("empty")
	pass("empty again")
	if got := known(st, 1, 3, 5, 6, 7); len(got) != 5 {
		t.Fatalf("an empty listing dropped keys: %v", got)
	}
}

// TestReported404StaysOut: a key dropped for a runner's 404 is not added
// back from the same entry manifest, but is from a newer one.
func TestReported404StaysOut(t *testing.T) {
	st, err := store.OpenStorage(storage.NewMemStorage(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newMemBucket()
	b.put(layout.EntryManifestKey("artifacts", "serde", key(1)), []byte("{}"))
	b.put(layout.EntryManifestKey("artifacts", "serde", key(2)), []byte("{}"))
	c := New(b, st, Config{Prefix: "artifacts"})
	if _, err := c.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Drop([]string{key(1)}, store.DropNotFound); err != nil || n != 1 {
		t.Fatalf("drop: %d %v", n, err)
	}
	if n, err := st.Drop([]string{key(2)}, store.DropExpired); err != nil || n != 1 {
		t.Fatalf("drop: %d %v", n, err)
	}
	s, err := c.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Key 2 aged out but is still listed: listed since, so back.
	if s.Listed != 1 || !slices.Equal(known(st, 1, 2), []int{2}) {
		t.Fatalf("pass %+v, known %v", s, known(st, 1, 2))
	}
}
