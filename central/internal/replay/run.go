package replay

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Config is the whole build model; DefaultConfig documents the defaults.
type Config struct {
	Seed uint64
	Jobs []Job
	// Namespace is the KACHE_NAMESPACE template each job sets ("{target}",
	// "{profile}", "{features}" expand); empty means unset, kache's default,
	// which turns shards off.
	Namespace string
	// Context is what the planner policy is told about each job and what
	// central learns from it (ContextNone, ContextWarm).
	Context Context
	// WarmLeadMs is how long before the first rustc the sidecar's warm
	// starts (ContextWarm only): the warmed policies' plans are asked then,
	// from what central knew then, and their downloads start that much
	// earlier; what they fetched is a local hit. 0: warm runs just before
	// cargo.
	WarmLeadMs int64
	// ToolchainLagSec is how long after a Rust release CI adopts it.
	ToolchainLagSec int64
	Cost            CostModel
	Transfer        TransferModel
	Build           BuildModel
	// Only, when set, scores just these policies (a measurement aid: the
	// results file then lacks the others). The fallback planner still
	// answers for remote planners that fall back.
	Only []string
	// NoFamilySplit turns off the sidecar's plan split by profile for
	// intents without a profile or namespace, and the pruning of the other
	// families once the build's reads reveal its own (a measurement aid).
	NoFamilySplit bool
	// MaxCommits, when positive, stops the replay after that many commits
	// in build order (a measurement aid for iterating; results are for the
	// commits replayed).
	MaxCommits int
	// Progress, when set, is called after each commit.
	Progress func(done, total int)
}

// DefaultConfig is the documented model for a seed. The seed draws the
// crates' costs and the toolchain adoption lag (0-13 days).
func DefaultConfig(seed uint64) Config {
	return Config{
		Seed:            seed,
		Jobs:            DefaultJobs(),
		Namespace:       "{target}/{profile}",
		Context:         ContextWarm,
		ToolchainLagSec: int64(seed*0x9e3779b97f4a7c15>>32) % (14 * 86400),
		Cost:            DefaultCostModel(seed),
		Transfer:        DefaultTransferModel(),
		Build:           DefaultBuildModel(),
	}
}

// Result is one run: the results file's content plus the per-build scores
// the chart draws.
type Result struct {
	Project string `json:"project"`
	Seed    uint64 `json:"seed"`
	Commits int    `json:"commits"`
	// BuiltCommits excludes the inner commits of same-time runs.
	BuiltCommits int                     `json:"built_commits"`
	Branches     int                     `json:"branches"`
	Builds       int                     `json:"builds"`
	Model        Model                   `json:"model"`
	Policies     map[string]PolicyResult `json:"policies"`
	// Splits counts the planner's plans split by profile.
	Splits SplitStats `json:"splits"`
	// Order lists the policies in table order.
	Order []string `json:"-"`
	// Scores holds each policy's per-build scores in build order.
	Scores map[string][]BuildScore `json:"-"`
}

// PolicyResult is one policy's scores on first builds of branches and on
// all builds.
type PolicyResult struct {
	FirstBuild Summary `json:"first_build"`
	Overall    Summary `json:"overall"`
}

// SplitStats counts the plans the sidecar split by profile: revealed when a
// read told the build's profile within the wait.
type SplitStats struct {
	Revealed   int `json:"revealed"`
	Unrevealed int `json:"unrevealed"`
}

// Model records the build model a result was produced with.
type Model struct {
	Jobs            []Job         `json:"jobs"`
	Namespace       string        `json:"namespace"`
	Context         Context       `json:"context"`
	WarmLeadMs      int64         `json:"warm_lead_ms"`
	ToolchainLagSec int64         `json:"toolchain_lag_sec"`
	Cost            CostModel     `json:"cost"`
	Transfer        TransferModel `json:"transfer"`
	Build           BuildModel    `json:"build"`
}

// runner holds one run's state.
type runner struct {
	trace    *Trace
	cfg      Config
	sched    Schedule
	bucket   *Bucket
	policies []Policy
	fallback Policy
	scores   [][]BuildScore
	splits   SplitStats
}

// completed is a build whose uploads and manifest become visible at end.
type completed struct {
	end      int64
	build    *Build
	manifest wire.BuildManifest
}

// Run replays the trace under every policy.
func Run(t *Trace, cfg Config) (res *Result, err error) {
	if len(cfg.Jobs) == 0 {
		return nil, errors.New("run replay: no jobs configured")
	}
	if _, err := ParseContext(string(cfg.Context)); err != nil {
		return nil, fmt.Errorf("run replay: %w", err)
	}
	if cfg.WarmLeadMs < 0 || cfg.WarmLeadMs > 0 && cfg.Context != ContextWarm {
		return nil, fmt.Errorf("run replay: a warm lead of %d ms needs context %s (warm is what starts early)", cfg.WarmLeadMs, ContextWarm)
	}
	r := &runner{trace: t, cfg: cfg, sched: NewSchedule(t), bucket: NewBucket()}
	closers, err := r.setupPolicies()
	for _, c := range closers {
		defer func() {
			if cerr := c.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close policy: %w", cerr)
			}
		}()
	}
	if err != nil {
		return nil, err
	}
	r.scores = make([][]BuildScore, len(r.policies))
	if err := r.replay(); err != nil {
		return nil, err
	}
	return r.result(), nil
}

func (r *runner) setupPolicies() ([]io.Closer, error) {
	fb := &kacheFallback{bucket: r.bucket}
	r.fallback = fb
	c, err := newCentral(r.cfg.Context, !r.cfg.NoFamilySplit)
	if err != nil {
		return nil, err
	}
	closers := []io.Closer{c}
	all := []Policy{none{}, fb, newKacheService(), &lockfileAll{bucket: r.bucket, maxKeys: r.cfg.Transfer.MaxKeys}, c, oracle{}}
	if r.cfg.WarmLeadMs > 0 {
		all = append(all, oracle{lead: true})
	} else {
		all = append(all, oracle{sidecar: true})
	}
	all = append(all, allLocal{})
	for _, p := range all {
		if len(r.cfg.Only) == 0 || slices.Contains(r.cfg.Only, p.Name()) || p.Name() == PolicyNone {
			r.policies = append(r.policies, p)
		}
	}
	return closers, nil
}

func (r *runner) replay() error {
	pending := newHeap(func(a, b *completed) bool {
		return a.end < b.end || a.end == b.end && a.build.Seq < b.build.Seq
	})
	completeUntil := func(t int64) error {
		for pending.Len() > 0 && pending.Peek().end <= t {
			if err := r.complete(pending.Pop()); err != nil {
				return err
			}
		}
		return nil
	}
	// Events run in time order: a commit's warm plans at its start minus
	// the lead (with a lead), its builds at its start, completions at their
	// ends. Builds come commit by commit in start order, so a commit's
	// builds are held until every earlier event has run: a warm plan sees
	// only the builds that completed the lead before its build.
	type batch struct {
		start  int64
		builds []*Build
	}
	var queue []*batch
	var cur *batch
	score := func(bt *batch) error {
		if err := completeUntil(bt.start); err != nil {
			return err
		}
		for _, b := range bt.builds {
			b.refreshAvailable(r.bucket)
			wall, err := r.scoreBuild(b)
			if err != nil {
				return err
			}
			end := b.StartMs + int64(wall)
			pending.Push(&completed{end: end, build: b, manifest: b.Manifest(end)})
		}
		return nil
	}
	arrive := func(bt *batch) error {
		if bt == nil || len(bt.builds) == 0 {
			return nil
		}
		lead := r.cfg.WarmLeadMs
		for len(queue) > 0 && queue[0].start <= bt.start-lead {
			if err := score(queue[0]); err != nil {
				return err
			}
			queue = queue[1:]
		}
		if lead > 0 {
			if err := completeUntil(bt.start - lead); err != nil {
				return err
			}
			for _, b := range bt.builds {
				b.refreshAvailable(r.bucket)
				if err := r.planWarm(b); err != nil {
					return err
				}
			}
		}
		queue = append(queue, bt)
		return nil
	}
	err := r.eachBuild(func(s int64) error {
		if err := arrive(cur); err != nil {
			return err
		}
		cur = &batch{start: s}
		return nil
	}, func(b *Build) error {
		cur.builds = append(cur.builds, b)
		return nil
	})
	if err == nil {
		err = arrive(cur)
	}
	for _, bt := range queue {
		if err != nil {
			break
		}
		err = score(bt)
	}
	return err
}

// planWarm asks the warmed policies for their plans, the lead before the
// build starts.
func (r *runner) planWarm(b *Build) error {
	for _, p := range r.policies {
		if w, ok := p.(warmer); ok && w.warmed() {
			cands, err := r.plan(p, b)
			if err != nil {
				return err
			}
			if b.warmPlans == nil {
				b.warmPlans = make(map[string][]wire.PrefetchCandidate)
			}
			b.warmPlans[p.Name()] = cands
		}
	}
	return nil
}

// eachBuild walks the schedule: for every commit in build order (up to
// MaxCommits) it calls before with the commit's start time, then each with
// every job's build of it, in start order. Replay and Builds share it, so
// an exported build is the build the replay scores.
func (r *runner) eachBuild(before func(startMs int64) error, each func(*Build) error) error {
	seq := 0
	order := r.sched.Order
	if r.cfg.MaxCommits > 0 && r.cfg.MaxCommits < len(order) {
		order = order[:r.cfg.MaxCommits]
	}
	for done, i := range order {
		if before != nil {
			if err := before(r.sched.StartMs[i]); err != nil {
				return err
			}
		}
		if r.sched.Built[i] {
			g, err := r.trace.Lock(r.trace.Commits[i].Lock)
			if err != nil {
				return fmt.Errorf("replay commit %s: %w", r.trace.Commits[i].Commit, err)
			}
			for j := range r.cfg.Jobs {
				b := newBuild(r, seq, i, j, g)
				seq++
				if err := each(b); err != nil {
					return err
				}
			}
		}
		if r.cfg.Progress != nil {
			r.cfg.Progress(done+1, len(order))
		}
	}
	return nil
}

// scoreBuild asks every policy for a plan, runs the build under it and
// records the scores. It returns the build's duration without prefetch,
// which sets when its uploads become visible, the same for every policy.
func (r *runner) scoreBuild(b *Build) (float64, error) {
	var wall float64
	// demandMs are the build's demand times without prefetching (the
	// none policy, always scored first).
	var demandMs []float64
	for k, p := range r.policies {
		tm := r.cfg.Transfer
		cands, warm := b.warmPlans[p.Name()]
		if warm {
			// The sidecar's warm fetched this plan from the lead on; kache's
			// own requests for it are local hits or join its downloads.
			tm.DispatchMs -= float64(r.cfg.WarmLeadMs)
		} else {
			var err error
			if cands, err = r.plan(p, b); err != nil {
				return 0, err
			}
		}
		if sf, ok := p.(sidecarFetched); ok {
			tm.sidecar = sf.viaSidecar()
		}
		if sp, ok := p.(splitter); ok && !warm && sp.lastSplit() != nil {
			cands, tm.DispatchMs = r.reveal(b, cands, sp.lastSplit(), demandMs)
		}
		var downloads []Download
		if in, ok := p.(instant); ok && in.instant() {
			downloads = localDownloads(tm.Admit(cands), r.bucket)
		} else {
			downloads = tm.Schedule(tm.Admit(cands), r.bucket)
		}
		sim := r.cfg.Build.Simulate(b, prefetchedUnits(b, downloads), tm)
		r.scores[k] = append(r.scores[k], scoreBuild(b, downloads, sim))
		if tl, ok := p.(timelineLearner); ok && tl.learnsTimelines() {
			if b.runs == nil {
				b.runs = make(map[string]*policyRun)
			}
			b.runs[p.Name()] = &policyRun{downloads: downloads, sim: sim, dispatchMs: tm.DispatchMs}
		}
		if p.Name() == PolicyNone {
			wall = sim.WallMs
			demandMs = sim.DemandMs
		}
	}
	return wall, nil
}

// plan returns what the daemon downloads for a policy's answer: a remote
// planner's use_fallback or empty execute plan runs the local fallback
// (kache-protocol.md 3.4), do_nothing prefetches nothing.
func (r *runner) plan(p Policy, b *Build) ([]wire.PrefetchCandidate, error) {
	plan, err := p.Plan(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", p.Name(), err)
	}
	if _, ok := p.(remotePlanner); ok {
		switch {
		case plan.Disposition == wire.DoNothing:
			return nil, nil
		case plan.Disposition != wire.Execute || len(plan.Candidates) == 0:
			if plan, err = r.fallback.Plan(b); err != nil {
				return nil, fmt.Errorf("policy %s: fallback: %w", p.Name(), err)
			}
		}
	}
	return plan.Candidates, nil
}

// complete makes a finished build visible: its uploads and shards land in
// the bucket and every policy learns its manifest.
func (r *runner) complete(c *completed) error {
	b := c.build
	b.Uploaded = make([]bool, len(b.Units))
	for i := range b.Units {
		u := &b.Units[i]
		if _, ok := r.bucket.Get(u.Crate, u.Key); !ok {
			b.Uploaded[i] = true
			r.bucket.Put(u.Crate, u.Key, u.SizeBytes)
		}
	}
	if b.Namespace != nil {
		r.bucket.writeShards(*b.Namespace, b.Lock.Shards, &c.manifest)
	}
	for _, p := range r.policies {
		if err := p.Learn(b, &c.manifest, c.end); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name(), err)
		}
	}
	// The build's units are no longer needed; keep the score only.
	b.Units, b.Uploaded, b.runs, b.warmPlans = nil, nil, nil, nil
	return nil
}

func (r *runner) result() *Result {
	res := &Result{
		Project: r.trace.Project, Seed: r.cfg.Seed, Commits: len(r.trace.Commits), Branches: r.sched.Branches,
		Model:    Model{Jobs: r.cfg.Jobs, Namespace: r.cfg.Namespace, Context: r.cfg.Context, WarmLeadMs: r.cfg.WarmLeadMs, ToolchainLagSec: r.cfg.ToolchainLagSec, Cost: r.cfg.Cost, Transfer: r.cfg.Transfer, Build: r.cfg.Build},
		Policies: map[string]PolicyResult{},
		Scores:   map[string][]BuildScore{},
		Splits:   r.splits,
	}
	for _, b := range r.sched.Built {
		if b {
			res.BuiltCommits++
		}
	}
	for k, p := range r.policies {
		s := r.scores[k]
		res.Builds = len(s)
		res.Order = append(res.Order, p.Name())
		res.Scores[p.Name()] = s
		res.Policies[p.Name()] = PolicyResult{
			FirstBuild: Summarize(s, func(b *BuildScore) bool { return b.First }),
			Overall:    Summarize(s, nil),
		}
	}
	return res
}
