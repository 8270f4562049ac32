package prefetch

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// Plan is what a session fetches: candidates in dispatch order.
type Plan struct {
	ID      string
	Planner string
	// Source says where the plan came from (hint, central, bucket...).
	Source     string
	Candidates []wire.PrefetchCandidate
	Runner     *wire.RunnerContext
	// Budget overrides the engine's default budget where set.
	Budget Budget
	// Fingerprint, when set, names the candidates: plans with the same
	// Fingerprint have the same candidates in the same order (answers of
	// the same versions of the same hints: planner.Result.Fingerprint). A
	// plan identical to an open session's (the same Fingerprint, runner
	// and budget) joins that session instead of opening one.
	Fingerprint string
}

type result string

const (
	resultPending    result = ""
	resultFetched    result = "fetched"
	resultPresent    result = "present"
	resultJoined     result = "joined_demand"
	resultNotFound   result = "not_found"
	resultFailed     result = "failed"
	resultOverBudget result = "over_budget"
	resultSkipped    result = "skipped"
)

func resultOf(err error) result {
	switch {
	case err == nil:
		return resultFetched
	case errors.Is(err, ErrNotFound):
		return resultNotFound
	case errors.Is(err, ErrBudgetExceeded):
		return resultOverBudget
	default:
		return resultFailed
	}
}

type candidate struct {
	rank     int
	key      string
	crate    string
	source   wire.Source
	sizeHint uint64
	// held is byte budget held for sizeHint from dispatch until the pack's
	// GET reserves its real size (guarded by Session.bmu).
	held int64

	res        result
	bytes      int64
	started    time.Time
	finished   time.Time
	demandedAt time.Time
	// presentAtDemand: the object was already local when the build asked.
	presentAtDemand bool
}

// Session is one plan being prefetched and then watched for demand.
type Session struct {
	id      string
	plan    Plan
	budget  Budget
	started time.Time
	// ctx ends when the session closes; until then the session waits for
	// its downloads.
	ctx    context.Context
	cancel context.CancelFunc
	// deadline stops the session at its deadline even while it is queued.
	deadline *time.Timer

	// Guarded by the engine's mutex.
	cands    []*candidate
	byRef    map[store.Ref]*candidate
	cursor   int
	inflight int
	lastAct  time.Time
	stopWhy  string
	closed   bool
	// Demand for keys outside the plan: the plan's misses.
	extraDemand int
	// joined counts the identical plans that joined the session.
	joined int

	bmu       sync.Mutex
	reserved  int64 // bytes reserved by downloads in flight or done
	received  int64
	keysTaken int

	done     chan struct{}
	doneOnce sync.Once
}

// maxOpenSessions bounds the sessions open at once. A session stays open
// for SessionIdle after its prefetch, watching the build's reads, and holds
// its plan's candidates meanwhile. kache asks for one plan per build
// session, but a burst of plan requests (many builds through one sidecar)
// would otherwise open a session each and keep them for minutes: memory
// would follow the requests, not the configuration, and every read of the
// S3 surface would visit every session.
const maxOpenSessions = 64

// Submit starts a session for plan. Candidates that fail kache's validation
// are dropped (kache would drop them too); the key budget keeps the first
// MaxKeys of the rest, as kache does.
//
// With maxOpenSessions open, the least recently active session that has
// finished fetching is closed (and reported) to make room; when every open
// session is still fetching, plan is not prefetched: the session returned
// is done at once, with nothing fetched.
//
// A plan identical to an open session's joins it (joinSession): the session
// is returned, and the plan costs a map lookup.
func (e *Engine) Submit(plan Plan) *Session {
	b := plan.Budget
	def := e.cfg.DefaultBudget
	if b.MaxKeys == 0 {
		b.MaxKeys = def.MaxKeys
	}
	if b.MaxBytes == 0 {
		b.MaxBytes = def.MaxBytes
	}
	if b.Deadline == 0 {
		b.Deadline = def.Deadline
	}
	now := e.clock()
	if s := e.joinSession(plan, b, now); s != nil {
		return s
	}
	s := &Session{plan: plan, budget: b, started: now, lastAct: now, byRef: map[store.Ref]*candidate{}, done: make(chan struct{})}
	for i, c := range plan.Candidates {
		// Ref.Valid also refuses what kache allows and the store cannot
		// hold (a crate named "."), so it costs no GET.
		ref := store.Ref{Kind: store.Pack, Crate: c.CrateName, CacheKey: c.CacheKey}
		if !ref.Valid() {
			e.m.keys.WithLabelValues("invalid").Inc()
			continue
		}
		if _, dup := s.byRef[ref]; dup {
			continue
		}
		cand := &candidate{rank: i, key: c.CacheKey, crate: c.CrateName, source: c.Source, sizeHint: c.SizeBytes}
		s.cands = append(s.cands, cand)
		s.byRef[ref] = cand
	}
	e.mu.Lock()
	e.nextID++
	s.id = fmt.Sprintf("sidecar-%d-%d", now.UnixMilli(), e.nextID)
	s.ctx, s.cancel = context.WithCancel(e.ctx)
	for !e.stopped && len(e.sessions) >= maxOpenSessions {
		old := e.evictableLocked()
		if old == nil {
			e.mu.Unlock()
			s.cancel()
			s.markDone()
			e.m.refused.Inc()
			e.log.Debug("prefetch session refused: every open session is still fetching", "plan_id", plan.ID, "open", maxOpenSessions)
			return s
		}
		e.mu.Unlock()
		e.closeSession(e.ctx, old, "evicted")
		e.mu.Lock()
	}
	if e.stopped {
		e.mu.Unlock()
		s.cancel()
		s.markDone()
		return s
	}
	if b.Deadline > 0 {
		s.deadline = time.AfterFunc(b.Deadline, func() { e.expire(s) })
	}
	e.sessions[s.id] = s
	if plan.Fingerprint != "" {
		e.byPrint[plan.Fingerprint] = s
	}
	e.queue = append(e.queue, s)
	e.wake.Broadcast()
	e.mu.Unlock()
	e.m.sessions.Inc()
	e.log.Info("prefetch session", "session", s.id, "plan_id", plan.ID, "plan_source", plan.Source,
		"candidates", len(s.cands), "max_keys", b.MaxKeys, "max_bytes", b.MaxBytes, "deadline", b.Deadline)
	return s
}

// maxAliases bounds the plan ids remembered for sessions they joined.
const maxAliases = 1024

// joinSession counts plan in the open session of an identical plan and returns
// it, or returns nil. Identical: the same Fingerprint (so the same
// candidates), runner and budget. Builds planned alike share the session's
// downloads and its report. A session stopped at its deadline, or with
// downloads that failed, is not joined: a session of its own would fetch
// what it did not.
func (e *Engine) joinSession(plan Plan, b Budget, now time.Time) *Session {
	if plan.Fingerprint == "" {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.byPrint[plan.Fingerprint]
	if s == nil || s.closed || e.stopped || s.budget != b || !sameRunner(s.plan.Runner, plan.Runner) || !s.joinableLocked() {
		return nil
	}
	s.joined++
	s.lastAct = now
	if plan.ID != "" && plan.ID != s.plan.ID {
		if old := e.aliasRing[e.aliasNext]; old != "" {
			delete(e.aliases, old)
		}
		e.aliasRing[e.aliasNext] = plan.ID
		e.aliasNext = (e.aliasNext + 1) % maxAliases
		e.aliases[plan.ID] = s.id
	}
	e.m.joined.Inc()
	return s
}

// joinableLocked says whether the session would fetch all that a new one
// for its plan would: not stopped at its deadline, nothing failed.
func (s *Session) joinableLocked() bool {
	if s.stopWhy == "deadline" {
		return false
	}
	for _, c := range s.cands {
		if c.res == resultFailed {
			return false
		}
	}
	return true
}

func sameRunner(a, b *wire.RunnerContext) bool {
	if a == nil || b == nil {
		return a == b
	}
	return reflect.DeepEqual(*a, *b)
}

// evictableLocked returns the open session that finished fetching and has
// been inactive the longest, or nil when every one is still fetching.
func (e *Engine) evictableLocked() *Session {
	var oldest *Session
	for _, s := range e.sessions {
		select {
		case <-s.done:
		default:
			continue
		}
		if oldest == nil || s.lastAct.Before(oldest.lastAct) {
			oldest = s
		}
	}
	return oldest
}

// ID is the session's id.
func (s *Session) ID() string { return s.id }

// PlanID is the id of the session's plan.
func (s *Session) PlanID() string { return s.plan.ID }

// Done is closed when the session has nothing left to fetch, or at its
// deadline once its downloads in flight finish.
func (s *Session) Done() <-chan struct{} { return s.done }

func (s *Session) markDone() { s.doneOnce.Do(func() { close(s.done) }) }

// nextLocked hands out the next candidate, or nil when the session has
// nothing to start (done, over a budget, past its deadline, or waiting for
// its last downloads).
func (s *Session) nextLocked(now time.Time) *candidate {
	// Downloads in flight at the deadline finish (as in kache); nothing new
	// starts after it.
	if s.stopWhy == "" && s.budget.Deadline > 0 && !now.Before(s.started.Add(s.budget.Deadline)) {
		s.stopWhy = "deadline"
	}
	for s.stopWhy == "" && s.cursor < len(s.cands) {
		c := s.cands[s.cursor]
		s.cursor++
		if c.res != resultPending {
			continue
		}
		if s.budget.MaxKeys > 0 && s.keysTaken >= s.budget.MaxKeys {
			s.stopWhy = "max_keys"
			break
		}
		// A known size that cannot fit is skipped without a request; one
		// that fits is held, so that downloads dispatched meanwhile see it.
		if s.budget.MaxBytes > 0 && c.sizeHint > 0 && !s.hold(c) {
			c.res = resultOverBudget
			continue
		}
		s.keysTaken++
		s.inflight++
		c.started = now
		s.lastAct = now
		return c
	}
	s.completeLocked()
	return nil
}

// expire stops s at its deadline wherever it is in the queue (workers see
// a deadline only at the head); its downloads in flight still finish.
func (e *Engine) expire(s *Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.stopWhy == "" {
		s.stopWhy = "deadline"
	}
	s.completeLocked()
}

// completeLocked marks the session done once nothing more will start and
// nothing is in flight.
func (s *Session) completeLocked() {
	if s.inflight > 0 || (s.stopWhy == "" && s.cursor < len(s.cands)) {
		return
	}
	for _, c := range s.cands[s.cursor:] {
		if c.res == resultPending {
			c.res = resultSkipped
		}
	}
	s.cursor = len(s.cands)
	s.markDone()
}

// hold claims c's size hint from the byte budget, or reports that it does
// not fit.
func (s *Session) hold(c *candidate) bool {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	n := int64(c.sizeHint)
	if s.reserved+n > s.budget.MaxBytes {
		return false
	}
	s.reserved += n
	c.held = n
	return true
}

// unhold returns what is still held for c's size hint.
func (s *Session) unhold(c *candidate) {
	s.bmu.Lock()
	s.reserved -= c.held
	c.held = 0
	s.bmu.Unlock()
}

// reserve claims n bytes of the byte budget for object r, or reports that
// they do not fit. For a planned pack the bytes held for its size hint are
// given back first: the real size replaces the estimate.
func (s *Session) reserve(r store.Ref, n int64) bool {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	// byRef is not written after Submit, so it is read here without the
	// engine's mutex.
	if c := s.byRef[r]; c != nil && c.held > 0 {
		s.reserved -= c.held
		c.held = 0
	}
	if s.budget.MaxBytes > 0 && s.reserved+n > s.budget.MaxBytes {
		return false
	}
	s.reserved += n
	return true
}

// settle turns a reservation of n bytes into got bytes actually received:
// what arrived stays spent, the rest is returned.
func (s *Session) settle(n, got int64) {
	s.bmu.Lock()
	s.reserved -= n - got
	s.received += got
	s.bmu.Unlock()
}

func (s *Session) finishLocked(c *candidate, res result, n int64, started, finished time.Time) {
	c.res, c.bytes, c.started, c.finished = res, n, started, finished
	s.unhold(c) // the pack was never requested (present, joined, failed before)
	s.inflight--
	s.lastAct = finished
	s.completeLocked()
}

// demandLocked records that the build asked for r at now.
func (s *Session) demandLocked(r store.Ref, now time.Time, present bool) {
	if r.Kind != store.Pack {
		return
	}
	c, ok := s.byRef[r]
	if !ok {
		if !s.closed {
			s.extraDemand++
		}
		return
	}
	if c.demandedAt.IsZero() {
		c.demandedAt = now
		c.presentAtDemand = present
	}
	s.lastAct = now
}

func (s *Session) idleLocked(now time.Time, idle time.Duration) bool {
	select {
	case <-s.done:
	default:
		return false
	}
	return now.Sub(s.lastAct) >= idle
}

// Progress is a snapshot of a session.
type Progress struct {
	SessionID string `json:"session_id"`
	PlanID    string `json:"plan_id,omitempty"`
	// Keys is the number of valid candidates; Done counts those finished
	// (fetched, already present, missing, failed or skipped).
	Keys        int    `json:"keys"`
	Done        int    `json:"done"`
	Fetched     int    `json:"fetched"`
	Present     int    `json:"present"`
	NotFound    int    `json:"not_found"`
	Failed      int    `json:"failed"`
	Skipped     int    `json:"skipped"`
	Bytes       int64  `json:"bytes"`
	ExpectBytes int64  `json:"expect_bytes"`
	ElapsedMs   int64  `json:"elapsed_ms"`
	Finished    bool   `json:"finished"`
	StopReason  string `json:"stop_reason,omitempty"`
}

// Progress reports how far the session is.
func (e *Engine) Progress(s *Session) Progress {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := Progress{SessionID: s.id, PlanID: s.plan.ID, Keys: len(s.cands), StopReason: s.stopWhy}
	for _, c := range s.cands {
		p.ExpectBytes += int64(c.sizeHint)
		switch c.res {
		case resultPending:
			continue
		case resultFetched:
			p.Fetched++
		case resultPresent, resultJoined:
			p.Present++
		case resultNotFound:
			p.NotFound++
		case resultFailed:
			p.Failed++
		default:
			p.Skipped++
		}
		p.Done++
	}
	s.bmu.Lock()
	p.Bytes = s.received
	s.bmu.Unlock()
	select {
	case <-s.done:
		p.Finished = true
	default:
	}
	p.ElapsedMs = e.clock().Sub(s.started).Milliseconds()
	return p
}

// Session finds an open session by its id or its plan's id.
func (e *Engine) Session(id string) (*Session, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.sessions[id]; ok {
		return s, true
	}
	if s, ok := e.sessions[e.aliases[id]]; ok {
		return s, true
	}
	for _, s := range e.sessions {
		if s.plan.ID == id && id != "" {
			return s, true
		}
	}
	return nil, false
}

// Report is a closed session's outcome: what the plan fetched and what the
// build then used.
type Report struct {
	SessionID  string
	Plan       Plan
	Reason     string
	StartedAt  time.Time
	FinishedAt time.Time
	// Candidates, Fetched and Bytes describe the prefetch.
	Candidates int
	Fetched    int
	Bytes      int64
	// Demanded counts planned keys the build asked for; OnTime those that
	// were local when asked; Late those asked for while still pending or
	// in flight; Unused those fetched and never asked for; Missed counts
	// demands for keys the plan did not have.
	Demanded int
	OnTime   int
	Late     int
	Unused   int
	Missed   int
	// Joined counts the identical plans that joined the session.
	Joined   int
	Timeline wire.BuildTimeline
}

func (e *Engine) closeSession(ctx context.Context, s *Session, why string) {
	e.mu.Lock()
	if s.closed {
		e.mu.Unlock()
		return
	}
	s.closed = true
	delete(e.sessions, s.id)
	if e.byPrint[s.plan.Fingerprint] == s {
		delete(e.byPrint, s.plan.Fingerprint)
	}
	r := e.reportLocked(s, why)
	e.mu.Unlock()
	s.cancel()
	if s.deadline != nil {
		s.deadline.Stop()
	}
	s.markDone()
	e.m.observe(r)
	e.log.Info("prefetch session closed", "session", s.id, "plan_id", s.plan.ID, "reason", why, "joined_plans", r.Joined,
		"candidates", r.Candidates, "fetched", r.Fetched, "bytes", r.Bytes, "demanded", r.Demanded,
		"on_time", r.OnTime, "late", r.Late, "unused", r.Unused, "missed", r.Missed)
	if e.rep == nil {
		return
	}
	if err := e.rep.Report(ctx, r); err != nil {
		e.m.reportErrors.Inc()
		e.log.Warn("report prefetch outcome", "session", s.id, "error", err)
	}
}

func (e *Engine) reportLocked(s *Session, why string) Report {
	now := e.clock()
	r := Report{SessionID: s.id, Plan: s.plan, Reason: why, StartedAt: s.started, FinishedAt: now,
		Candidates: len(s.cands), Missed: s.extraDemand, Joined: s.joined}
	t := wire.BuildTimeline{
		Schema:         timelineSchema,
		ClientRecordID: "kache-sidecar/" + s.id,
		SessionID:      s.id,
		StartedAtMs:    ms(s.started),
		FinishedAtMs:   ms(now),
		Context:        s.plan.Runner,
		Units:          []wire.TimelineUnit{},
	}
	for _, c := range s.cands {
		fetched := c.res == resultFetched
		if fetched {
			r.Fetched++
			r.Bytes += c.bytes
		}
		demanded := !c.demandedAt.IsZero()
		outcome := "unused"
		switch {
		case !e.cfg.DemandObserved:
			// Nothing tells this engine what the build reads, so "never
			// asked for" would be a false claim.
			outcome = "not_observed"
		case demanded && (c.presentAtDemand || (fetched && !c.finished.After(c.demandedAt))):
			r.Demanded++
			r.OnTime++
			outcome = "used_on_time"
		case demanded:
			r.Demanded++
			r.Late++
			outcome = "used_late"
		case fetched:
			r.Unused++
		}
		if c.res == resultPending || c.res == resultSkipped || c.res == resultOverBudget {
			if !demanded {
				continue // never attempted, nothing to learn beyond the summary
			}
		}
		tr := wire.TimelineTransfer{
			CacheKey: c.key, CrateName: c.crate, Direction: "download", OK: fetched || c.res == resultPresent,
			CompressedBytes: uint64(c.bytes), StartedAtMs: ms(c.started), FinishedAtMs: ms(c.finished),
			Prefetch: &wire.TransferPrefetch{SessionID: s.id, PlanID: s.plan.ID, Source: s.plan.Source,
				CandidateRank: uint64(c.rank), CandidateSource: string(c.source)},
			Outcome: outcome + "/" + string(c.res),
		}
		t.Transfers = append(t.Transfers, tr)
	}
	if !e.cfg.DemandObserved {
		r.Unused, r.Missed = 0, 0
	}
	t.Summary = &wire.TimelineSummary{
		PlanID: s.plan.ID, PlanSource: s.plan.Source, ClosureReason: why,
		CandidateKeys: uint64(r.Candidates), DownloadedKeys: uint64(r.Fetched), DownloadedBytes: uint64(r.Bytes),
		UsedKeys: uint64(r.Demanded), DemandedKeys: uint64(r.Demanded + r.Missed), DemandedCandidateKeys: uint64(r.Demanded),
		Cancelled: why == "shutdown",
	}
	r.Timeline = t
	return r
}

// timelineSchema is the build-timeline schema the sidecar writes (central
// accepts 1-16).
const timelineSchema = 2

func ms(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMilli())
}
