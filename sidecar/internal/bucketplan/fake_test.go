package bucketplan

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

var errFakeNotFound = errors.New("fake: object not found")

func isFakeNotFound(err error) bool { return errors.Is(err, errFakeNotFound) }

// fakeBucket is an in-memory Bucket. Objects list in ascending key order, as
// S3 lists them.
type fakeBucket struct {
	mu       sync.Mutex
	objects  map[string][]byte
	readErrs map[string]error
	// readDelay is slept (or cut short by ctx) before every ReadAll.
	readDelay time.Duration
	// listKeys, when set, is listed instead of the objects' keys.
	listKeys []string
	// listBlock makes List block until its context ends.
	listBlock bool
	listErr   error

	reads, inFlight, maxInFlight int
}

func newFakeBucket() *fakeBucket {
	return &fakeBucket{objects: map[string][]byte{}, readErrs: map[string]error{}}
}

func (b *fakeBucket) put(key string, data string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[key] = []byte(data)
}

func (b *fakeBucket) ReadAll(ctx context.Context, key string, limit int64) ([]byte, error) {
	b.mu.Lock()
	b.reads++
	b.inFlight++
	b.maxInFlight = max(b.maxInFlight, b.inFlight)
	delay := b.readDelay
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.readErrs[key]; err != nil {
		return nil, err
	}
	data, ok := b.objects[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, errFakeNotFound)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("get %s: over %d bytes", key, limit)
	}
	return slices.Clone(data), nil
}

func (b *fakeBucket) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	b.mu.Lock()
	keys := b.listKeys
	if keys == nil {
		keys = slices.Sorted(maps.Keys(b.objects))
	}
	block, listErr := b.listBlock, b.listErr
	b.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(k, 1); err != nil {
			return err
		}
	}
	return listErr
}

// fakeHistory maps crates to keys.
type fakeHistory map[string][]string

func (h fakeHistory) Keys(crate string) []string { return h[crate] }
