package store

import (
	"sync"
	"unsafe"
)

// listCache keeps decoded variant lists (crate summaries and dep lists) in
// memory, bounded by an estimate of their size. Plans read hundreds of lists
// per request; decoding them from goleveldb each time costs more than the rest
// of planning together.
//
// Cached slices are shared and never modified: writers replace them whole.
// Consistency with the database: a writer deletes a key before its batch is
// written and puts the new list after, while readers fill misses only with
// putIfAbsent, so a reader can never leave an older list behind a newer one.
type listCache struct {
	shards [cacheShards]cacheShard
	limit  int64 // bytes per shard
}

const cacheShards = 16

type cacheShard struct {
	mu    sync.RWMutex
	m     map[string][]Variant
	bytes int64
	// epoch moves on every writer change, so a reader that filled a miss
	// from an older database state cannot insert it afterwards.
	epoch uint64
}

// variantBytes approximates what a cached variant costs: the struct and its
// hex key; crate, target and profile strings are interned.
const variantBytes = int64(unsafe.Sizeof(Variant{})) + 64

func newListCache(limitBytes int64) *listCache {
	c := &listCache{limit: limitBytes / cacheShards}
	for i := range c.shards {
		c.shards[i].m = make(map[string][]Variant)
	}
	return c
}

func (c *listCache) shard(key string) *cacheShard {
	var h uint32 = 2166136261
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &c.shards[h%cacheShards]
}

func cost(key string, vs []Variant) int64 {
	return int64(len(key)) + 48 + int64(len(vs))*variantBytes
}

// get returns a cached list, or the epoch a reader must pass to fill.
func (c *listCache) get(key []byte) ([]Variant, bool, uint64) {
	if c.limit <= 0 {
		return nil, false, 0
	}
	s := c.shard(string(key))
	s.mu.RLock()
	vs, ok := s.m[string(key)]
	epoch := s.epoch
	s.mu.RUnlock()
	return vs, ok, epoch
}

// fill inserts a list read from the database, unless a writer changed the
// shard since the reader's get.
func (c *listCache) fill(key string, vs []Variant, epoch uint64) {
	if c.limit <= 0 {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch != epoch {
		return
	}
	if _, ok := s.m[key]; ok {
		return
	}
	s.insert(key, vs, c.limit)
}

// take removes a list before a writer changes it and returns what was cached.
func (c *listCache) take(key string) ([]Variant, bool) {
	if c.limit <= 0 {
		return nil, false
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	old, ok := s.m[key]
	if ok {
		s.bytes -= cost(key, old)
		delete(s.m, key)
	}
	return old, ok
}

// settle ends a writer's change: vs (when non-nil) becomes the cached list.
func (c *listCache) settle(key string, vs []Variant) {
	if c.limit <= 0 {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	if vs == nil {
		return
	}
	if old, ok := s.m[key]; ok {
		s.bytes -= cost(key, old)
		delete(s.m, key)
	}
	s.insert(key, vs, c.limit)
}

// insert evicts arbitrary entries (map order) until vs fits: cheap, and hot
// lists come back on their next read.
func (s *cacheShard) insert(key string, vs []Variant, limit int64) {
	n := cost(key, vs)
	for k, v := range s.m {
		if s.bytes+n <= limit {
			break
		}
		delete(s.m, k)
		s.bytes -= cost(k, v)
	}
	if s.bytes+n > limit {
		return
	}
	s.m[key] = vs
	s.bytes += n
}

// interner shares the few distinct crate, target and profile strings among
// cached variants. It stops growing at a bound so hostile input cannot grow it
// without limit.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

const internLimit = 200_000

func (in *interner) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < internLimit {
		in.m[s] = s
	}
	return s
}
