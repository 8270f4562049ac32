// Command kache-service is kache-planner's central planner: a drop-in for
// kache's own kache-service that also learns from build manifests and
// timelines.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/fx"

	"github.com/kache-planner/kache-planner/central/internal/config"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/lifecycle"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Parse(args, os.LookupEnv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kache-service:", err)
		return 2
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, buildinfo.Line("kache-service"))
		return 0
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "kache-service: invalid configuration:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if limit, ok := memoryLimit(os.Getenv("GOMEMLIMIT"), cgroupMemoryMax); ok {
		debug.SetMemoryLimit(limit)
		log.Info("memory limit from cgroup", "go_memory_limit_bytes", limit)
	}
	// Signals are caught from here on, so one that arrives during startup
	// still stops the app gracefully instead of killing the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	app := fx.New(opts(cfg, log))
	return lifecycle.Run(lifecycle.App[fx.ShutdownSignal]{
		Start: app.Start, Stop: app.Stop,
		Wait: app.Wait(), ExitCode: func(s fx.ShutdownSignal) int { return s.ExitCode },
		StartTimeout: app.StartTimeout(), StopTimeout: app.StopTimeout(),
	}, sigs, log)
}

const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimit gives the Go runtime a soft limit of 80% of the container's
// memory limit, so the collector works harder before the kernel kills the
// pod. An explicit GOMEMLIMIT wins (the runtime reads it itself).
func memoryLimit(gomemlimit, path string) (int64, bool) {
	if gomemlimit != "" {
		return 0, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false // "max": no limit
	}
	return n / 5 * 4, true
}
