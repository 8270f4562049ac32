package api

import (
	"bytes"
	"hash/maphash"
	"sync"

	"github.com/kache-planner/kache-planner/central/internal/planner"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// planCache keeps the encoded answers to recent intents until the next write
// to the store. Identical intents arrive in bursts (every job of a pipeline
// sends the same one) and encoding a plan of a thousand candidates costs more
// than composing it. Only the part after the disposition is kept, so each
// answer still gets a fresh plan id.
type planCache struct {
	mu      sync.Mutex
	seed    maphash.Seed
	entries map[uint64]*cachedPlan
	bytes   int
	limit   int
}

type cachedPlan struct {
	intent      []byte
	generation  uint64
	disposition wire.Disposition
	outcome     planner.Outcome
	candidates  int
	tail        []byte
}

func newPlanCache(limitBytes int) *planCache {
	return &planCache{seed: maphash.MakeSeed(), entries: make(map[uint64]*cachedPlan), limit: limitBytes}
}

func (c *planCache) size(e *cachedPlan) int { return len(e.intent) + len(e.tail) + 96 }

// get returns the cached answer to this exact intent body at this generation.
func (c *planCache) get(body []byte, gen uint64) (*cachedPlan, bool) {
	if c.limit <= 0 {
		return nil, false
	}
	h := maphash.Bytes(c.seed, body)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[h]
	if !ok || e.generation != gen || !bytes.Equal(e.intent, body) {
		return nil, false
	}
	return e, true
}

// put stores an answer; cached entries are immutable once stored. Entries of
// older generations are dropped first, then arbitrary ones.
func (c *planCache) put(body []byte, e *cachedPlan) {
	if c.limit <= 0 {
		return
	}
	e.intent = bytes.Clone(body)
	n := c.size(e)
	if n > c.limit/4 {
		return
	}
	h := maphash.Bytes(c.seed, body)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[h]; ok {
		c.bytes -= c.size(old)
		delete(c.entries, h)
	}
	for k, old := range c.entries {
		if c.bytes+n <= c.limit {
			break
		}
		if old.generation != e.generation || c.bytes+n > c.limit {
			c.bytes -= c.size(old)
			delete(c.entries, k)
		}
	}
	c.entries[h] = e
	c.bytes += n
}
