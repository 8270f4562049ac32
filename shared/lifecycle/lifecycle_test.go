package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
)

type fake struct {
	startErr, stopErr error
	stopped           bool
	stopDeadline      time.Duration
}

func (f *fake) app(wait <-chan int) App[int] {
	return App[int]{
		Start: func(context.Context) error { return f.startErr },
		Stop: func(ctx context.Context) error {
			f.stopped = true
			dl, _ := ctx.Deadline()
			f.stopDeadline = time.Until(dl)
			return f.stopErr
		},
		Wait:         wait,
		ExitCode:     func(c int) int { return c },
		StartTimeout: time.Second,
		StopTimeout:  3 * time.Second,
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name      string
		f         fake
		signal    bool
		asked     int
		want      int
		wantStops bool
	}{
		{name: "signal", signal: true, want: 0, wantStops: true},
		{name: "app asks with code", asked: 3, want: 3, wantStops: true},
		{name: "start fails", f: fake{startErr: errors.New("bind")}, signal: true, want: 1},
		{name: "stop fails", f: fake{stopErr: errors.New("timeout")}, signal: true, want: 1, wantStops: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sigs := make(chan os.Signal, 1)
			wait := make(chan int, 1)
			if tt.signal {
				sigs <- syscall.SIGTERM
			} else {
				wait <- tt.asked
			}
			f := tt.f
			if got := Run(f.app(wait), sigs, slog.New(slog.DiscardHandler)); got != tt.want {
				t.Errorf("exit code %d, want %d", got, tt.want)
			}
			if f.stopped != tt.wantStops {
				t.Errorf("stopped = %v, want %v", f.stopped, tt.wantStops)
			}
			if f.stopped && (f.stopDeadline <= 2*time.Second || f.stopDeadline > 3*time.Second) {
				t.Errorf("stop context deadline in %s, want the 3s stop timeout", f.stopDeadline)
			}
		})
	}
}
