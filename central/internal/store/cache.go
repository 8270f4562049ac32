package store

import (
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// listCache keeps decoded variant lists (crate summaries and dep lists) in
// memory, bounded by an estimate of their size. Plans read hundreds of lists
// per request; decoding them from goleveldb each time costs more than the rest
// of planning together.
//
// Cached slices are shared and never modified: writers replace them whole.
// Consistency with the database: a writer replaces (or drops) a list after
// its batch is written and moves the epoch of the list's stripe, while
// readers fill misses only with putIfAbsent and only if that epoch has not
// moved since their miss, so a reader can never leave an older list behind
// a newer one. Stripes are many and narrow, so that the lists a write
// touches do not keep readers of other lists from filling theirs.
//
// Every list is cached with a version, unique across the cache and new
// whenever the list is put: a reader that remembers the versions of what it
// read can later tell whether any of it changed (current) without reading
// it again. An evicted list counts as changed.
type listCache struct {
	shards  [cacheShards]cacheShard
	stripes [cacheStripes]atomic.Uint32
	limit   int64 // bytes per shard
	vers    atomic.Uint64
}

// fillToken is what a reader's miss saw: the epochs a fill must find
// unchanged.
type fillToken struct {
	shard  uint64
	stripe uint32
}

// cachedList is one cached list, its key (the map's, to hand to readers
// without a copy) and its version.
type cachedList struct {
	key string
	vs  []Variant
	ver uint64
}

const (
	cacheShards  = 16
	cacheStripes = 1 << 14
)

type cacheShard struct {
	mu    sync.RWMutex
	m     map[string]cachedList
	bytes int64
	// epoch moves when the whole shard is cleared; a list's stripe epoch
	// moves when a writer changes it. Either way a reader that missed
	// before cannot fill what it read afterwards.
	epoch uint64
}

// variantBytes approximates what a cached variant costs: the struct and its
// hex key; crate, target and profile strings are interned.
const variantBytes = int64(unsafe.Sizeof(Variant{})) + 64

func newListCache(limitBytes int64) *listCache {
	c := &listCache{limit: limitBytes / cacheShards}
	for i := range c.shards {
		c.shards[i].m = make(map[string]cachedList)
	}
	return c
}

func (c *listCache) shard(key string) *cacheShard {
	return &c.shards[hashKey(key)%cacheShards]
}

// locate returns key's shard and the epoch of its stripe.
func (c *listCache) locate(key string) (*cacheShard, *atomic.Uint32) {
	h := hashKey(key)
	return &c.shards[h%cacheShards], &c.stripes[h/cacheShards%cacheStripes]
}

// stripe is the epoch of key's stripe.
func (c *listCache) stripe(key string) *atomic.Uint32 {
	_, st := c.locate(key)
	return st
}

func hashKey(key string) uint32 {
	var h uint32 = 2166136261
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return h
}

func cost(key string, vs []Variant) int64 {
	return int64(len(key)) + 48 + int64(len(vs))*variantBytes
}

// get returns a cached list and its version, or the token a reader must
// pass to fill.
func (c *listCache) get(key []byte) (cachedList, bool, fillToken) {
	if c.limit <= 0 {
		return cachedList{}, false, fillToken{}
	}
	s, st := c.locate(string(key))
	s.mu.RLock()
	e, ok := s.m[string(key)]
	t := fillToken{shard: s.epoch, stripe: st.Load()}
	s.mu.RUnlock()
	return e, ok, t
}

// fill inserts a list read from the database, unless a writer changed the
// shard since the reader's get. It returns the version the list is cached
// under, 0 when it was not cached.
func (c *listCache) fill(key string, vs []Variant, t fillToken) uint64 {
	if c.limit <= 0 {
		return 0
	}
	s, st := c.locate(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch != t.shard || st.Load() != t.stripe {
		return 0
	}
	if e, ok := s.m[key]; ok {
		if slices.Equal(e.vs, vs) {
			return e.ver // another reader filled the same list
		}
		return 0
	}
	return s.insert(key, vs, c.limit, c.vers.Add(1))
}

// current reports whether the list under key is still cached at version
// ver: not changed, evicted or cleared since it was read.
func (c *listCache) current(key string, ver uint64) bool {
	if ver == 0 {
		return false
	}
	s := c.shard(key)
	s.mu.RLock()
	e, ok := s.m[key]
	s.mu.RUnlock()
	return ok && e.ver == ver
}

// peek returns the cached list under key, for a writer about to change it.
func (c *listCache) peek(key string) ([]Variant, bool) {
	if c.limit <= 0 {
		return nil, false
	}
	s := c.shard(key)
	s.mu.RLock()
	e, ok := s.m[key]
	s.mu.RUnlock()
	return e.vs, ok
}

// settle ends a writer's change: vs (when non-nil) becomes the cached list.
func (c *listCache) settle(key string, vs []Variant) {
	if c.limit <= 0 {
		return
	}
	s, st := c.locate(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Add(1)
	if old, ok := s.m[key]; ok {
		// A list taken and settled by two writers in turn, or put back
		// by a fill in between: either way it changed.
		s.bytes -= cost(key, old.vs)
		delete(s.m, key)
	}
	if vs == nil {
		return
	}
	s.insert(key, vs, c.limit, c.vers.Add(1))
}

// insert evicts arbitrary entries (map order) until vs fits: cheap, and hot
// lists come back on their next read. It returns ver, or 0 when vs does not
// fit.
func (s *cacheShard) insert(key string, vs []Variant, limit int64, ver uint64) uint64 {
	n := cost(key, vs)
	for k, v := range s.m {
		if s.bytes+n <= limit {
			break
		}
		delete(s.m, k)
		s.bytes -= cost(k, v.vs)
	}
	if s.bytes+n > limit {
		return 0
	}
	s.m[key] = cachedList{key: key, vs: vs, ver: ver}
	s.bytes += n
	return ver
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
