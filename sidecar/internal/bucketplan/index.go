package bucketplan

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
)

// Errors that abort a listing; the previous index stays in use.
var (
	ErrListTooLarge = errors.New("key listing over its cap")
	ErrListStalled  = errors.New("key listing made no progress")
	ErrListRepeated = errors.New("key listing repeated or went backwards")
)

// index is the key cache: crate name -> cache keys, in listing order. It is
// immutable once built and swapped whole.
type index struct {
	keys    map[string][]string
	entries int
	built   time.Time
}

// listCaps are kache's key-cache bounds (kache-protocol.md 4.5).
type listCaps struct {
	maxEntries  int
	maxKeyBytes int64
	idle        time.Duration
	total       time.Duration
}

// buildIndex lists every entry manifest under prefix once. The walk is
// aborted by the caps as kache's is: too many entries or too much key text,
// no new key within caps.idle, or longer than caps.total. S3 lists keys in
// ascending UTF-8 order, so a key that is not greater than the one before
// means a repeated page (a bad continuation token) and aborts as well.
func buildIndex(ctx context.Context, b Bucket, prefix string, caps listCaps, now time.Time) (*index, error) {
	ctx, cancel := context.WithTimeout(ctx, caps.total)
	defer cancel()

	// The watchdog cancels the listing when fn has not been called for
	// caps.idle; progress resets its timer.
	var mu sync.Mutex
	stalled := false
	watchdog := time.AfterFunc(caps.idle, func() {
		mu.Lock()
		stalled = true
		mu.Unlock()
		cancel()
	})
	defer watchdog.Stop()

	idx := &index{keys: make(map[string][]string), built: now}
	var (
		entries  int
		keyBytes int64
		last     string
	)
	listPrefix := layout.EntryManifestsPrefix(prefix)
	err := b.List(ctx, listPrefix, func(key string, _ int64) error {
		watchdog.Reset(caps.idle)
		entries++
		keyBytes += int64(len(key))
		if entries > caps.maxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrListTooLarge, caps.maxEntries)
		}
		if keyBytes > caps.maxKeyBytes {
			return fmt.Errorf("%w: more than %d bytes of keys", ErrListTooLarge, caps.maxKeyBytes)
		}
		if entries > 1 && key <= last {
			return fmt.Errorf("%w: %q after %q", ErrListRepeated, key, last)
		}
		last = key
		crate, cacheKey, ok := layout.ParseEntryManifestKey(prefix, key)
		if !ok {
			return nil
		}
		// Clone so the index does not pin the listing's key strings.
		keys, seen := idx.keys[crate]
		if !seen {
			crate = strings.Clone(crate)
		}
		idx.keys[crate] = append(keys, strings.Clone(cacheKey))
		idx.entries++
		return nil
	})
	if err != nil {
		mu.Lock()
		s := stalled
		mu.Unlock()
		if s {
			return nil, fmt.Errorf("list %s: %w: nothing for %v", listPrefix, ErrListStalled, caps.idle)
		}
		return nil, fmt.Errorf("list %s: %w", listPrefix, err)
	}
	return idx, nil
}
