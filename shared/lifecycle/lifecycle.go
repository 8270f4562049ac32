// Package lifecycle runs a long-lived process the way both binaries do:
// start within a timeout, run until a signal or until the application asks
// to stop, then stop within a timeout, and turn all that into an exit code.
// It takes plain functions, so it does not import fx; main.go adapts the fx
// app to it.
package lifecycle

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// App is what Run drives. S is what Wait delivers (fx's ShutdownSignal).
type App[S any] struct {
	Start func(context.Context) error
	Stop  func(context.Context) error
	// Wait delivers once the application asks to stop by itself (fx's
	// app.Wait()); ExitCode turns that into the process's exit code.
	Wait     <-chan S
	ExitCode func(S) int

	StartTimeout time.Duration
	StopTimeout  time.Duration
}

// Run starts app, waits for a signal on sigs or for app.Wait, and stops it.
// It returns 1 when starting or stopping fails, else the exit code app
// asked for (0 after a signal). A failed start is not followed by Stop: the
// application undoes a partial start itself.
func Run[S any](app App[S], sigs <-chan os.Signal, log *slog.Logger) int {
	startCtx, cancel := context.WithTimeout(context.Background(), app.StartTimeout)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		log.Error("start", "error", err)
		return 1
	}
	code := 0
	select {
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	case s := <-app.Wait:
		code = app.ExitCode(s)
		log.Info("stopping", "exit_code", code)
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), app.StopTimeout)
	defer cancelStop()
	began := time.Now()
	if err := app.Stop(stopCtx); err != nil {
		log.Error("stop", "error", err, "took", time.Since(began))
		return 1
	}
	log.Info("stopped", "took", time.Since(began))
	return code
}
