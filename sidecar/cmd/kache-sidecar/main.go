// Command kache-sidecar runs beside a CI runner: kache's planner endpoint
// (answering from its hint cache, central or the bucket) and a prefetcher
// that fetches planned packs from the bucket before the build asks for them.
//
//	kache-sidecar serve [flags]                  run the sidecar
//	kache-sidecar warm --workspace DIR [flags]   plan and prefetch for a checkout
//	kache-sidecar version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/fx"

	"github.com/kache-planner/kache-planner/shared/buildinfo"
	"github.com/kache-planner/kache-planner/shared/lifecycle"
	"github.com/kache-planner/kache-planner/shared/memlimit"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: kache-sidecar <command> [flags]

commands:
  serve    run the planner surface and the prefetcher (flags: kache-sidecar serve -h)
  warm     plan and prefetch for a Cargo workspace, then exit (kache-sidecar warm -h);
           name the job's cargo command after -- so the sidecar learns its profile,
           target and features: kache-sidecar warm --workspace . -- cargo build --release
  version  print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, buildinfo.Line("kache-sidecar"))
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "serve", "warm":
	default:
		fmt.Fprintf(stderr, "kache-sidecar: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	rest, cargo := splitWarmArgs(cmd, rest)
	cfg, err := config.Parse(cmd, rest, os.LookupEnv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kache-sidecar:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "kache-sidecar: invalid configuration:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	// The lower of --memory-limit and 80% of the container's limit; an
	// explicit GOMEMLIMIT wins.
	if limit, ok := memlimit.Choose(os.Getenv("GOMEMLIMIT"), memlimit.CgroupMax, cfg.MemoryLimit); ok {
		debug.SetMemoryLimit(limit)
		log.Debug("go memory limit", "go_memory_limit_bytes", limit)
	}
	// Signals are caught from here on, so one that arrives during startup
	// still stops the sidecar gracefully.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if cmd == "warm" {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-sigs:
				cancel()
			case <-ctx.Done():
			}
		}()
		return warmCommand(ctx, cfg, cargo, log, stderr)
	}
	return serve(cfg, log, sigs)
}

func serve(cfg config.Config, log *slog.Logger, sigs <-chan os.Signal) int {
	app := fx.New(opts(cfg, log))
	return lifecycle.Run(lifecycle.App[fx.ShutdownSignal]{
		Start: app.Start, Stop: app.Stop,
		Wait: app.Wait(), ExitCode: func(s fx.ShutdownSignal) int { return s.ExitCode },
		StartTimeout: app.StartTimeout(), StopTimeout: app.StopTimeout(),
	}, sigs, log)
}
