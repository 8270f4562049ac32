// Package prefetch fetches planned packs from the bucket into the local
// store before the build asks for them.
//
// One Engine owns a pool of speculative workers and a few lanes reserved for
// demand. A plan becomes a Session with its own key, byte and time budgets;
// its candidates are fetched in plan order. A demand request (the S3 surface
// asking for an object the build needs now) joins a download already in
// flight or starts one at once on a demand lane, so it never waits behind
// speculative work and no object is ever downloaded twice at the same time.
// A download runs on its own context, ended by Stop or when nobody waits for
// it any more, so one requester giving up does not fail the others.
//
// A big object is fetched over several connections at once (ranged GETs of
// one version into one temp file, split.go) when speculative lanes are idle.
//
// The byte budget is a hard cap on bytes received: a download reserves its
// object's full size before reading the body, and is skipped when the
// reservation does not fit. Demand has no budget: a download a demand waits
// for is charged to no session.
package prefetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

var (
	// ErrNotFound means the bucket does not have the object.
	ErrNotFound = errors.New("object not in bucket")
	// ErrBudgetExceeded means a session's budget had no room for the object.
	ErrBudgetExceeded = errors.New("prefetch budget exceeded")
	// ErrStopped means the engine is stopping.
	ErrStopped = errors.New("prefetch engine stopped")
)

// Source is the bucket as the engine reads it.
type Source interface {
	// Open starts a GET of key and returns its body and metadata; a missing
	// object is an error wrapping s3source.ErrNotFound.
	Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error)
}

// Config configures an Engine.
type Config struct {
	// Prefix is kache's key prefix (already normalised).
	Prefix string
	// Concurrency is the number of speculative lanes: bodies streaming at
	// once, the extra connections of split downloads included (see
	// SplitParts); kache's default is 12 of its 16 S3 connections.
	Concurrency int
	// Lookahead is how many GETs beyond Concurrency may wait for their
	// response or for a lane: the next candidates' requests are sent before
	// a lane frees, so each request's time to first byte (tens of ms from a
	// bucket) overlaps other bodies instead of idling a lane. Bodies still
	// stream on at most Concurrency lanes, given to waiting bodies in plan
	// order; a body a build waits for never waits. 0: none.
	Lookahead int
	// DemandConcurrency is the number of extra lanes for demand requests,
	// so the build is never queued behind prefetching.
	DemandConcurrency int
	// FetchTimeout bounds one object's download.
	FetchTimeout time.Duration
	// Attempts is how often a download broken mid-body is retried from
	// scratch (minio-go retries only failures before the body).
	Attempts int
	// SkipEntryManifests fetches packs only. By default each pack's entry
	// manifest is fetched first: kache HEADs it, and its pack_bytes lets the
	// pack be checked.
	SkipEntryManifests bool
	// SessionIdle closes a session this long after its last activity
	// (prefetch finished and no demand); kache's build session is 300 s.
	SessionIdle time.Duration
	// DemandObserved says that every object the build reads comes through
	// Demand (the sidecar's S3 surface). Without it, sessions report what
	// they fetched but make no claim about use.
	DemandObserved bool
	// Defaults for a session's budgets when a Plan does not set them.
	DefaultBudget Budget
	// SplitBytes and SplitParts: an object larger than SplitBytes is
	// fetched over up to SplitParts connections at once when the source can
	// read ranges (RangeSource): the first GET's body fills the first part
	// and ranged GETs pinned to its ETag the others. The extra connections
	// are idle speculative lanes (see Concurrency), taken without waiting;
	// SplitParts 1 turns splitting off.
	SplitBytes int64
	SplitParts int
	// Missing, when set, is told of planned keys whose pack or entry
	// manifest the bucket answered 404 for, in batches sent from a
	// goroutine of the engine.
	Missing MissingReporter
	// Clock is the wall clock of sessions: their start, activity and
	// deadlines, and the times of the outcomes they report. Nil means
	// time.Now.
	Clock func() time.Time
}

// Budget limits one session. Zero values mean no limit.
type Budget struct {
	MaxKeys  int
	MaxBytes int64
	Deadline time.Duration
}

// DefaultConfig has kache's defaults (kache-protocol.md 3.5).
func DefaultConfig() Config {
	return Config{
		Concurrency:       12,
		Lookahead:         12,
		DemandConcurrency: 4,
		FetchTimeout:      300 * time.Second,
		Attempts:          3,
		SessionIdle:       300 * time.Second,
		SplitBytes:        4 << 20,
		SplitParts:        4,
		DefaultBudget:     Budget{MaxKeys: 2000, MaxBytes: 2 << 30, Deadline: 300 * time.Second},
	}
}

// Reporter receives a session's outcome when it closes.
type Reporter interface {
	Report(ctx context.Context, r Report) error
}

// Engine runs prefetch sessions and demand fetches.
type Engine struct {
	cfg   Config
	src   Source
	st    *store.Store
	m     *Metrics
	log   *slog.Logger
	rep   Reporter
	clock func() time.Time
	// missing batches planned keys found missing; nil without
	// Config.Missing.
	missing *missingQueue
	// ranges reads byte ranges for split downloads; nil when the source
	// cannot.
	ranges RangeSource

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	demand chan struct{} // semaphore of demand lanes

	mu       sync.Mutex
	wake     *sync.Cond
	queue    []*Session // sessions with work left, oldest first
	sessions map[string]*Session
	// byPrint indexes open sessions by their plan's Fingerprint, so an
	// identical plan joins one (Submit).
	byPrint map[string]*Session
	// aliases maps the ids of plans that joined a session to the
	// session's id, for Session; the oldest of maxAliases go first.
	aliases   map[string]string
	aliasRing [maxAliases]string
	aliasNext int
	flights   map[store.Ref]*flight
	stopped   bool
	nextID    uint64
	// dispatched numbers candidates in the order workers take them: a
	// body's priority for a lane (lanes.go).
	dispatched uint64
	// idleLanes counts the Concurrency speculative lanes not streaming a
	// body; laneWait holds the dispatch numbers of the bodies waiting for
	// one (lanes.go).
	idleLanes int
	laneWait  []uint64
}

// flight is one download in progress; everyone wanting the object waits on
// it. It runs in its own goroutine on a context derived from the engine's,
// and is cancelled when its last waiter leaves.
type flight struct {
	ref    store.Ref
	done   chan struct{}
	cancel context.CancelFunc
	demand bool         // started by a demand: runs on a demand lane
	seq    uint64       // dispatch number of the candidate that started it
	expect func() int64 // the size the entry manifest promises, or nil

	// Guarded by the engine's mutex.
	waiters int
	demands int      // waiters that are demands; while any, no budget applies
	sess    *Session // whose byte budget pays for the download, or nil

	// Set before done is closed.
	n   int64
	err error
}

// New creates an Engine; Start runs its workers.
func New(cfg Config, src Source, st *store.Store, m *Metrics, rep Reporter, log *slog.Logger) *Engine {
	def := DefaultConfig()
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = def.Concurrency
	}
	cfg.Lookahead = max(cfg.Lookahead, 0)
	if cfg.DemandConcurrency <= 0 {
		cfg.DemandConcurrency = def.DemandConcurrency
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = def.FetchTimeout
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = def.Attempts
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = def.SessionIdle
	}
	if cfg.SplitBytes <= 0 {
		cfg.SplitBytes = def.SplitBytes
	}
	if cfg.SplitParts <= 0 {
		cfg.SplitParts = def.SplitParts
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	e := &Engine{
		cfg: cfg, src: src, st: st, m: m, log: log, rep: rep, clock: clock,
		demand:    make(chan struct{}, cfg.DemandConcurrency),
		sessions:  map[string]*Session{},
		byPrint:   map[string]*Session{},
		aliases:   map[string]string{},
		flights:   map[store.Ref]*flight{},
		idleLanes: cfg.Concurrency,
	}
	e.ranges, _ = src.(RangeSource)
	e.wake = sync.NewCond(&e.mu)
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if cfg.Missing != nil {
		e.missing = newMissingQueue(cfg.Missing, m, log)
	}
	return e
}

// Start launches the workers and the session reaper.
func (e *Engine) Start(context.Context) error {
	for range e.cfg.Concurrency + e.cfg.Lookahead {
		e.wg.Go(e.worker)
	}
	e.wg.Go(e.reaper)
	if e.missing != nil {
		e.wg.Go(func() { e.missing.run(e.ctx) })
	}
	return nil
}

// Stop cancels every download the engine started (demand included), waits
// for them and the workers, and reports the sessions still open. If ctx ends
// first the sessions are still closed, reported as far as ctx allows, and
// then ctx's error is returned: fx runs no later stop hook for us.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	e.stopped = true
	open := make([]*Session, 0, len(e.sessions))
	for _, s := range e.sessions {
		open = append(open, s)
	}
	e.wake.Broadcast()
	e.mu.Unlock()
	e.cancel()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("stop prefetch engine: %w", ctx.Err())
	}
	for _, s := range open {
		e.closeSession(ctx, s, "shutdown")
	}
	return err
}

// worker takes the next candidate of the oldest session with work left and
// sends its GETs at once; the pack's body waits for a lane (lanes.go).
func (e *Engine) worker() {
	for {
		s, c, seq, ok := e.next()
		if !ok {
			return
		}
		e.runCandidate(s, c, seq)
	}
}

// next blocks until there is a candidate to fetch, which it takes with its
// dispatch number, or the engine stops.
func (e *Engine) next() (*Session, *candidate, uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if e.stopped {
			return nil, nil, 0, false
		}
		for len(e.queue) > 0 {
			s := e.queue[0]
			if c := s.nextLocked(e.clock()); c != nil {
				e.dispatched++
				return s, c, e.dispatched, true
			}
			e.queue = e.queue[1:]
		}
		e.wake.Wait()
	}
}

// reaper closes idle sessions so their outcome is reported.
func (e *Engine) reaper() {
	tick := time.NewTicker(min(e.cfg.SessionIdle/4, 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-tick.C:
		}
		now := e.clock()
		var idle []*Session
		e.mu.Lock()
		for _, s := range e.sessions {
			if s.idleLocked(now, e.cfg.SessionIdle) {
				idle = append(idle, s)
			}
		}
		e.mu.Unlock()
		for _, s := range idle {
			e.closeSession(e.ctx, s, "idle")
		}
	}
}

// Demand makes sure r is in the local store: at once if it is there, by
// joining a download in flight, or by fetching it now on a demand lane.
func (e *Engine) Demand(ctx context.Context, r store.Ref) error {
	if !r.Valid() {
		return fmt.Errorf("%w: %s", store.ErrInvalidRef, r)
	}
	e.mu.Lock()
	stopped := e.stopped
	e.mu.Unlock()
	if stopped {
		// The store may be closed already.
		return ErrStopped
	}
	present := e.st.Has(r)
	now := e.clock()
	e.mu.Lock()
	for _, s := range e.sessions {
		s.demandLocked(r, now, present)
	}
	e.mu.Unlock()
	if present {
		e.m.demand.WithLabelValues("local").Inc()
		return nil
	}
	_, joined, err := e.fetch(ctx, r, nil, nil, 0)
	switch {
	case joined:
		e.m.demand.WithLabelValues("joined").Inc()
	case err == nil:
		e.m.demand.WithLabelValues("fetched").Inc()
	case errors.Is(err, ErrNotFound):
		e.m.demand.WithLabelValues("not_found").Inc()
	default:
		e.m.demand.WithLabelValues("failed").Inc()
	}
	return err
}

// fetch gets r into the store unless it is there, with one download per
// object at a time: a later caller joins the download in flight (joined).
// ctx bounds only this caller's wait, not the download. n is what the
// download received on s's byte budget; a session whose download a demand
// took over (so no budget paid for it) sees it as joined. seq is the
// dispatch number of the planned candidate asking, 0 for a demand.
func (e *Engine) fetch(ctx context.Context, r store.Ref, s *Session, expect func() int64, seq uint64) (n int64, joined bool, err error) {
	if e.st.Has(r) {
		return 0, false, nil
	}
	demand := seq == 0
	f, joined, err := e.join(ctx, r, s, expect, seq)
	if err != nil {
		return 0, false, err
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		e.leave(f, demand)
		return 0, joined, ctx.Err()
	}
	if joined || f.sess != s {
		return 0, true, f.err
	}
	return f.n, false, f.err
}

// join makes the caller a waiter of r's download, starting one if none is
// in flight.
func (e *Engine) join(ctx context.Context, r store.Ref, s *Session, expect func() int64, seq uint64) (*flight, bool, error) {
	demand := seq == 0
	e.mu.Lock()
	for {
		if e.stopped {
			e.mu.Unlock()
			return nil, false, ErrStopped
		}
		f := e.flights[r]
		if f == nil {
			break
		}
		if f.waiters > 0 {
			f.waiters++
			if demand {
				f.demands++
				// Its body may be waiting for a lane: a build waits now.
				e.wake.Broadcast()
			}
			e.mu.Unlock()
			return f, true, nil
		}
		// Abandoned and being cancelled: let it end first, so that the
		// object is never downloaded twice at once.
		e.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		e.mu.Lock()
	}
	fctx, cancel := context.WithCancel(e.ctx)
	f := &flight{ref: r, done: make(chan struct{}), cancel: cancel, demand: demand, seq: seq, expect: expect, waiters: 1, sess: s}
	if demand {
		f.demands, f.sess = 1, nil
	}
	e.flights[r] = f
	// Added under the mutex while not stopped, so Stop waits for it.
	e.wg.Go(func() { e.fly(fctx, f) })
	e.mu.Unlock()
	return f, false, nil
}

// leave drops a waiter that gave up on f; the last one out cancels it.
func (e *Engine) leave(f *flight, demand bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f.waiters--
	if demand {
		f.demands--
	}
	if f.waiters == 0 {
		f.cancel()
	}
}

// fly runs f's download and hands the result to its waiters.
func (e *Engine) fly(ctx context.Context, f *flight) {
	defer f.cancel()
	n, err := e.land(ctx, f)
	if err != nil && e.ctx.Err() != nil {
		err = fmt.Errorf("%w: %s: %w", ErrStopped, f.ref, err)
	}
	e.mu.Lock()
	if e.flights[f.ref] == f {
		delete(e.flights, f.ref)
	}
	f.n, f.err = n, err
	e.mu.Unlock()
	close(f.done)
}

func (e *Engine) land(ctx context.Context, f *flight) (int64, error) {
	if f.demand {
		select {
		case e.demand <- struct{}{}:
			defer func() { <-e.demand }()
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// The object may have landed since the caller looked.
	if e.st.Has(f.ref) {
		return 0, nil
	}
	return e.download(ctx, f)
}

// charge reserves size bytes of the byte budget of f's session for one
// attempt and returns that session, or nil when no budget applies. While a
// demand waits on f there is none: the build needs the object whatever the
// plan's budget says.
func (e *Engine) charge(f *flight, size int64) (*Session, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.demands > 0 {
		f.sess = nil
	}
	if f.sess == nil || f.sess.reserve(f.ref, size) {
		return f.sess, nil
	}
	// Decided under the mutex: a demand arriving from now on starts its own
	// download instead of sharing this refusal.
	if e.flights[f.ref] == f {
		delete(e.flights, f.ref)
	}
	return nil, fmt.Errorf("%w: %s is %d bytes", ErrBudgetExceeded, f.ref, size)
}

// runCandidate fetches one planned pack, after its entry manifest, for s.
func (e *Engine) runCandidate(s *Session, c *candidate, seq uint64) {
	start := e.clock()
	res, n, err := e.fetchPlanned(s, c, seq)
	e.m.keys.WithLabelValues(string(res)).Inc()
	if res == resultNotFound {
		e.noteMissing(c)
	}
	if res == resultFailed {
		e.log.Warn("prefetch", "crate", c.crate, "cache_key", c.key, "session", s.id, "error", err)
	}
	e.mu.Lock()
	if errors.Is(err, store.ErrNoSpace) && s.stopWhy == "" {
		// Disk full: stop filling it; serving continues from what is there.
		s.stopWhy = "disk_full"
	}
	s.finishLocked(c, res, n, start, e.clock())
	e.wake.Broadcast()
	e.mu.Unlock()
}

func (e *Engine) fetchPlanned(s *Session, c *candidate, seq uint64) (result, int64, error) {
	ref := store.Ref{Kind: store.Pack, Crate: c.crate, CacheKey: c.key}
	mref := store.Ref{Kind: store.EntryManifest, Crate: c.crate, CacheKey: c.key}
	if e.st.Has(ref) {
		// The pack may have come without its entry manifest (a demand, or
		// an earlier manifest GET that failed): complete the pair.
		var n int64
		if !e.cfg.SkipEntryManifests && !e.st.Has(mref) {
			var err error
			if n, _, err = e.fetch(s.ctx, mref, s, nil, seq); err != nil {
				e.log.Debug("entry manifest", "object", mref.String(), "error", err)
			}
		}
		return resultPresent, n, nil
	}
	// The entry manifest is fetched alongside the pack, not before it, so a
	// key costs one round trip; the pack waits for it only to check its
	// size before becoming visible.
	var expect func() int64
	var manifestBytes int64
	if !e.cfg.SkipEntryManifests {
		done := make(chan int64, 1)
		go func() {
			n, _, err := e.fetch(s.ctx, mref, s, nil, seq)
			manifestBytes = n
			want := int64(-1)
			switch {
			case err == nil:
				want = e.packBytes(mref)
			case errors.Is(err, ErrNotFound):
				// kache HEADs the entry manifest: without it the
				// pack is never used.
				e.noteMissing(c)
			default:
				// Without the manifest the pack is kept unchecked.
				e.log.Debug("entry manifest", "object", mref.String(), "error", err)
			}
			done <- want
		}()
		expect = sync.OnceValue(func() int64 { return <-done })
		// The manifest fetch ends before this candidate does, whatever
		// the pack's fate.
		defer expect()
	}
	n, joined, err := e.fetch(s.ctx, ref, s, expect, seq)
	if expect != nil {
		expect()
	}
	total := n + manifestBytes
	if joined && err == nil {
		return resultJoined, total, nil
	}
	return resultOf(err), total, err
}

// noteMissing queues a planned key whose pack or entry manifest the bucket
// does not have, for central; it never blocks.
func (e *Engine) noteMissing(c *candidate) {
	if e.missing != nil {
		e.missing.add(c.crate, c.key)
	}
}

// packBytes reads pack_bytes from a stored entry manifest, or -1.
func (e *Engine) packBytes(r store.Ref) int64 {
	f, _, err := e.st.Open(r)
	if err != nil {
		return -1
	}
	defer f.Close()
	var m wire.EntryManifest
	if err := json.NewDecoder(io.LimitReader(f, maxEntryManifest)).Decode(&m); err != nil || m.CacheKey != r.CacheKey {
		return -1
	}
	return int64(m.PackBytes)
}

// maxEntryManifest bounds an entry manifest read (they are ~300 bytes).
const maxEntryManifest = 1 << 20

// download fetches f's object into the store, retrying a transfer broken
// mid-body. Every attempt reserves the object's size against the byte
// budget that applies (see charge) first. It returns the bytes received.
func (e *Engine) download(ctx context.Context, f *flight) (int64, error) {
	r := f.ref
	var total int64
	var err error
	for attempt := 1; attempt <= e.cfg.Attempts; attempt++ {
		var n int64
		var retry bool
		n, retry, err = e.attempt(ctx, f)
		total += n
		if err == nil || !retry || ctx.Err() != nil {
			break
		}
		e.m.retries.Inc()
		e.log.Debug("retrying download", "object", r.String(), "attempt", attempt, "error", err)
		select {
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		case <-ctx.Done():
			return total, ctx.Err()
		}
	}
	return total, err
}

func (e *Engine) attempt(ctx context.Context, f *flight) (n int64, retry bool, err error) {
	r, expect := f.ref, f.expect
	ctx, cancel := context.WithTimeout(ctx, e.cfg.FetchTimeout)
	defer cancel()
	body, obj, err := e.src.Open(ctx, r.ObjectKey(e.cfg.Prefix))
	if err != nil {
		if errors.Is(err, s3source.ErrNotFound) {
			return 0, false, fmt.Errorf("%w: %s", ErrNotFound, r)
		}
		return 0, true, err
	}
	defer body.Close()
	s, err := e.charge(f, obj.Size)
	if err != nil {
		return 0, false, err
	}
	// The store's space is taken once a lane is: a body waiting for one
	// holds no reservation nor temp file.
	lane, err := e.awaitLane(ctx, f)
	if err != nil {
		if s != nil {
			s.settle(obj.Size, 0)
		}
		return 0, false, err
	}
	w, err := e.st.Create(r, obj.Size, store.Meta{ETag: obj.ETag, LastModified: obj.LastModified, Encrypted: obj.Encrypted})
	if err != nil {
		e.releaseLanes(lane)
		if s != nil {
			s.settle(obj.Size, 0)
		}
		return 0, false, err
	}
	// A pack must start like a zstd frame: the writer of its first bytes
	// checks.
	var mw *magicWriter
	first := func(w io.Writer) io.Writer {
		if r.Kind != store.Pack {
			return w
		}
		mw = &magicWriter{w: w, ref: r}
		return mw
	}
	parts := e.takeParts(obj)
	if parts > 1 {
		n, err = e.copyParts(ctx, r, body, obj, w, parts, first)
	} else {
		buf := copyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(first(w), io.LimitReader(body, obj.Size), *buf)
		copyBufs.Put(buf)
	}
	e.releaseLanes(lane + parts - 1)
	e.m.bytes.Add(float64(n))
	if s != nil {
		s.settle(obj.Size, n)
	}
	if mw != nil && err == nil && n == obj.Size && mw.seen < len(zstdMagic) {
		// Complete but shorter than a frame header (an empty pack): the
		// magic check never saw enough bytes to refuse it.
		err = fmt.Errorf("%w: %s is %d bytes, not a zstd frame", store.ErrCorrupt, r, n)
	}
	if err == nil && expect != nil {
		if want := expect(); want >= 0 && obj.Size != want {
			err = fmt.Errorf("%w: %s is %d bytes, its entry manifest says %d", store.ErrCorrupt, r, obj.Size, want)
		}
	}
	if err != nil {
		w.Abort()
		if errors.Is(err, store.ErrCorrupt) {
			e.m.corrupt.Inc()
			return n, false, err
		}
		// A full disk is not worth retrying; a broken connection is.
		return n, !errors.Is(err, store.ErrNoSpace), fmt.Errorf("download %s: %w", r, err)
	}
	if err := w.Commit(); err != nil {
		if errors.Is(err, store.ErrCorrupt) {
			e.m.corrupt.Inc()
			// Short bodies are transfer failures worth another attempt.
			return n, n < obj.Size, err
		}
		return n, false, err
	}
	return n, false, nil
}

// copyBufs hold the buffers downloads are copied through: larger than
// io.Copy's 32 KiB so a big pack costs fewer read and write calls, small
// enough that 16 lanes stay within a few MiB.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// zstdMagic starts every zstd frame; kache's packs are one frame.
var zstdMagic = [4]byte{0x28, 0xb5, 0x2f, 0xfd}

// magicWriter refuses a pack that does not start like a zstd frame, so a
// wrong object is never kept under a pack's name.
type magicWriter struct {
	w    io.Writer
	ref  store.Ref
	seen int
}

func (m *magicWriter) Write(p []byte) (int, error) {
	for i := 0; m.seen < len(zstdMagic) && i < len(p); i++ {
		if p[i] != zstdMagic[m.seen] {
			return 0, fmt.Errorf("%w: %s is not a zstd frame", store.ErrCorrupt, m.ref)
		}
		m.seen++
	}
	return m.w.Write(p)
}
