// Package planner is the sidecar's planning chain behind its plan route:
// fresh hint, else central, else a stale hint, else the sidecar's own bucket
// plan, else use_fallback, all under a hard deadline well inside kache's
// 750 ms budget. It never returns an error: whatever goes wrong, kache gets
// an answer that makes it no slower than having no planner.
package planner

import (
	"context"
	"encoding/binary"
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
	// Tail, when set, is Plan's JSON after its disposition
	// (wire.PrefetchPlan.AppendTail), encoded once for every answer served
	// from the same versions of the same hints.
	Tail []byte
	// Fingerprint, when set, names the answer's candidates: answers with
	// the same Fingerprint have the same candidates in the same order
	// (they were served from the same versions of the same hints). Empty
	// for answers planned afresh.
	Fingerprint string

	// hint is the decoded hint served unchanged, for planSplit.
	hint *decodedHint
}

// Answers served from hints share the decoded plan: Result.Plan.Candidates,
// Result.Tail and everything they point at are read-only.

// Hints is the hint cache (hints.Store).
type Hints interface {
	// Get returns hints.ErrNotFound when nothing is stored.
	Get(k hints.Key) (hints.Hint, error)
	// Version is the version of k's stored hint (the Hint.Version Get
	// returns while it is stored), false when none is; it is checked on
	// every use of a decoded hint instead of reading the hint again. An
	// implementation without versions returns false; Get then decides.
	Version(k hints.Key) (uint64, bool)
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
	// version (Hints.Version), or, from a cache without versions, the same
	// StoredAt. splits memoizes the merged answers of split plans served
	// from decoded hints, by the hints' keys and versions.
	decodedMu sync.Mutex
	decoded   map[hints.Key]*decodedHint
	splits    map[string]*splitAnswer

	// reads are the build's recent reads (ObserveRead), which tell split
	// plans the build's profile.
	reads reads
}

// decodedHint is one version of a stored hint, decoded once and shared,
// read-only, by every answer it serves.
type decodedHint struct {
	key      hints.Key
	version  uint64 // 0: the cache has no versions
	storedAt time.Time
	plan     wire.PrefetchPlan
	// fingerprint is Result.Fingerprint of answers served from it.
	fingerprint string
	tail        encodedTail
}

// current says whether h, just read, is the hint d was decoded from.
func (d *decodedHint) current(h hints.Hint) bool {
	if d.version != 0 || h.Version != 0 {
		return d.version == h.Version
	}
	return d.storedAt.Equal(h.StoredAt)
}

// encodedTail is a plan's JSON tail, encoded on first use.
type encodedTail struct {
	once sync.Once
	b    []byte
}

// get encodes plan's tail once; nil if it does not encode (the answer is
// then encoded in full).
func (e *encodedTail) get(plan *wire.PrefetchPlan) []byte {
	e.once.Do(func() {
		if b, err := plan.AppendTail(nil); err == nil {
			e.b = b
		}
	})
	return e.b
}

// maxDecoded bounds the memos of decoded hints and of split answers.
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
		decoded:    make(map[hints.Key]*decodedHint),
		splits:     make(map[string]*splitAnswer),
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
	if p.splitsIntent(in) {
		res = p.planSplit(ctx, in, keyOf, adapt)
	} else {
		res = p.plan(ctx, in, keyOf(in), adapt)
		if d := res.hint; d != nil {
			res.Tail, res.Fingerprint = d.tail.get(&d.plan), d.fingerprint
		}
	}
	res.Intent, res.hint = in, nil
	return res
}

// plan runs the chain for in under the hint key. adapt says the hint may
// have been planned for other crate names (a job's hint, keyed without
// them): a hint served is put in in's demand order.
func (p *Planner) plan(ctx context.Context, in *wire.BuildIntent, key hints.Key, adapt bool) Result {
	var (
		hintPlan wire.PrefetchPlan
		served   *decodedHint // the hint served as decoded
		age      time.Duration
	)
	d, hintOK := p.loadHint(key)
	if hintOK {
		hintPlan, served = d.plan, d
		if adapt {
			// The decoded candidates are shared: reorder a copy.
			hintPlan.Candidates = slices.Clone(hintPlan.Candidates)
			hintPlan, served = inDemandOrder(hintPlan, in), nil
		}
		age = max(p.deps.Now().Sub(d.storedAt), 0)
	}
	if hintOK && age < p.cfg.FreshFor {
		if age >= p.cfg.RefreshAfter {
			p.refresh(key, in)
		}
		return Result{Plan: hintPlan, Source: SourceHint, HintAge: age, hint: served}
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
		return Result{Plan: hintPlan, Source: SourceStaleHint, HintAge: age, hint: served}
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

// loadHint returns the decoded hint for key: the one decoded before while
// it is still the stored version, else the stored hint, read and decoded.
// A hint that does not decode as a kache client would decode it is treated
// as absent.
func (p *Planner) loadHint(key hints.Key) (*decodedHint, bool) {
	if p.deps.Hints == nil {
		return nil, false
	}
	p.decodedMu.Lock()
	d := p.decoded[key]
	p.decodedMu.Unlock()
	if d != nil && d.version != 0 {
		if v, ok := p.deps.Hints.Version(key); ok && v == d.version {
			return d, true
		}
	}
	h, err := p.deps.Hints.Get(key)
	if err != nil {
		if !errors.Is(err, hints.ErrNotFound) {
			p.log.Warn("read hint", "key", key, "error", err)
		}
		return nil, false
	}
	if d != nil && d.current(h) {
		return d, true
	}
	plan, err := wire.DecodePlan(h.Plan)
	if err != nil || plan.Disposition != wire.Execute || len(plan.Candidates) == 0 {
		p.log.Warn("ignore unusable hint", "key", key, "error", err)
		return nil, false
	}
	d = &decodedHint{key: key, version: h.Version, storedAt: h.StoredAt, plan: plan}
	if d.version != 0 {
		d.fingerprint = string(appendVersion(nil, d))
	}
	p.decodedMu.Lock()
	defer p.decodedMu.Unlock()
	dropOneIfFull(p.decoded, key)
	p.decoded[key] = d
	return d, true
}

// appendVersion appends what identifies d's version, its key and version
// (which a cache without versions does not have: see decodedHint.version).
func appendVersion(b []byte, d *decodedHint) []byte {
	b = append(b, d.key[:]...)
	return binary.BigEndian.AppendUint64(b, d.version)
}

// dropOneIfFull makes room in a memo for key when it is full.
func dropOneIfFull[K comparable, V any](m map[K]V, key K) {
	if _, ok := m[key]; ok || len(m) < maxDecoded {
		return
	}
	for k := range m { // drop an arbitrary entry
		delete(m, k)
		return
	}
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
