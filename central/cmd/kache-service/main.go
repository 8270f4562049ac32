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
	"syscall"

	"go.uber.org/fx"

	"github.com/kache-planner/kache-planner/central/internal/config"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/lifecycle"
	"github.com/kache-planner/kache-planner/shared/memlimit"
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
	// 80% of the container's limit; an explicit GOMEMLIMIT wins.
	if limit, ok := memlimit.Choose(os.Getenv("GOMEMLIMIT"), memlimit.CgroupMax, 0); ok {
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
