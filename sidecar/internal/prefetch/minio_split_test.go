//go:build e2e

package prefetch

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/s3source"
)

// rangeCounting is the real Bucket with its ranged GETs counted; before,
// when set, runs ahead of each one.
type rangeCounting struct {
	*s3source.Bucket
	before func(key string)
	ranges atomic.Int64
}

func (c *rangeCounting) Get(ctx context.Context, key string, o s3source.GetOptions) (io.ReadCloser, s3source.ObjectInfo, error) {
	c.ranges.Add(1)
	if c.before != nil {
		c.before(key)
	}
	return c.Bucket.Get(ctx, key, o)
}

// TestMinioSplitDownloads: packs over the split threshold arrive over
// several ranged GETs pinned with If-Match (a single-part MD5 ETag, and a
// multipart one over minio-go's 16 MiB threshold), byte for byte, checked
// as a whole; small ones are one GET.
func TestMinioSplitDownloads(t *testing.T) {
	b := startBucket(t)
	sizes := []int{17 << 20, 6 << 20, 5<<20 + 3, 100 << 10, 4 << 20}
	cands := b.seedPacks(t, sizes)
	src := &rangeCounting{Bucket: b.src}
	r := startRealEngine(t, Config{Concurrency: 16}, src, "", 0)
	s := r.Submit(Plan{ID: "split", Candidates: cands})
	waitSession(t, s, 60*time.Second)
	if p := r.Progress(s); p.Fetched != len(sizes) || p.Failed != 0 {
		t.Fatalf("progress %+v", p)
	}
	checkStore(t, b, r)
	// Three packs over 4 MiB, in 4 parts each: 3 ranged GETs apiece when
	// the lanes are idle (they are: the 5 keys' workers leave 11 of 16).
	if n := src.ranges.Load(); n != 9 {
		t.Fatalf("%d ranged GETs, want 9", n)
	}
	if ok := counterOf(r.m.splits.WithLabelValues("ok")); ok != 3 {
		t.Fatalf("%v split downloads ok, want 3", ok)
	}
}

// TestMinioSplitObjectChanged: the object is overwritten after the first
// response; MinIO answers the pinned ranges 412, and the whole download is
// tried again and lands the new object, never a mix.
func TestMinioSplitObjectChanged(t *testing.T) {
	b := startBucket(t)
	cands := b.seedPacks(t, []int{6 << 20})
	key := packRef(cands[0]).ObjectKey(testPrefix)
	var once sync.Once
	src := &rangeCounting{Bucket: b.src}
	src.before = func(k string) {
		if k == key {
			once.Do(func() { b.put(t, key, packBody(6<<20, 4242)) })
		}
	}
	r := startRealEngine(t, Config{Concurrency: 12}, src, "", 0)
	if err := r.Demand(context.Background(), packRef(cands[0])); err != nil {
		t.Fatal(err)
	}
	checkStore(t, b, r)
	if got := counterOf(r.m.splits.WithLabelValues("changed")); got != 1 {
		t.Fatalf("%v downloads saw the object change, want 1", got)
	}
	if got := counterOf(r.m.retries); got != 1 {
		t.Fatalf("%v retries, want 1", got)
	}
}
