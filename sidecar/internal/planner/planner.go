// Package planner is the sidecar's planning chain behind its plan route:
// fresh hint, else central, else a stale hint, else the sidecar's own bucket
// plan, else use_fallback, all under a hard deadline well inside kache's
// 750 ms budget. It never returns an error: whatever goes wrong, kache gets
// an answer that makes it no slower than having no planner.
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
)

// Source says which step of the chain answered.
type Source string

// The answer sources, also the label values of the API's metrics.
const (
	SourceHint      Source = "hint"
	SourceCentral   Source = "central"
	SourceStaleHint Source = "stale_hint"
	SourceBucket    Source = "bucket"
	SourceFallback  Source = "fallback"
)

// Sources lists every Source, for pre-registering metric labels.
var Sources = []Source{SourceHint, SourceCentral, SourceStaleHint, SourceBucket, SourceFallback}

// Result is one answer.
type Result struct {
	Plan   wire.PrefetchPlan
	Source Source
	// HintAge is the age of the served hint (hint and stale_hint only).
	HintAge time.Duration
	// Intent is the intent as planned: the caller's, with the runner
	// context and target added. The prefetch engine reads its runner.
	Intent *wire.BuildIntent
}

// Hints is the hint cache (hints.Store).
type Hints interface {
	// Get returns hints.ErrNotFound when nothing is stored.
	Get(k hints.Key) (hints.Hint, error)
	Put(k hints.Key, h hints.Hint) error
}

// Central asks the central planner (central.Client).
type Central interface {
	Plan(ctx context.Context, intent *wire.BuildIntent) (wire.PrefetchPlan, error)
}

// Bucket plans from the bucket (bucketplan.Source).
type Bucket interface {
	Plan(ctx context.Context, intent *wire.BuildIntent) (wire.PrefetchPlan, error)
}

// Config tunes the chain. Zero values take the defaults noted.
type Config struct {
	// Name is the planner name of the sidecar's own fallback answers.
	// Default "kache-sidecar".
	Name string
	// Deadline bounds every answer. Default 300 ms; kache gives up after
	// 750 ms.
	Deadline time.Duration
	// CentralTimeout bounds the call to central in the request path; it is
	// kept under Deadline so a slow central still leaves time for the next
	// steps. Default two thirds of Deadline.
	CentralTimeout time.Duration
	// BucketAfter is how long central has before the bucket plan starts
	// alongside it (at once when central fails sooner): a healthy central
	// answers first and the bucket's shard GETs are never made. Default a
	// third of Deadline.
	BucketAfter time.Duration
	// FreshFor is how long a hint is served without asking central.
	// Default 15 min.
	FreshFor time.Duration
	// RefreshAfter is the age after which a served fresh hint is refreshed
	// from central in the background. Default 1 min.
	RefreshAfter time.Duration
	// StaleFor is the oldest hint served when central cannot answer.
	// Default 7 days.
	StaleFor time.Duration
	// RefreshTimeout bounds a background refresh. Default 10 s.
	RefreshTimeout time.Duration
	// MaxRefreshes bounds concurrent background refreshes. Default 4.
	MaxRefreshes int
	// Runner and Target are added to intents that carry none, so central
	// and the hint key see the runner's context.
	Runner *wire.RunnerContext
	Target string
	// Toolchain is the rustc release of the runner's builds (e.g. "1.82.0"),
	// added to intents that lack it: central drops variants of other
	// toolchains.
	Toolchain string
	// ObservesReads says the build's reads reach ObserveRead (the S3
	// surface serves kache). Then an intent without a profile, namespace
	// or job context is planned once per profile of Profiles, and the
	// answer waits for a read that tells which (family.go).
	ObservesReads bool
	// Profiles are the profiles a plan is split by. Default "debug" and
	// "release", cargo's built-in profiles.
	Profiles []string
	// RevealWait is how long a split plan waits for a read that tells
	// the build's profile before answering with every profile's keys;
	// it is cut to leave 20 ms of Deadline. Default 150 ms.
	RevealWait time.Duration
	// RevealWindow is how old a read may be, when a split plan starts
	// waiting, to count: kache's first reads race its plan request.
	// Default 2 s.
	RevealWindow time.Duration
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "kache-sidecar"
	}
	if c.Deadline <= 0 {
		c.Deadline = 300 * time.Millisecond
	}
	if c.CentralTimeout <= 0 || c.CentralTimeout >= c.Deadline {
		c.CentralTimeout = c.Deadline * 2 / 3
	}
	if c.BucketAfter <= 0 || c.BucketAfter >= c.Deadline {
		c.BucketAfter = c.Deadline / 3
	}
	if c.FreshFor <= 0 {
		c.FreshFor = 15 * time.Minute
	}
	if c.RefreshAfter <= 0 {
		c.RefreshAfter = time.Minute
	}
	if c.StaleFor <= 0 {
		c.StaleFor = 7 * 24 * time.Hour
	}
	if c.RefreshTimeout <= 0 {
		c.RefreshTimeout = 10 * time.Second
	}
	if c.MaxRefreshes <= 0 {
		c.MaxRefreshes = 4
	}
	if len(c.Profiles) == 0 {
		c.Profiles = []string{"debug", "release"}
	}
	if c.RevealWait <= 0 {
		c.RevealWait = 150 * time.Millisecond
	}
	if c.RevealWindow <= 0 {
		c.RevealWindow = 2 * time.Second
	}
	return c
}

// Deps are the chain's steps; any of Hints, Central and Bucket may be nil
// (that step is skipped).
type Deps struct {
	Hints   Hints
	Central Central
	Bucket  Bucket
	// Jobs, when set, is the runner's job context: set by the plan
	// requests of `kache-sidecar warm` (an intent that describes its job)
	// and applied to kache's.
	Jobs   *runner.JobContext
	Logger *slog.Logger
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Planner runs the chain. It is safe for concurrent use.
type Planner struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	// base is cancelled by Stop; background work derives from it.
	base   context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	stopped    bool
	refreshing map[hints.Key]bool
	wg         sync.WaitGroup

	// decoded memoizes decoded hints: decoding a plan of hundreds of
	// candidates costs milliseconds, and every job of a pipeline asks for
	// the same one. An entry is valid while the stored hint has the same
	// StoredAt.
	decodedMu sync.Mutex
	decoded   map[hints.Key]decodedHint

	// reads are the build's recent reads (ObserveRead), which tell split
	// plans the build's profile.
	reads reads
}

type decodedHint struct {
	storedAt time.Time
	plan     wire.PrefetchPlan
}

// maxDecoded bounds the memo of decoded hints.
const maxDecoded = 64

// New builds the chain. Background refreshes start on demand once New
// returns; Stop ends them.
func New(cfg Config, deps Deps) (*Planner, error) {
	cfg = cfg.withDefaults()
	if cfg.RefreshAfter >= cfg.FreshFor {
		return nil, fmt.Errorf("create planner: refresh age %v must be under the fresh age %v", cfg.RefreshAfter, cfg.FreshFor)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	base, cancel := context.WithCancel(context.Background())
	return &Planner{
		cfg:        cfg,
		deps:       deps,
		log:        deps.Logger.With("component", "planner"),
		base:       base,
		cancel:     cancel,
		refreshing: make(map[hints.Key]bool),
		decoded:    make(map[hints.Key]decodedHint),
		reads:      reads{signal: make(chan struct{})},
	}, nil
}

// Name is the planner name of the sidecar's own answers.
func (p *Planner) Name() string { return p.cfg.Name }

// Start exists for the lifecycle; the planner needs nothing started.
func (p *Planner) Start(context.Context) error { return nil }

// Stop cancels background refreshes and in-flight request work and waits
// for them within ctx. Plan keeps answering afterwards, without background
// work.
func (p *Planner) Stop(ctx context.Context) error {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.cancel()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop planner: %w", ctx.Err())
	}
}

// spawn runs fn in a goroutine the planner owns, unless it is stopped.
func (p *Planner) spawn(fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
	return true
}

type answer struct {
	plan wire.PrefetchPlan
	err  error
}

// Plan answers intent within the deadline. The intent must not be modified
// afterwards: a background refresh may still read it.
func (p *Planner) Plan(ctx context.Context, intent *wire.BuildIntent) Result {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Deadline)
	defer cancel()
	// Work for this request ends with the request or with Stop.
	stop := context.AfterFunc(p.base, cancel)
	defer stop()

	in, job := p.enrich(intent)
	// A job's hints are keyed without crate names, so kache's request hits
	// warm's plan; served hints are then put in the request's demand
	// order.
	keyOf, adapt := hints.KeyOf, false
	if job {
		keyOf, adapt = hints.JobKeyOf, true
	}
	var res Result
	if p.splits(in) {
		res = p.planSplit(ctx, in, keyOf, adapt)
	} else {
		res = p.plan(ctx, in, keyOf(in), adapt)
	}
	res.Intent = in
	return res
}

// plan runs the chain for in under the hint key. adapt says the hint may
// have been planned for other crate names (a job's hint, keyed without
// them): a hint served is put in in's demand order.
func (p *Planner) plan(ctx context.Context, in *wire.BuildIntent, key hints.Key, adapt bool) Result {
	hint, hintPlan, hintOK := p.loadHint(key)
	if hintOK && adapt {
		hintPlan = inDemandOrder(hintPlan, in)
	}
	age := max(p.deps.Now().Sub(hint.StoredAt), 0)
	if hintOK && age < p.cfg.FreshFor {
		if age >= p.cfg.RefreshAfter {
			p.refresh(key, in)
		}
		return Result{Plan: hintPlan, Source: SourceHint, HintAge: age}
	}
	stale := hintOK && age < p.cfg.StaleFor

	var centralCh, bucketCh chan answer
	if p.deps.Central != nil {
		centralCh = make(chan answer, 1)
		if !p.spawn(func() {
			cctx, ccancel := context.WithTimeout(ctx, p.cfg.CentralTimeout)
			defer ccancel()
			plan, err := p.deps.Central.Plan(cctx, in)
			centralCh <- answer{plan, err}
		}) {
			centralCh = nil
		}
	}
	// The bucket plan costs a GET per shard, so it only starts when no
	// stale hint could answer instead, and only once central has failed or
	// had BucketAfter to answer: then it runs alongside central so that a
	// slow central does not leave it too little time.
	startBucket := func() {
		if bucketCh != nil || stale || p.deps.Bucket == nil {
			return
		}
		ch := make(chan answer, 1)
		if p.spawn(func() {
			plan, err := p.deps.Bucket.Plan(ctx, in)
			ch <- answer{plan, err}
		}) {
			bucketCh = ch
		}
	}
	if centralCh != nil {
		head := time.NewTimer(p.cfg.BucketAfter)
		defer head.Stop()
	wait:
		for {
			select {
			case a := <-centralCh:
				switch {
				case a.err != nil:
					p.log.Warn("central did not answer", "error", a.err)
				case a.plan.Disposition == wire.Execute && len(a.plan.Candidates) > 0:
					p.storeHint(key, a.plan)
					return Result{Plan: a.plan, Source: SourceCentral}
				case a.plan.Disposition == wire.DoNothing:
					// Central deliberately asks for no prefetch; respect it.
					return Result{Plan: a.plan, Source: SourceCentral}
				default:
					p.log.Debug("central has no plan", "disposition", a.plan.Disposition, "candidates", len(a.plan.Candidates))
				}
				break wait
			case <-head.C:
				startBucket()
			case <-ctx.Done():
				break wait
			}
		}
	}
	startBucket()
	if stale {
		return Result{Plan: hintPlan, Source: SourceStaleHint, HintAge: age}
	}
	if bucketCh != nil {
		select {
		case a := <-bucketCh:
			switch {
			case a.err != nil:
				p.log.Warn("bucket plan failed", "error", a.err)
			case a.plan.Disposition == wire.Execute && len(a.plan.Candidates) > 0:
				return Result{Plan: a.plan, Source: SourceBucket}
			}
		case <-ctx.Done():
			p.log.Debug("bucket plan missed the deadline", "deadline", p.cfg.Deadline)
		}
	}
	return Result{Plan: p.fallback(), Source: SourceFallback}
}

func (p *Planner) fallback() wire.PrefetchPlan {
	return wire.PrefetchPlan{
		PlanID:      "plan-" + strconv.FormatInt(p.deps.Now().UnixMilli(), 10),
		Planner:     p.cfg.Name,
		Disposition: wire.UseFallback,
		Candidates:  []wire.PrefetchCandidate{},
	}
}

// enrich returns a shallow copy of intent with the job's context and the
// runner's configuration added where the intent has none; the caller's
// intent is not modified. job says the intent carries a job's context:
// warm's own (which starts the job) or the job's applied to kache's.
// Without a job, kache's intent teaches the job context its namespace and
// lock deps, when it has them.
func (p *Planner) enrich(intent *wire.BuildIntent) (_ *wire.BuildIntent, job bool) {
	if jc := p.deps.Jobs; jc != nil {
		if j, ok := runner.JobOf(intent); ok {
			jc.Set(j)
			job = true
		} else if applied, ok := jc.Apply(intent); ok {
			intent, job = applied, true
		} else {
			jc.Learn(intent)
		}
	}
	in := *intent
	if in.Runner == nil && p.cfg.Runner != nil {
		r := *p.cfg.Runner
		in.Runner = &r
	}
	if in.Target == "" {
		in.Target = p.cfg.Target
	}
	if in.Toolchain == "" {
		in.Toolchain = p.cfg.Toolchain
	}
	return &in, job
}

// loadHint reads and decodes the hint for key. A hint that does not decode
// as a kache client would decode it is treated as absent.
func (p *Planner) loadHint(key hints.Key) (hints.Hint, wire.PrefetchPlan, bool) {
	if p.deps.Hints == nil {
		return hints.Hint{}, wire.PrefetchPlan{}, false
	}
	h, err := p.deps.Hints.Get(key)
	if err != nil {
		if !errors.Is(err, hints.ErrNotFound) {
			p.log.Warn("read hint", "key", key, "error", err)
		}
		return hints.Hint{}, wire.PrefetchPlan{}, false
	}
	if plan, ok := p.memoized(key, h.StoredAt); ok {
		return h, plan, true
	}
	plan, err := wire.DecodePlan(h.Plan)
	if err != nil || plan.Disposition != wire.Execute || len(plan.Candidates) == 0 {
		p.log.Warn("ignore unusable hint", "key", key, "error", err)
		return hints.Hint{}, wire.PrefetchPlan{}, false
	}
	p.memoize(key, h.StoredAt, plan)
	return h, plan, true
}

// memoized returns the decoded plan of the hint stored at storedAt, with its
// own candidate slice so that callers never share one.
func (p *Planner) memoized(key hints.Key, storedAt time.Time) (wire.PrefetchPlan, bool) {
	p.decodedMu.Lock()
	d, ok := p.decoded[key]
	p.decodedMu.Unlock()
	if !ok || !d.storedAt.Equal(storedAt) {
		return wire.PrefetchPlan{}, false
	}
	plan := d.plan
	plan.Candidates = slices.Clone(d.plan.Candidates)
	return plan, true
}

func (p *Planner) memoize(key hints.Key, storedAt time.Time, plan wire.PrefetchPlan) {
	plan.Candidates = slices.Clone(plan.Candidates)
	p.decodedMu.Lock()
	defer p.decodedMu.Unlock()
	if _, ok := p.decoded[key]; !ok && len(p.decoded) >= maxDecoded {
		for k := range p.decoded { // drop an arbitrary entry
			delete(p.decoded, k)
			break
		}
	}
	p.decoded[key] = decodedHint{storedAt: storedAt, plan: plan}
}

// storeHint keeps an execute plan from central, off the answer path.
func (p *Planner) storeHint(key hints.Key, plan wire.PrefetchPlan) {
	if p.deps.Hints == nil {
		return
	}
	at := p.deps.Now()
	p.spawn(func() {
		b, err := plan.AppendJSON(nil)
		if err == nil {
			err = p.deps.Hints.Put(key, hints.Hint{Plan: b, StoredAt: at, Source: string(SourceCentral)})
		}
		if err != nil {
			p.log.Warn("store hint", "key", key, "error", err)
		}
	})
}

// refresh asks central for a newer plan in the background: one refresh per
// key at a time and at most MaxRefreshes in total; a refresh that cannot
// start is simply skipped (the next request will try again).
func (p *Planner) refresh(key hints.Key, in *wire.BuildIntent) {
	if p.deps.Central == nil {
		return
	}
	p.mu.Lock()
	if p.refreshing[key] || len(p.refreshing) >= p.cfg.MaxRefreshes {
		p.mu.Unlock()
		return
	}
	p.refreshing[key] = true
	p.mu.Unlock()
	started := p.spawn(func() {
		defer func() {
			p.mu.Lock()
			delete(p.refreshing, key)
			p.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(p.base, p.cfg.RefreshTimeout)
		defer cancel()
		plan, err := p.deps.Central.Plan(ctx, in)
		switch {
		case err != nil:
			p.log.Debug("refresh hint", "key", key, "error", err)
		case plan.Disposition == wire.Execute && len(plan.Candidates) > 0:
			p.storeHint(key, plan)
		}
	})
	if !started {
		p.mu.Lock()
		delete(p.refreshing, key)
		p.mu.Unlock()
	}
}
