package background

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStopWaitsForTheGoroutine(t *testing.T) {
	var task Task
	if err := task.Stop(context.Background()); err != nil {
		t.Fatalf("stop before start: %v", err)
	}
	exited := make(chan struct{})
	task.Go(func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond)
		close(exited)
	})
	if err := task.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("Stop returned before the goroutine did")
	}
}

func TestStopTimesOut(t *testing.T) {
	var task Task
	release := make(chan struct{})
	task.Go(func(context.Context) { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := task.Stop(ctx); err == nil {
		t.Fatal("Stop should report a goroutine that does not return")
	}
	close(release)
	if err := task.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
