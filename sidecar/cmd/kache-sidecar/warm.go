package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// Warm exit codes. A cache must never fail a build, so everything but a
// usage error exits 0 unless --strict.
const (
	exitOK          = 0
	exitUnavailable = 3
)

// warmCommand plans and prefetches for a workspace. When a sidecar is
// serving on the planner address it asks that sidecar, so its S3 surface,
// hint cache and outcome tracking see the prefetch; otherwise it plans from
// central or the bucket and prefetches into the store directory itself.
// cargo is the job's cargo command (`kache-sidecar warm -- cargo build
// --release ...`; nil when not given): it describes the job to the sidecar
// (jobctx.go).
func warmCommand(ctx context.Context, cfg config.Config, cargo []string, log *slog.Logger, stderr io.Writer) int {
	intent, err := workspaceIntent(cfg)
	if err != nil {
		// No readable Cargo.lock is a usage problem even without --strict.
		fmt.Fprintln(stderr, "kache-sidecar warm:", err)
		return 2
	}
	info, err := runnerInfo(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "kache-sidecar warm:", err)
		return 2
	}
	if err := describeJob(intent, cfg, info, parseCargoCommand(cargo)); err != nil {
		fmt.Fprintln(stderr, "kache-sidecar warm:", err)
		return 2
	}
	timeout := cfg.WarmTimeout
	if timeout <= 0 {
		timeout = cfg.PrefetchDeadline + 30*time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	show := newProgressView(stderr, cfg.Progress, log)
	log.Info("warm", "workspace", cfg.Workspace, "crates", len(intent.CrateNames), "lock_deps", len(intent.CargoLockDeps),
		"namespace", cfg.Namespace, "target", intent.Target, "profile", intent.Profile, "toolchain", intent.Toolchain)

	var res warmResult
	if sc := probeSidecar(ctx, cfg); sc != nil {
		res = warmViaSidecar(ctx, sc, intent, show, log)
	} else {
		res = warmStandalone(ctx, cfg, info, intent, show, log)
		if errors.Is(res.err, store.ErrLocked) {
			// A sidecar owns the store directory but missed the probe
			// (starting, or busy): prefetch through it, never beside it.
			if sc := waitSidecar(ctx, cfg, lockedWait); sc != nil {
				res = warmViaSidecar(ctx, sc, intent, show, log)
			} else {
				res.err = fmt.Errorf("the store directory belongs to a running kache-sidecar that does not answer on %s: %w",
					cfg.PlannerListen, res.err)
			}
		}
	}
	show.finish(res.progress)
	log.Info("warm done", "plan_source", res.source, "via", res.via, "keys", res.progress.Keys,
		"fetched", res.progress.Fetched, "present", res.progress.Present, "not_found", res.progress.NotFound,
		"failed", res.progress.Failed, "skipped", res.progress.Skipped, "bytes", res.progress.Bytes, "error", errString(res.err))
	if res.err != nil && cfg.Strict {
		fmt.Fprintln(stderr, "kache-sidecar warm:", res.err)
		return exitUnavailable
	}
	return exitOK
}

type warmResult struct {
	via      string // sidecar or standalone
	source   string // where the plan came from
	progress prefetch.Progress
	// err is set when the planner or the bucket was unavailable; only
	// --strict turns it into a failure.
	err error
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sessionAppearTimeout bounds the wait for a running sidecar to start the
// prefetch of the plan it answered.
const sessionAppearTimeout = 5 * time.Second

// workspaceIntent builds the intent kache would send for the workspace:
// package names leaves first, the namespace, and the lock deps only when a
// namespace is set (kache-protocol.md 3.7).
func workspaceIntent(cfg config.Config) (*wire.BuildIntent, error) {
	path := filepath.Join(cfg.Workspace, "Cargo.lock")
	lock, err := cargolock.ParseFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	in := &wire.BuildIntent{CrateNames: lock.DependencyOrder(), CargoLockDeps: []wire.LockDep{}, Toolchain: cfg.Toolchain}
	if in.Toolchain == "" {
		in.Toolchain = rustcRelease(cfg.Workspace)
	}
	if ns := strings.TrimSpace(cfg.Namespace); ns != "" {
		in.Namespace = &ns
		in.CargoLockDeps = lock.Deps()
	}
	return in, nil
}

// rustcRelease asks the workspace's rustc (rustup honours its
// rust-toolchain file there) for its release, e.g. "1.82.0"; "" when there
// is no rustc.
func rustcRelease(dir string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rustc", "-vV")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return parseRustcRelease(string(out))
}

// parseRustcRelease reads the `release: X` line of `rustc -vV`.
func parseRustcRelease(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "release:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// sidecarClient talks to a running sidecar's planner surface.
type sidecarClient struct {
	base  string
	token string
	http  *http.Client
}

// probeSidecar returns a client when a sidecar answers /healthz on the
// planner address.
// lockedWait bounds the wait for a sidecar that holds the store directory
// to answer.
const lockedWait = 10 * time.Second

// waitSidecar probes until a sidecar answers or d passes.
func waitSidecar(ctx context.Context, cfg config.Config, d time.Duration) *sidecarClient {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if sc := probeSidecar(ctx, cfg); sc != nil {
			return sc
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func probeSidecar(ctx context.Context, cfg config.Config) *sidecarClient {
	sc := &sidecarClient{base: "http://" + cfg.PlannerListen, token: cfg.Token, http: &http.Client{Timeout: 2 * time.Second}}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sc.base+"/healthz", nil)
	if err != nil {
		return nil
	}
	resp, err := sc.http.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var h wire.Health
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&h) != nil || h.Status != "ok" {
		return nil
	}
	return sc
}

func (sc *sidecarClient) do(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, sc.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if sc.token != "" {
		req.Header.Set("Authorization", "Bearer "+sc.token)
	}
	resp, err := sc.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	return resp.StatusCode, json.Unmarshal(data, out)
}

func warmViaSidecar(ctx context.Context, sc *sidecarClient, intent *wire.BuildIntent, show *progressView, log *slog.Logger) warmResult {
	res := warmResult{via: "sidecar"}
	body, _ := json.Marshal(intent)
	var plan wire.PrefetchPlan
	if _, err := sc.do(ctx, http.MethodPost, "/v2/prefetch-plan", body, &plan); err != nil {
		res.err = fmt.Errorf("ask the sidecar for a plan: %w", err)
		return res
	}
	res.source = plan.Planner
	if plan.Disposition != wire.Execute || len(plan.Candidates) == 0 {
		res.err = fmt.Errorf("no plan for this workspace (disposition %s)", plan.Disposition)
		return res
	}
	// The sidecar hands the plan to its prefetcher just after answering.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	seen := false
	// The plan reaches the prefetcher just after the answer; a session that
	// has not appeared by then never will (prefetching off for plans).
	appearBy := time.Now().Add(sessionAppearTimeout)
	for {
		var p prefetch.Progress
		status, err := sc.do(ctx, http.MethodGet, "/v1/prefetch/sessions/"+plan.PlanID, nil, &p)
		switch {
		case err == nil:
			seen = true
			res.progress = p
			show.update(p)
			if p.Finished {
				res.err = failures(p)
				return res
			}
		case status == http.StatusNotImplemented:
			res.err = fmt.Errorf("the sidecar answered a plan but cannot prefetch: %w", err)
			return res
		case status == http.StatusNotFound && !seen && time.Now().After(appearBy):
			res.err = errors.New("the sidecar started no prefetch for the plan (is --prefetch-on-plan off?)")
			return res
		case status == http.StatusNotFound && !seen:
			// Not submitted yet.
		case status == http.StatusNotFound:
			// Closed and reported: it finished between two polls.
			res.progress.Finished = true
			return res
		default:
			log.Debug("prefetch progress", "error", err)
		}
		select {
		case <-ctx.Done():
			res.err = fmt.Errorf("wait for the prefetch: %w", ctx.Err())
			return res
		case <-tick.C:
		}
	}
}

func warmStandalone(ctx context.Context, cfg config.Config, info runner.Info, intent *wire.BuildIntent, show *progressView, log *slog.Logger) warmResult {
	res := warmResult{via: "standalone"}
	b, err := newBucket(cfg)
	if err != nil {
		res.err = err
		return res
	}
	c, err := newCentral(cfg, log)
	if err != nil {
		res.err = err
		return res
	}
	if c != nil {
		defer c.Close()
	}
	st, err := newStore(cfg, log)
	if err != nil {
		res.err = err
		return res
	}
	defer st.Close()
	now := newClock(cfg)
	bp, err := newBucketPlan(cfg, b, st, now, log)
	if err != nil {
		res.err = err
		return res
	}
	if bp != nil {
		// One listing is enough for one plan; no refresher goroutine.
		if err := bp.Refresh(ctx); err != nil {
			log.Warn("list the bucket", "error", err)
		} else {
			keys, _ := bp.IndexStats()
			log.Info("bucket listed", "keys", keys)
		}
	}
	// Nobody is waiting on a 750 ms budget here: give central and the
	// shard reads time to answer.
	pcfg := cfg
	pcfg.PlanDeadline = 15 * time.Second
	p, err := newPlanner(pcfg, info, nil, c, bp, nil, now, log)
	if err != nil {
		res.err = err
		return res
	}
	defer p.Stop(context.Background())
	r := p.Plan(ctx, intent)
	res.source = string(r.Source)
	if r.Source == planner.SourceFallback || r.Plan.Disposition != wire.Execute {
		res.err = errors.New("neither central nor the bucket had a plan for this workspace")
		return res
	}
	e := newEngine(cfg, b, st, prefetch.NewMetrics(nil), c, now, log)
	if e == nil {
		res.err = errors.New("no bucket configured (--s3-bucket): nothing to prefetch from")
		return res
	}
	if err := e.Start(ctx); err != nil {
		res.err = err
		return res
	}
	defer e.Stop(context.Background())
	s := e.Submit(planOf(r.Intent, r.Plan, res.source))
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.Done():
			res.progress = e.Progress(s)
			res.err = failures(res.progress)
			return res
		case <-ctx.Done():
			res.progress = e.Progress(s)
			res.err = fmt.Errorf("wait for the prefetch: %w", ctx.Err())
			return res
		case <-tick.C:
			show.update(e.Progress(s))
		}
	}
}

// failures says whether the bucket was unavailable for part of the plan.
func failures(p prefetch.Progress) error {
	if p.Failed > 0 {
		return fmt.Errorf("%d of %d downloads failed", p.Failed, p.Keys)
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
