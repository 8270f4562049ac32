package replay

import (
	"slices"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Bucket is the shared remote cache every build uploads to, as the object
// layout of kache-protocol.md 4.2-4.4 exposes it: entries addressed by
// (crate dir, cache key), the per-crate LIST, and shard objects. Policies
// read it only through these methods and only between builds.
type Bucket struct {
	objects map[string]object
	// listing holds each crate directory's keys in key order, which is the
	// order an S3 LIST returns them.
	listing map[string][]string
	shards  map[shardID][]wire.ShardEntry
	bytes   uint64
}

type object struct {
	crate string
	size  uint64
}

type shardID struct{ namespace, hash string }

// NewBucket returns an empty bucket.
func NewBucket() *Bucket {
	return &Bucket{objects: map[string]object{}, listing: map[string][]string{}, shards: map[shardID][]wire.ShardEntry{}}
}

// Get reports whether packs/{crate}/{key} exists and its size. A key stored
// under another crate directory is a 404, as a GET with the wrong crate
// name is.
func (b *Bucket) Get(crate, key string) (uint64, bool) {
	o, ok := b.objects[key]
	if !ok || o.crate != crate {
		return 0, false
	}
	return o.size, true
}

// Put uploads one entry; an existing key is left alone (kache skips
// uploading what the remote has).
func (b *Bucket) Put(crate, key string, size uint64) {
	if _, ok := b.objects[key]; ok {
		return
	}
	b.objects[key] = object{crate: crate, size: size}
	b.bytes += size
	keys := b.listing[crate]
	i, _ := slices.BinarySearch(keys, key)
	b.listing[crate] = slices.Insert(keys, i, key)
}

// List returns the keys under a crate directory in key order. The slice is
// the bucket's own: callers must not modify it.
func (b *Bucket) List(crate string) []string { return b.listing[crate] }

// Objects is the number of entries stored.
func (b *Bucket) Objects() int { return len(b.objects) }

// PutShard writes (overwrites) a shard object.
func (b *Bucket) PutShard(namespace, hash string, entries []wire.ShardEntry) {
	b.shards[shardID{namespace, hash}] = entries
}

// Shard reads a shard object; false is a 404.
func (b *Bucket) Shard(namespace, hash string) ([]wire.ShardEntry, bool) {
	e, ok := b.shards[shardID{namespace, hash}]
	return e, ok
}

// writeShards is kache's upload_shards (kache-protocol.md 4.4): for each
// shard of the build's Cargo.lock, the entries are the lock names that match
// a manifest entry's crate_name exactly, each with the first manifest entry
// of that crate name; empty shards are not written. The exact match is
// kache's: hyphenated package names never match the underscored crate names
// of the manifest.
func (b *Bucket) writeShards(namespace string, shards []layout.Shard, m *wire.BuildManifest) {
	first := make(map[string]*wire.ManifestEntry, len(m.Entries))
	for i := range m.Entries {
		e := &m.Entries[i]
		if _, ok := first[e.CrateName]; !ok {
			first[e.CrateName] = e
		}
	}
	for _, s := range shards {
		var entries []wire.ShardEntry
		for _, d := range s.Deps {
			e, ok := first[d.Name]
			if !ok {
				continue
			}
			ct, size := e.CompileTimeMs, e.ArtifactSize
			entries = append(entries, wire.ShardEntry{CacheKey: e.CacheKey, CrateName: e.CrateName, CompileTimeMs: &ct, ArtifactSize: &size})
		}
		if len(entries) > 0 {
			b.PutShard(namespace, s.Hash, entries)
		}
	}
}
