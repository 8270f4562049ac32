package layout

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// The shard vectors of section 9 item 36 were computed with a reference
// BLAKE3; this pins the library to it.
func TestBlake3Sanity(t *testing.T) {
	sum := blake3.Sum256(nil)
	const want = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("blake3(\"\") = %s, want %s", got, want)
	}
}

// Section 9 item 36.
func TestShardBucket(t *testing.T) {
	tests := []struct {
		name string
		want int
	}{
		{"serde", 51},
		{"tokio", 17},
		{"syn", 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ShardBucket(tt.name); got != tt.want {
				t.Fatalf("ShardBucket(%q) = %d, want %d", tt.name, got, tt.want)
			}
		})
	}
}

// Section 9 item 36.
func TestShards(t *testing.T) {
	tests := []struct {
		name string
		deps []wire.LockDep
		want []Shard
	}{
		{
			name: "serde tokio syn",
			deps: []wire.LockDep{{Name: "serde", Version: "1.0.210"}, {Name: "tokio", Version: "1.36.0"}, {Name: "syn", Version: "2.0.0"}},
			want: []Shard{
				{Bucket: 11, Deps: []wire.LockDep{{Name: "syn", Version: "2.0.0"}}, Hash: "783a61d439b408e4654c460074a7d9a5156dd2933e6ec6265a8f11f6bcb22184"},
				{Bucket: 17, Deps: []wire.LockDep{{Name: "tokio", Version: "1.36.0"}}, Hash: "a5935a8044d0e8bf816ca22b3f822dfc4095c670ae597e23cd75881d11fc249b"},
				{Bucket: 51, Deps: []wire.LockDep{{Name: "serde", Version: "1.0.210"}}, Hash: "35814327162c501d3f0465641d6d26353633e7ec883f6f047ca9c55aa3dab56b"},
			},
		},
		{
			name: "serde bumped",
			deps: []wire.LockDep{{Name: "serde", Version: "1.0.211"}, {Name: "tokio", Version: "1.36.0"}, {Name: "syn", Version: "2.0.0"}},
			want: []Shard{
				{Bucket: 11, Deps: []wire.LockDep{{Name: "syn", Version: "2.0.0"}}, Hash: "783a61d439b408e4654c460074a7d9a5156dd2933e6ec6265a8f11f6bcb22184"},
				{Bucket: 17, Deps: []wire.LockDep{{Name: "tokio", Version: "1.36.0"}}, Hash: "a5935a8044d0e8bf816ca22b3f822dfc4095c670ae597e23cd75881d11fc249b"},
				{Bucket: 51, Deps: []wire.LockDep{{Name: "serde", Version: "1.0.211"}}, Hash: "11f4407d0dfee31a79b03bf829cfaae322d00f7bdfd752f7e7812e839f1b4aba"},
			},
		},
		{
			name: "serde alone",
			deps: []wire.LockDep{{Name: "serde", Version: "1.0.0"}},
			want: []Shard{
				{Bucket: 51, Deps: []wire.LockDep{{Name: "serde", Version: "1.0.0"}}, Hash: "597b7d5db8df5347bcee78696ab38ac507a4ec760eea04059dfdfb1a4e12b376"},
			},
		},
		{
			name: "two versions share a bucket, sorted",
			deps: []wire.LockDep{{Name: "syn", Version: "2.0.0"}, {Name: "syn", Version: "1.0.109"}},
			want: []Shard{
				{Bucket: 11, Deps: []wire.LockDep{{Name: "syn", Version: "1.0.109"}, {Name: "syn", Version: "2.0.0"}}, Hash: hashOf("syn@1.0.109|syn@2.0.0")},
			},
		},
		{
			name: "duplicates kept as the client keeps them",
			deps: []wire.LockDep{{Name: "serde", Version: "1.0.0"}, {Name: "serde", Version: "1.0.0"}},
			want: []Shard{
				{Bucket: 51, Deps: []wire.LockDep{{Name: "serde", Version: "1.0.0"}, {Name: "serde", Version: "1.0.0"}}, Hash: hashOf("serde@1.0.0|serde@1.0.0")},
			},
		},
		{name: "nil deps", deps: nil, want: nil},
		{name: "empty deps", deps: []wire.LockDep{}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Shards(tt.deps)
			if !slices.EqualFunc(got, tt.want, shardEqual) {
				t.Fatalf("Shards() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// Section 9 item 36: one bump changes exactly one shard hash.
func TestShardsBumpChangesOneShard(t *testing.T) {
	before := Shards([]wire.LockDep{{Name: "serde", Version: "1.0.210"}, {Name: "tokio", Version: "1.36.0"}, {Name: "syn", Version: "2.0.0"}})
	after := Shards([]wire.LockDep{{Name: "serde", Version: "1.0.211"}, {Name: "tokio", Version: "1.36.0"}, {Name: "syn", Version: "2.0.0"}})
	if len(before) != len(after) {
		t.Fatalf("%d shards before, %d after", len(before), len(after))
	}
	var changed []int
	for i := range before {
		if before[i].Hash != after[i].Hash {
			changed = append(changed, after[i].Bucket)
		}
	}
	if !slices.Equal(changed, []int{51}) {
		t.Fatalf("changed buckets %v, want [51]", changed)
	}
}

// Many deps: every shard is sorted, in its own bucket, hashed over its
// content, and the result does not depend on input order.
func TestShardsInvariants(t *testing.T) {
	deps := syntheticDeps(500)
	got := Shards(deps)
	var total int
	for i, s := range got {
		if i > 0 && got[i-1].Bucket >= s.Bucket {
			t.Fatalf("buckets out of order: %d then %d", got[i-1].Bucket, s.Bucket)
		}
		if len(s.Deps) == 0 {
			t.Fatalf("bucket %d is empty", s.Bucket)
		}
		if !slices.IsSortedFunc(s.Deps, compareDeps) {
			t.Fatalf("bucket %d not sorted: %v", s.Bucket, s.Deps)
		}
		var content string
		for j, d := range s.Deps {
			if ShardBucket(d.Name) != s.Bucket {
				t.Fatalf("%s in bucket %d", d.Name, s.Bucket)
			}
			if j > 0 {
				content += "|"
			}
			content += d.Key()
		}
		if s.Hash != hashOf(content) {
			t.Fatalf("bucket %d hash %s, want %s", s.Bucket, s.Hash, hashOf(content))
		}
		total += len(s.Deps)
	}
	if total != len(deps) {
		t.Fatalf("%d deps in shards, want %d", total, len(deps))
	}

	shuffled := slices.Clone(deps)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if !slices.EqualFunc(Shards(shuffled), got, shardEqual) {
		t.Fatal("shards depend on input order")
	}
}

func TestShardsDoNotAliasInput(t *testing.T) {
	deps := []wire.LockDep{{Name: "tokio", Version: "1"}, {Name: "serde", Version: "1"}}
	shards := Shards(deps)
	shards[0].Deps[0].Name = "changed"
	if deps[0].Name != "tokio" || deps[1].Name != "serde" {
		t.Fatalf("input modified: %v", deps)
	}
	if len(shards) > 1 && cap(shards[0].Deps) != len(shards[0].Deps) {
		t.Fatalf("shard deps not capped: len %d cap %d", len(shards[0].Deps), cap(shards[0].Deps))
	}
}

func BenchmarkShards500(b *testing.B) {
	deps := syntheticDeps(500)
	b.ReportAllocs()
	for b.Loop() {
		Shards(deps)
	}
}

func syntheticDeps(n int) []wire.LockDep {
	deps := make([]wire.LockDep, n)
	for i := range deps {
		deps[i] = wire.LockDep{Name: fmt.Sprintf("crate-%04d", i), Version: fmt.Sprintf("%d.%d.%d", i%3, i%17, i)}
	}
	return deps
}

func hashOf(content string) string {
	sum := blake3.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

func shardEqual(a, b Shard) bool {
	return a.Bucket == b.Bucket && a.Hash == b.Hash && slices.Equal(a.Deps, b.Deps)
}

func TestShardBucketDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		ShardBucket("wasm-bindgen-macro-support")
	})
	if allocs != 0 {
		t.Fatalf("ShardBucket allocates %v times per run", allocs)
	}
}
