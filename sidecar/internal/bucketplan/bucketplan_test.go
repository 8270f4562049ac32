package bucketplan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const prefix = "artifacts"

// key returns a valid 64-hex cache key made from n.
func key(n int) string { return fmt.Sprintf("%064x", n) }

func ptr[T any](v T) *T { return &v }

func newSource(t *testing.T, b Bucket, h History, mod func(*Config)) *Source {
	t.Helper()
	cfg := Config{Prefix: " /artifacts/ ", IsNotFound: isFakeNotFound}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, b, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// putShard writes the shard object holding dep (computed over all deps) with
// the given entries.
func putShard(t *testing.T, b *fakeBucket, namespace string, deps []wire.LockDep, dep string, entries ...wire.ShardEntry) {
	t.Helper()
	for _, sh := range layout.Shards(deps) {
		for _, d := range sh.Deps {
			if d.Name != dep {
				continue
			}
			data, err := json.Marshal(wire.ShardObject{Version: 3, Entries: entries})
			if err != nil {
				t.Fatal(err)
			}
			b.put(layout.ShardObjectKey(prefix, namespace, sh.Hash), string(data))
			return
		}
	}
	t.Fatalf("dep %s not in any shard", dep)
}

func putManifest(b *fakeBucket, crate string, k string) {
	b.put(layout.EntryManifestKey(prefix, crate, k), `{"version":3}`)
}

type cand struct {
	key, crate string
	source     wire.Source
}

func summarize(cs []wire.PrefetchCandidate) []cand {
	out := make([]cand, len(cs))
	for i, c := range cs {
		out[i] = cand{c.CacheKey, c.CrateName, c.Source}
	}
	return out
}

func TestPlan(t *testing.T) {
	deps := []wire.LockDep{{Name: "serde", Version: "1.0.210"}, {Name: "syn", Version: "2.0.0"}, {Name: "proc-macro2", Version: "1.0.86"}, {Name: "tokio", Version: "1.36.0"}}
	tests := []struct {
		name     string
		intent   *wire.BuildIntent
		setup    func(t *testing.T, b *fakeBucket)
		history  History
		want     []cand
		wantDisp wire.Disposition
	}{
		{
			name:     "empty bucket",
			intent:   &wire.BuildIntent{CrateNames: []string{"serde", "app"}, Namespace: ptr("ns"), CargoLockDeps: deps},
			setup:    func(*testing.T, *fakeBucket) {},
			wantDisp: wire.UseFallback,
		},
		{
			name:   "shards with metadata, in demand order",
			intent: &wire.BuildIntent{CrateNames: []string{"syn", "serde", "app"}, Namespace: ptr("linux/abc/debug"), CargoLockDeps: deps},
			setup: func(t *testing.T, b *fakeBucket) {
				putShard(t, b, "linux/abc/debug", deps, "serde", wire.ShardEntry{CacheKey: key(1), CrateName: "serde", CompileTimeMs: ptr[uint64](900), ArtifactSize: ptr[uint64](4096)})
				putShard(t, b, "linux/abc/debug", deps, "syn", wire.ShardEntry{CacheKey: key(2), CrateName: "syn", CompileTimeMs: ptr[uint64](5400)})
			},
			want:     []cand{{key(2), "syn", wire.SourceShard}, {key(1), "serde", wire.SourceShard}},
			wantDisp: wire.Execute,
		},
		{
			name:   "invalid shard entries dropped",
			intent: &wire.BuildIntent{CrateNames: []string{"serde"}, Namespace: ptr("ns"), CargoLockDeps: deps},
			setup: func(t *testing.T, b *fakeBucket) {
				putShard(t, b, "ns", deps, "serde",
					wire.ShardEntry{CacheKey: "serde-key", CrateName: "serde"},
					wire.ShardEntry{CacheKey: key(3), CrateName: "../etc"},
					wire.ShardEntry{CacheKey: strings.ToUpper(key(10)), CrateName: "serde"},
					wire.ShardEntry{CacheKey: key(4), CrateName: "serde"})
			},
			want:     []cand{{key(4), "serde", wire.SourceShard}},
			wantDisp: wire.Execute,
		},
		{
			name:   "corrupt and failing shards are skipped, others kept",
			intent: &wire.BuildIntent{CrateNames: []string{"serde", "syn", "tokio"}, Namespace: ptr("ns"), CargoLockDeps: deps},
			setup: func(t *testing.T, b *fakeBucket) {
				putShard(t, b, "ns", deps, "serde", wire.ShardEntry{CacheKey: key(1), CrateName: "serde"})
				putShard(t, b, "ns", deps, "syn", wire.ShardEntry{CacheKey: key(2), CrateName: "syn"})
				putShard(t, b, "ns", deps, "tokio", wire.ShardEntry{CacheKey: key(3), CrateName: "tokio"})
				for _, sh := range layout.Shards(deps) {
					k := layout.ShardObjectKey(prefix, "ns", sh.Hash)
					switch {
					case slices.ContainsFunc(sh.Deps, func(d wire.LockDep) bool { return d.Name == "syn" }):
						b.put(k, `{"version":3,"entries":nul`)
					case slices.ContainsFunc(sh.Deps, func(d wire.LockDep) bool { return d.Name == "tokio" }):
						b.readErrs[k] = errors.New("connection reset")
					}
				}
			},
			want:     []cand{{key(1), "serde", wire.SourceShard}},
			wantDisp: wire.Execute,
		},
		{
			name:   "no namespace: no shard reads, key cache under crate names",
			intent: &wire.BuildIntent{CrateNames: []string{"proc-macro2", "serde"}, Namespace: nil},
			setup: func(t *testing.T, b *fakeBucket) {
				putManifest(b, "proc_macro2", key(7))
				putManifest(b, "serde", key(8))
			},
			want:     []cand{{key(7), "proc_macro2", wire.SourceKeyCache}, {key(8), "serde", wire.SourceKeyCache}},
			wantDisp: wire.Execute,
		},
		{
			name:   "key cache keeps two per crate and ignores keys outside the accept rule",
			intent: &wire.BuildIntent{CrateNames: []string{"serde"}},
			setup: func(t *testing.T, b *fakeBucket) {
				putManifest(b, "serde", key(1))
				putManifest(b, "serde", key(2))
				putManifest(b, "serde", key(3))
				b.put(prefix+"/v3/manifests/serde/"+key(4)+".txt", "")
				b.put(prefix+"/v3/manifests/nested/serde/"+key(5)+".json", "")
				b.put(prefix+"/v3/manifests/serde/not-a-key.json", "")
			},
			want:     []cand{{key(1), "serde", wire.SourceKeyCache}, {key(2), "serde", wire.SourceKeyCache}},
			wantDisp: wire.Execute,
		},
		{
			name:    "history first, key cache only for unresolved crates",
			intent:  &wire.BuildIntent{CrateNames: []string{"serde", "syn"}},
			history: fakeHistory{"serde": {key(9), "bogus", key(10), key(11)}},
			setup: func(t *testing.T, b *fakeBucket) {
				putManifest(b, "serde", key(1))
				putManifest(b, "syn", key(2))
			},
			want:     []cand{{key(9), "serde", wire.SourceHistory}, {key(10), "serde", wire.SourceHistory}, {key(2), "syn", wire.SourceKeyCache}},
			wantDisp: wire.Execute,
		},
		{
			name:   "shard resolves a crate before the key cache",
			intent: &wire.BuildIntent{CrateNames: []string{"serde", "syn"}, Namespace: ptr("ns"), CargoLockDeps: deps},
			setup: func(t *testing.T, b *fakeBucket) {
				putShard(t, b, "ns", deps, "serde", wire.ShardEntry{CacheKey: key(1), CrateName: "serde"})
				putManifest(b, "serde", key(5))
				putManifest(b, "syn", key(6))
			},
			want:     []cand{{key(1), "serde", wire.SourceShard}, {key(6), "syn", wire.SourceKeyCache}},
			wantDisp: wire.Execute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBucket()
			tt.setup(t, b)
			s := newSource(t, b, tt.history, nil)
			if err := s.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			plan, err := s.Plan(context.Background(), tt.intent)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Disposition != tt.wantDisp || plan.Planner != "kache-sidecar" || !strings.HasPrefix(plan.PlanID, "plan-") {
				t.Errorf("plan head = %q %q %q, want %q by kache-sidecar", plan.PlanID, plan.Planner, plan.Disposition, tt.wantDisp)
			}
			if plan.Candidates == nil {
				t.Fatal("candidates are nil; they must encode as []")
			}
			if got := summarize(plan.Candidates); !slices.Equal(got, tt.want) {
				t.Errorf("candidates:\n got %v\nwant %v", got, tt.want)
			}
			// The plan must survive the kache client's decoder.
			enc, err := plan.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := wire.DecodePlan(enc); err != nil {
				t.Errorf("plan does not decode as kache would: %v", err)
			}
		})
	}
}

func TestShardMetadataCarried(t *testing.T) {
	deps := []wire.LockDep{{Name: "serde", Version: "1.0.0"}}
	b := newFakeBucket()
	putShard(t, b, "ns", deps, "serde", wire.ShardEntry{CacheKey: key(1), CrateName: "serde", CompileTimeMs: ptr[uint64](1500), ArtifactSize: ptr[uint64](2048)})
	s := newSource(t, b, nil, nil)
	plan, err := s.Plan(context.Background(), &wire.BuildIntent{CrateNames: []string{"serde"}, Namespace: ptr("ns"), CargoLockDeps: deps})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Candidates) != 1 {
		t.Fatalf("candidates = %+v", plan.Candidates)
	}
	c := plan.Candidates[0]
	if c.CompileTimeMs != 1500 || c.SizeBytes != 2048 || c.DemandIndex == nil || *c.DemandIndex != 0 {
		t.Errorf("candidate = %+v, want compile 1500, size 2048, demand 0", c)
	}
	if plan.Stats == nil || plan.Stats.FromShards != 1 || plan.Stats.KnownBytes != 2048 || plan.Stats.CompileMsCovered != 1500 {
		t.Errorf("stats = %+v", plan.Stats)
	}
}

func TestShardReadsAreBoundedAndConcurrent(t *testing.T) {
	var deps []wire.LockDep
	for i := range 300 {
		deps = append(deps, wire.LockDep{Name: fmt.Sprintf("dep%d", i), Version: "1.0.0"})
	}
	b := newFakeBucket()
	b.readDelay = 20 * time.Millisecond
	s := newSource(t, b, nil, func(c *Config) { c.ShardConcurrency = 4 })
	ds := s.DataSource(context.Background())
	if _, err := ds.ShardCandidates("ns", deps); err != nil {
		t.Fatal(err)
	}
	nShards := len(layout.Shards(deps))
	if b.reads != nShards {
		t.Errorf("reads = %d, want one per shard (%d)", b.reads, nShards)
	}
	if b.maxInFlight > 4 || b.maxInFlight < 2 {
		t.Errorf("max concurrent reads = %d, want 2..4", b.maxInFlight)
	}
}

func TestShardCandidatesStopsOnCancel(t *testing.T) {
	deps := []wire.LockDep{{Name: "a", Version: "1"}, {Name: "b", Version: "1"}, {Name: "c", Version: "1"}}
	b := newFakeBucket()
	b.readDelay = 10 * time.Second
	s := newSource(t, b, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.DataSource(ctx).ShardCandidates("ns", deps)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("returned after %v", el)
	}
}

func TestKeyCacheTotalCap(t *testing.T) {
	b := newFakeBucket()
	var crates []string
	for i := range 40 {
		c := fmt.Sprintf("crate%02d", i)
		crates = append(crates, c)
		putManifest(b, c, key(2*i))
		putManifest(b, c, key(2*i+1))
	}
	s := newSource(t, b, nil, nil)
	if err := s.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	plan, err := s.Plan(context.Background(), &wire.BuildIntent{CrateNames: crates})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Candidates) != compose.DefaultLimits().KeyCacheTotal {
		t.Errorf("candidates = %d, want the key-cache total cap %d", len(plan.Candidates), compose.DefaultLimits().KeyCacheTotal)
	}
	if plan.Stats.DroppedKeyCacheTotal != 16 || !slices.Contains(plan.Stats.Truncated, "key_cache_total") {
		t.Errorf("stats = %+v, want 16 dropped by the total cap", plan.Stats)
	}
}

func TestRefreshCaps(t *testing.T) {
	good := []string{
		layout.EntryManifestKey(prefix, "serde", key(1)),
		layout.EntryManifestKey(prefix, "syn", key(2)),
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		bucket  func(b *fakeBucket)
		wantErr error
	}{
		{name: "too many entries", mod: func(c *Config) { c.ListMaxEntries = 2 }, bucket: func(b *fakeBucket) {
			b.listKeys = append(slices.Clone(good), layout.EntryManifestKey(prefix, "tokio", key(3)))
		}, wantErr: ErrListTooLarge},
		{name: "too much key text", mod: func(c *Config) { c.ListMaxKeyBytes = int64(len(good[0])) + 10 }, bucket: func(b *fakeBucket) {
			b.listKeys = good
		}, wantErr: ErrListTooLarge},
		{name: "repeated page", bucket: func(b *fakeBucket) {
			b.listKeys = append(slices.Clone(good), good...)
		}, wantErr: ErrListRepeated},
		{name: "stalled", mod: func(c *Config) { c.ListIdleTimeout = 30 * time.Millisecond }, bucket: func(b *fakeBucket) {
			b.listBlock = true
		}, wantErr: ErrListStalled},
		{name: "total timeout", mod: func(c *Config) { c.ListTimeout = 30 * time.Millisecond }, bucket: func(b *fakeBucket) {
			b.listBlock = true
		}, wantErr: context.DeadlineExceeded},
		{name: "bucket error", bucket: func(b *fakeBucket) {
			b.listKeys, b.listErr = good, errors.New("503 slow down")
		}, wantErr: errors.New("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBucket()
			putManifest(b, "old", key(99))
			s := newSource(t, b, nil, tt.mod)
			if err := s.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			tt.bucket(b)
			err := s.Refresh(context.Background())
			if err == nil {
				t.Fatal("Refresh succeeded, want an error")
			}
			if tt.wantErr.Error() != "" && !errors.Is(err, tt.wantErr) {
				t.Errorf("Refresh error = %v, want %v", err, tt.wantErr)
			}
			// The previous index stays in use.
			keys, _ := s.DataSource(context.Background()).KeyCacheKeys("old")
			if !slices.Equal(keys, []string{key(99)}) {
				t.Errorf("index after a failed refresh = %v, want the previous one", keys)
			}
		})
	}
}

func TestStartStopRefreshes(t *testing.T) {
	b := newFakeBucket()
	putManifest(b, "serde", key(1))
	s := newSource(t, b, nil, func(c *Config) { c.RefreshInterval = 10 * time.Millisecond })
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := s.IndexStats(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("index never populated")
		}
		time.Sleep(5 * time.Millisecond)
	}
	putManifest(b, "syn", key(2))
	for {
		if n, _ := s.IndexStats(); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("index never refreshed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		bucket Bucket
	}{
		{name: "no IsNotFound", cfg: Config{}, bucket: newFakeBucket()},
		{name: "no bucket", cfg: Config{IsNotFound: isFakeNotFound}},
		{name: "traversal prefix", cfg: Config{Prefix: "a/../b", IsNotFound: isFakeNotFound}, bucket: newFakeBucket()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.bucket, nil, nil); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}
