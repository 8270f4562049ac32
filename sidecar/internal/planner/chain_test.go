package planner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/bucketplan"
	"github.com/kache-planner/kache-planner/sidecar/internal/central"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
)

// The real implementations satisfy the planner's consumer interfaces.
var (
	_ planner.Hints   = (*hints.Store)(nil)
	_ planner.Central = (*central.Client)(nil)
	_ planner.Bucket  = (*bucketplan.Source)(nil)
)

var errMissing = errors.New("missing")

// listBucket is a minimal bucketplan.Bucket over a sorted key list.
type listBucket struct{ keys []string }

func (b listBucket) ReadAll(context.Context, string, int64) ([]byte, error) {
	return nil, errMissing
}

func (b listBucket) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	for _, k := range b.keys {
		if strings.HasPrefix(k, prefix) {
			if err := fn(k, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

type syncClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *syncClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *syncClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestChainWithRealParts(t *testing.T) {
	key := func(n int) string { return fmt.Sprintf("%064x", n) }
	var centralUp atomic.Bool
	centralUp.Store(true)
	var centralCalls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		centralCalls.Add(1)
		if !centralUp.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"repository":"acme/app"`) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"plan_id":"plan-c","planner":"central","disposition":"execute","candidates":[{"cache_key":"%s","crate_name":"serde","source":"history","demand_index":0}]}`, key(1))
	}))
	defer srv.Close()

	store, err := hints.OpenStorage(storage.NewMemStorage(), hints.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cc, err := central.New(central.Config{Endpoint: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	bucket := listBucket{keys: []string{layout.EntryManifestKey("artifacts", "proc_macro2", key(7))}}
	bp, err := bucketplan.New(bucketplan.Config{Prefix: "artifacts", IsNotFound: func(err error) bool { return errors.Is(err, errMissing) }}, bucket, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bp.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk := &syncClock{now: time.Unix(1767225600, 0)}
	p, err := planner.New(planner.Config{Runner: &wire.RunnerContext{Repository: "acme/app", Commit: "c1"}, Target: "x86_64-unknown-linux-gnu"},
		planner.Deps{Hints: store, Central: cc, Bucket: bp, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	}()

	serde := func() *wire.BuildIntent { return &wire.BuildIntent{CrateNames: []string{"serde"}} }
	steps := []struct {
		name    string
		before  func()
		intent  *wire.BuildIntent
		want    planner.Source
		wantKey string
	}{
		{name: "central answers", intent: serde(), want: planner.SourceCentral, wantKey: key(1)},
		{name: "hint answers the next build", before: func() {
			// Wait for the hint written off the answer path.
			deadline := time.Now().Add(5 * time.Second)
			for n, _ := store.Stats(); n == 0 && time.Now().Before(deadline); n, _ = store.Stats() {
				time.Sleep(2 * time.Millisecond)
			}
		}, intent: serde(), want: planner.SourceHint, wantKey: key(1)},
		{name: "central down, old hint served stale", before: func() {
			centralUp.Store(false)
			clk.advance(time.Hour)
		}, intent: serde(), want: planner.SourceStaleHint, wantKey: key(1)},
		{name: "central down, no hint, bucket key cache under the crate name",
			intent: &wire.BuildIntent{CrateNames: []string{"proc-macro2"}}, want: planner.SourceBucket, wantKey: key(7)},
		{name: "central down, nothing anywhere",
			intent: &wire.BuildIntent{CrateNames: []string{"tokio"}}, want: planner.SourceFallback},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		res := p.Plan(context.Background(), st.intent)
		var keys []string
		for _, c := range res.Plan.Candidates {
			keys = append(keys, c.CacheKey)
		}
		if res.Source != st.want || (st.wantKey != "" && !slices.Equal(keys, []string{st.wantKey})) {
			t.Errorf("%s: answered from %s with %v, want %s with [%s]", st.name, res.Source, keys, st.want, st.wantKey)
		}
		if _, err := wire.DecodePlan(mustEncode(t, res.Plan)); err != nil {
			t.Errorf("%s: a kache client would reject the plan: %v", st.name, err)
		}
	}
}

func mustEncode(t *testing.T, p wire.PrefetchPlan) []byte {
	t.Helper()
	b, err := p.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// benchIntent is a realistic intent: 300 crates and their lock deps.
func benchIntent() *wire.BuildIntent {
	ns := "linux/abc/debug"
	in := &wire.BuildIntent{Namespace: &ns}
	for i := range 300 {
		name := fmt.Sprintf("crate-%03d", i)
		in.CrateNames = append(in.CrateNames, name)
		in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: name, Version: "1.0.0"})
	}
	return in
}

// BenchmarkPlanFromHint is the hot path: a fresh hint of 600 candidates.
func BenchmarkPlanFromHint(b *testing.B) {
	store, err := hints.OpenStorage(storage.NewMemStorage(), hints.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	in := benchIntent()
	plan := wire.PrefetchPlan{Disposition: wire.Execute}
	for i := range 600 {
		plan.Candidates = append(plan.Candidates, wire.PrefetchCandidate{CacheKey: fmt.Sprintf("%064x", i), CrateName: "crate_x", Source: wire.SourceShard})
	}
	enc, _ := plan.AppendJSON(nil)
	now := time.Now()
	if err := store.Put(hints.KeyOf(in), hints.Hint{Plan: enc, StoredAt: now}); err != nil {
		b.Fatal(err)
	}
	p, err := planner.New(planner.Config{}, planner.Deps{Hints: store, Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		if res := p.Plan(context.Background(), in); res.Source != planner.SourceHint {
			b.Fatalf("source %s", res.Source)
		}
	}
}

// BenchmarkPlanCentralDown is central refusing every request and the bucket
// planning from shards (all missing) and a key listing.
func BenchmarkPlanCentralDown(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	cc, err := central.New(central.Config{Endpoint: srv.URL}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	var keys []string
	for i := range 300 {
		keys = append(keys, layout.EntryManifestKey("artifacts", fmt.Sprintf("crate_%03d", i), fmt.Sprintf("%064x", i)))
	}
	bp, err := bucketplan.New(bucketplan.Config{Prefix: "artifacts", IsNotFound: func(err error) bool { return errors.Is(err, errMissing) }}, listBucket{keys: keys}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := bp.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	p, err := planner.New(planner.Config{}, planner.Deps{Central: cc, Bucket: bp})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop(context.Background())
	in := benchIntent()
	b.ReportAllocs()
	for b.Loop() {
		if res := p.Plan(context.Background(), in); res.Source != planner.SourceBucket {
			b.Fatalf("source %s", res.Source)
		}
	}
}
