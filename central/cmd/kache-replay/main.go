// Command kache-replay replays a project's Cargo.lock history (the traces
// format of shared/traces/README.md) under every prefetch planning policy
// and scores them (issue 5). See central/internal/replay/README.md.
//
//	kache-replay --trace DIR --json FILE [--png FILE] [--seed N] [--context none|warm] [--namespace TEMPLATE] [--warm-lead DURATION]
//	kache-replay --trace DIR --export-builds FILE [--commits N] [--seed N] [--namespace TEMPLATE]
//	kache-replay from-git --repo CHECKOUT --out DIR [--ref REF]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/replay"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "kache-replay:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "from-git" {
		return fromGit(args[1:], stderr)
	}
	fs := flag.NewFlagSet("kache-replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	trace := fs.String("trace", "", "trace directory (commits.jsonl and locks/)")
	jsonOut := fs.String("json", "", "results file to write")
	pngOut := fs.String("png", "", "chart of recall, byte precision and wall time over the history (optional)")
	seed := fs.Uint64("seed", 1, "seed of the build model")
	namespace := fs.String("namespace", replay.DefaultConfig(0).Namespace, `KACHE_NAMESPACE template of each job ("{target}", "{profile}", "{features}"); empty = unset`)
	context := fs.String("context", string(replay.ContextWarm), "what the planner is told about each job: none (kache and the sidecar's own configuration) or warm (plus what kache-sidecar warm learns in the job)")
	warmLead := fs.Duration("warm-lead", 0, "the sidecar's warm starts this long before the first rustc (context warm): planner and oracle_lead fetch from then on")
	commits := fs.Int("commits", 0, "replay only the first N commits in build order (0 = all; a measurement aid)")
	noSplit := fs.Bool("no-family-split", false, "the sidecar model does not split profile-less plans by profile nor prune by the build's first reads (a measurement aid)")
	splitParts := fs.Int("split-parts", replay.DefaultTransferModel().SplitParts, "connections the sidecar fetches an object over 4 MiB over (its --prefetch-split-parts; 1: never split, the model before issue 10's split downloads)")
	lookahead := fs.Int("lookahead", replay.DefaultTransferModel().Lookahead, "GETs the sidecar sends beyond its 12 connections before one is free (its --prefetch-lookahead; 0: none, the model before it)")
	only := fs.String("only", "", "score only these policies (comma-separated; none is always scored); the results file then lacks the others")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	exportBuilds := fs.String("export-builds", "", "write the builds instead of scoring them: one JSON line per build in start order (keys, costs, kache's intent, units in build order), bounded by --commits; for the e2e fleet")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *trace == "" || (*jsonOut == "" && *exportBuilds == "") {
		fs.Usage()
		return errors.New("--trace and --json (or --export-builds) are required")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *quiet {
		log = slog.New(slog.DiscardHandler)
	}

	if *lookahead < 0 || *splitParts < 1 {
		return fmt.Errorf("--lookahead %d, --split-parts %d: want at least 0 and 1", *lookahead, *splitParts)
	}
	started := time.Now()
	ctx, err := replay.ParseContext(*context)
	if err != nil {
		return err
	}
	t, err := replay.LoadTrace(*trace)
	if err != nil {
		return err
	}
	cfg := replay.DefaultConfig(*seed)
	cfg.Namespace = *namespace
	cfg.Context = ctx
	cfg.MaxCommits = *commits
	cfg.WarmLeadMs = warmLead.Milliseconds()
	cfg.NoFamilySplit = *noSplit
	cfg.Transfer.SplitParts = *splitParts
	cfg.Transfer.Lookahead = *lookahead
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if *exportBuilds != "" {
		return export(*exportBuilds, t, cfg, log, started)
	}
	cfg.Progress = func(done, total int) {
		if done%250 == 0 || done == total {
			log.Info("replaying", "project", t.Project, "commits", done, "of", total, "elapsed", time.Since(started).Round(time.Second))
		}
	}
	res, err := replay.Run(t, cfg)
	if err != nil {
		return err
	}
	if err := replay.WriteJSON(*jsonOut, res); err != nil {
		return err
	}
	if *pngOut != "" {
		if err := replay.WriteChart(*pngOut, res); err != nil {
			return err
		}
	}
	if err := replay.WriteTable(stdout, res); err != nil {
		return err
	}
	log.Info("done", "project", t.Project, "elapsed", time.Since(started).Round(time.Millisecond))
	return nil
}

// export writes the builds of the replay to path (kache-replay
// --export-builds).
func export(path string, t *replay.Trace, cfg replay.Config, log *slog.Logger, started time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create export: %w", err)
	}
	n, err := replay.ExportBuilds(f, t, cfg)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close export: %w", cerr)
	}
	if err != nil {
		return err
	}
	log.Info("exported builds", "project", t.Project, "builds", n, "file", path, "elapsed", time.Since(started).Round(time.Millisecond))
	return nil
}

func fromGit(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("kache-replay from-git", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repo := fs.String("repo", "", "local git checkout")
	out := fs.String("out", "", "trace directory to write (created)")
	ref := fs.String("ref", "HEAD", "tip of the default branch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *repo == "" || *out == "" {
		fs.Usage()
		return errors.New("--repo and --out are required")
	}
	n, err := replay.TraceFromGit(*repo, *out, *ref)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d commits to %s\n", n, *out)
	return nil
}

// startProfile starts a CPU profile; the returned func stops and closes it.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
