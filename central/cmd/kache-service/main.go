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

	"go.uber.org/fx"

	"github.com/kache-planner/kache-planner/central/internal/config"
	"github.com/kache-planner/kache-planner/shared/buildinfo"
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
		fmt.Fprintf(stdout, "kache-service %s\n", buildinfo.Resolve(buildinfo.Version))
		return 0
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "kache-service: invalid configuration:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	app := fx.New(opts(cfg, log))
	if err := app.Err(); err != nil {
		log.Error("start", "error", err)
		return 1
	}
	// Run exits the process itself with a non-zero code requested through
	// fx.Shutdowner or on a failed start.
	app.Run()
	return 0
}
