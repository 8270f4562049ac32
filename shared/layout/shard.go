package layout

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"slices"

	"github.com/zeebo/blake3"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// NumShards is the number of buckets Cargo.lock dependencies are spread over.
// It is part of the shard object layout: changing it changes every hash.
const NumShards = 64

// ShardBucket is the bucket of a dependency name: the first eight bytes of
// blake3(name) read as a little-endian u64, modulo NumShards. Only the name
// counts, so every version of a package lands in the same bucket and a
// version bump touches exactly one shard.
func ShardBucket(name string) int {
	sum := blake3.Sum256([]byte(name))
	return int(binary.LittleEndian.Uint64(sum[:8]) % NumShards)
}

// Shard is one non-empty bucket of a dependency set and the hash that names
// its object (ShardObjectKey).
type Shard struct {
	Bucket int
	// Deps are the bucket's dependencies sorted by name, then version,
	// bytewise.
	Deps []wire.LockDep
	// Hash is hex(blake3("name@version|name@version|...")) over Deps.
	Hash string
}

// Shards computes the shard set of deps exactly as the kache client does,
// both when it writes shards and when it reads them: shards come in ascending
// bucket order and empty buckets are left out. Duplicate deps are kept, as the
// client keeps them; pass Lockfile.Deps() for a deduplicated set. The Deps of
// the returned shards share one backing array, capped per shard.
func Shards(deps []wire.LockDep) []Shard {
	if len(deps) == 0 {
		return nil
	}
	// Counting sort by bucket: one blake3 per dep, then each bucket is a
	// contiguous run of one backing array.
	buckets := make([]uint8, len(deps))
	var start [NumShards + 1]int
	contentLen := 0
	for i, d := range deps {
		b := ShardBucket(d.Name)
		buckets[i] = uint8(b)
		start[b+1]++
		contentLen = max(contentLen, len(d.Name)+len(d.Version)+2)
	}
	nonEmpty := 0
	for b := 1; b <= NumShards; b++ {
		if start[b] > 0 {
			nonEmpty++
		}
	}
	for b := 1; b <= NumShards; b++ {
		start[b] += start[b-1]
	}
	sorted := make([]wire.LockDep, len(deps))
	next := start
	for i, d := range deps {
		sorted[next[buckets[i]]] = d
		next[buckets[i]]++
	}

	out := make([]Shard, 0, nonEmpty)
	// Sized for the largest bucket's worst case so it is allocated once.
	content := make([]byte, 0, contentLen*maxRun(start[:]))
	for b := range NumShards {
		run := sorted[start[b]:start[b+1]:start[b+1]]
		if len(run) == 0 {
			continue
		}
		slices.SortFunc(run, compareDeps)
		content = content[:0]
		for i, d := range run {
			if i > 0 {
				content = append(content, '|')
			}
			content = append(content, d.Name...)
			content = append(content, '@')
			content = append(content, d.Version...)
		}
		sum := blake3.Sum256(content)
		out = append(out, Shard{Bucket: b, Deps: run, Hash: hex.EncodeToString(sum[:])})
	}
	return out
}

// maxRun is the size of the largest bucket given the prefix sums.
func maxRun(start []int) int {
	m := 0
	for b := 1; b < len(start); b++ {
		m = max(m, start[b]-start[b-1])
	}
	return m
}

// compareDeps orders by name, then version, bytewise (Rust's tuple order).
func compareDeps(a, b wire.LockDep) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
}
