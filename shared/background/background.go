// Package background runs one long-lived goroutine with an owner: Start
// launches it with a context that Stop cancels, and Stop waits for it to
// return. Components with a loop (central's leader elector and bucket
// crawler, the sidecar's key-index refresher) embed a Task instead of
// repeating that bookkeeping.
package background

import (
	"context"
	"fmt"
	"sync"
)

// Task owns at most one running goroutine.
type Task struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Go starts run in a goroutine. Its context is independent of the caller's
// (an fx OnStart context ends when startup does) and is cancelled by Stop.
func (t *Task) Go(run func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.mu.Lock()
	t.cancel, t.done = cancel, done
	t.mu.Unlock()
	go func() {
		defer close(done)
		run(ctx)
	}()
}

// Stop cancels the goroutine and waits for it within ctx. Stopping a task
// that never started is a no-op.
func (t *Task) Stop(ctx context.Context) error {
	t.mu.Lock()
	cancel, done := t.cancel, t.done
	t.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop background task: %w", ctx.Err())
	}
}
