package api

import (
	"bytes"
	"hash/maphash"
	"sync"

	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// planCache keeps the encoded answers to recent intents for as long as what
// each plan read is unchanged (its planner.Stamp): a write invalidates only
// the plans that read what it changed, so plans stay cached while builds of
// other crates and namespaces land. Identical intents arrive in bursts (every
// job of a pipeline sends the same one) and encoding a plan of a thousand
// candidates costs more than composing it. Only the part after the
// disposition is kept, so each answer still gets a fresh plan id.
//
// Intents are keyed by a seeded hash of the body and compared whole on a
// hit. (A cryptographic digest instead of the copy cost 16% of the service's
// CPU on cache hits.)
type planCache struct {
	mu      sync.Mutex
	seed    maphash.Seed
	entries map[uint64]*cachedPlan
	bytes   int
	limit   int
}

type cachedPlan struct {
	intent      []byte
	stamp       *planner.Stamp
	disposition wire.Disposition
	outcome     planner.Outcome
	candidates  int
	tail        []byte
}

func newPlanCache(limitBytes int) *planCache {
	return &planCache{seed: maphash.MakeSeed(), entries: make(map[uint64]*cachedPlan), limit: limitBytes}
}

func (c *planCache) size(e *cachedPlan) int {
	return len(e.intent) + len(e.tail) + e.stamp.Bytes() + 160
}

// key is the cache key of an intent body; ok is false when caching is off.
func (c *planCache) key(body []byte) (k uint64, ok bool) {
	if c.limit <= 0 {
		return 0, false
	}
	return maphash.Bytes(c.seed, body), true
}

// get returns the cached answer to this intent body, under its key, while
// it is current; a stale one is dropped.
func (c *planCache) get(k uint64, body []byte) (*cachedPlan, bool) {
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if !ok || !bytes.Equal(e.intent, body) {
		return nil, false
	}
	// Outside the lock: checking what a plan read takes a few hundred
	// lookups when something was written since.
	if e.stamp.Current() {
		return e, true
	}
	c.mu.Lock()
	if c.entries[k] == e {
		c.bytes -= c.size(e)
		delete(c.entries, k)
	}
	c.mu.Unlock()
	return nil, false
}

// put stores the answer to an intent body; cached entries are immutable
// once stored. Arbitrary entries (map order) make room: stale ones are
// dropped when next asked for, and hot ones come back on their next miss.
func (c *planCache) put(k uint64, body []byte, e *cachedPlan) {
	e.intent = bytes.Clone(body)
	n := c.size(e)
	if n > c.limit/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[k]; ok {
		c.bytes -= c.size(old)
		delete(c.entries, k)
	}
	for victim, old := range c.entries {
		if c.bytes+n <= c.limit {
			break
		}
		c.bytes -= c.size(old)
		delete(c.entries, victim)
	}
	c.entries[k] = e
	c.bytes += n
}
