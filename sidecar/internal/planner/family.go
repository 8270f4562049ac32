package planner

import (
	"context"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
)

// Planning under ambiguity. kache's intent names no profile, and without a
// namespace or a job context that names it nothing tells a debug build
// from a release one, so central would plan both profiles' keys for every crate. Instead
// the sidecar asks for one plan per profile (Config.Profiles) and waits
// briefly for the build's first reads through its S3 surface
// (ObserveRead): kache asks for the first units' keys as soon as rustc
// starts, which races the plan request. Every key a build reads is of its
// own target, profile and toolchain, so the first read key that only some
// profiles' plans hold says which profile the build is; the answer is that
// profile's plan. Without such a read within RevealWait, the answer holds
// every profile's keys, as an unsplit plan would.

// splitsIntent says whether in is planned per profile.
func (p *Planner) splitsIntent(in *wire.BuildIntent) bool {
	return p.cfg.ObservesReads && len(p.cfg.Profiles) > 1 && in.Profile == "" && in.Namespace == nil
}

// familySet has one bit per Config.Profiles entry.
type familySet uint64

// maxProfiles bounds Config.Profiles to familySet's bits.
const maxProfiles = 64

// planSplit plans in once per profile (each under keyOf's hint key) and
// answers with the profiles a read of the build tells, or all of them.
func (p *Planner) planSplit(ctx context.Context, in *wire.BuildIntent, keyOf func(*wire.BuildIntent) hints.Key, adapt bool) Result {
	profiles := p.cfg.Profiles[:min(len(p.cfg.Profiles), maxProfiles)]
	results := make([]Result, len(profiles))
	var wg sync.WaitGroup
	for i, profile := range profiles {
		sub := *in
		sub.Profile = profile
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = p.plan(ctx, &sub, keyOf(&sub), adapt)
		}()
	}
	wg.Wait()

	// Answers served from the same versions of the same hints merge the
	// same way: that work is done once.
	memoKey, memoable := splitKey(results)
	var a *splitAnswer
	if memoable {
		p.decodedMu.Lock()
		a = p.splits[memoKey]
		p.decodedMu.Unlock()
	}
	if a == nil {
		if a = mergeSplit(results); a == nil {
			return results[0]
		}
		if memoable {
			a.fingerprint = memoKey
			p.decodedMu.Lock()
			dropOneIfFull(p.splits, memoKey)
			p.splits[memoKey] = a
			p.decodedMu.Unlock()
		}
	}
	all := familySet(1)<<len(profiles) - 1
	// When every key is in every profile's plan (central knows no key's
	// profile), no read can tell the profile: answer without waiting.
	var chosen familySet
	if a.revealable {
		chosen = p.awaitReveal(ctx, a.fams, all)
	}
	if chosen == 0 || chosen == all {
		res := results[a.first]
		res.Plan = a.plan
		if memoable {
			res.Tail, res.Fingerprint = a.tail.get(&a.plan), a.fingerprint
		}
		p.log.Debug("split plan", "profiles", len(profiles), "revealed", false, "candidates", len(a.plan.Candidates))
		return res
	}
	// The answer is the chosen profiles' plans, merged in their order.
	res := Result{}
	var merged []wire.PrefetchCandidate
	seen := make(map[string]bool, len(a.fams))
	for i := range results {
		r := &results[i]
		if chosen&(1<<i) == 0 || r.Plan.Disposition != wire.Execute {
			continue
		}
		if res.Plan.Disposition == "" {
			res = *r
		}
		for _, c := range r.Plan.Candidates {
			if !seen[c.CacheKey] {
				seen[c.CacheKey] = true
				merged = append(merged, c)
			}
		}
	}
	compose.SortForDispatch(merged)
	res.Plan.Candidates = merged
	p.log.Debug("split plan", "profiles", len(profiles), "revealed", true, "candidates", len(merged))
	return res
}

// splitAnswer is what a split plan's answer is made of, given the plans of
// its profiles; shared, read-only, by the answers of the same hint
// versions.
type splitAnswer struct {
	// fams says which profiles' plans hold each key.
	fams       map[string]familySet
	revealable bool
	// first is the first profile with an execute plan; plan is its plan
	// with every profile's candidates, merged in dispatch order.
	first       int
	plan        wire.PrefetchPlan
	fingerprint string
	tail        encodedTail
}

// splitKey is the memo key of results when every one was served from a
// decoded hint of a versioned cache: the hints' keys and versions.
func splitKey(results []Result) (string, bool) {
	var b []byte
	for i := range results {
		d := results[i].hint
		if d == nil || d.version == 0 {
			return "", false
		}
		b = appendVersion(b, d)
	}
	return string(b), true
}

// mergeSplit merges the execute plans of results; nil when none is.
func mergeSplit(results []Result) *splitAnswer {
	a := &splitAnswer{fams: make(map[string]familySet), first: -1}
	var merged []wire.PrefetchCandidate
	for i := range results {
		r := &results[i]
		if r.Plan.Disposition != wire.Execute || len(r.Plan.Candidates) == 0 {
			continue
		}
		if a.first < 0 {
			a.first = i
		}
		for _, c := range r.Plan.Candidates {
			f, seen := a.fams[c.CacheKey]
			if !seen {
				merged = append(merged, c)
			}
			a.fams[c.CacheKey] = f | 1<<i
		}
	}
	if a.first < 0 {
		return nil
	}
	all := familySet(1)<<len(results) - 1
	a.revealable = revealable(a.fams, all)
	compose.SortForDispatch(merged)
	a.plan = results[a.first].Plan
	a.plan.Candidates = merged
	return a
}

// revealable says whether some key is in some but not all families' plans,
// so that a read of it could tell the build's profile.
func revealable(fams map[string]familySet, all familySet) bool {
	for _, f := range fams {
		if f != all {
			return true
		}
	}
	return false
}

// awaitReveal waits for a read of a key that some but not all families
// hold, and returns the families holding it; 0 when none came within the
// wait.
func (p *Planner) awaitReveal(ctx context.Context, fams map[string]familySet, all familySet) familySet {
	wait := p.cfg.RevealWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)-20*time.Millisecond)
	}
	since := p.deps.Now().Add(-p.cfg.RevealWindow)
	r := &p.reads
	r.mu.Lock()
	r.waiting++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.waiting--
		r.mu.Unlock()
	}()
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	for {
		r.mu.Lock()
		f, signal := r.revealLocked(since, fams, all), r.signal
		r.mu.Unlock()
		if f != 0 {
			return f
		}
		select {
		case <-signal:
		case <-timer.C:
			return 0
		case <-ctx.Done():
			return 0
		}
	}
}

// maxReads is how many recent reads are kept.
const maxReads = 256

type read struct {
	key string
	at  time.Time
}

// reads is a ring of the build's most recent reads.
type reads struct {
	mu   sync.Mutex
	ring [maxReads]read
	next int // index of the next write
	n    int
	// signal is closed and replaced on a read while waiting > 0.
	signal  chan struct{}
	waiting int
}

// revealLocked returns the families of the oldest read since since of a key
// that some but not all families hold.
func (r *reads) revealLocked(since time.Time, fams map[string]familySet, all familySet) familySet {
	for i := range r.n {
		rd := &r.ring[(r.next-r.n+i+maxReads)%maxReads]
		if rd.at.Before(since) {
			continue
		}
		if f := fams[rd.key]; f != 0 && f != all {
			return f
		}
	}
	return 0
}

// ObserveRead records that the build read an object of cacheKey (a GET or
// HEAD of its pack or entry manifest through the S3 surface). It tells
// split plans the build's profile, and keeps the job context alive. It
// must be cheap: every read of a build calls it.
func (p *Planner) ObserveRead(cacheKey string) {
	if p.deps.Jobs != nil {
		p.deps.Jobs.Touch()
	}
	r := &p.reads
	now := p.deps.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && r.ring[(r.next-1+maxReads)%maxReads].key == cacheKey {
		return // the pack after its entry manifest
	}
	r.ring[r.next] = read{key: cacheKey, at: now}
	r.next = (r.next + 1) % maxReads
	r.n = min(r.n+1, maxReads)
	if r.waiting > 0 {
		close(r.signal)
		r.signal = make(chan struct{})
	}
}

// inDemandOrder stamps plan's candidates with their crate's position in
// in's crate names (none for crates it does not name) and puts them in
// dispatch order: a job's hint may have been planned for warm's crate
// names, every package of the workspace, while kache names the closure of
// the package it builds, in its order. The plan's candidates are modified:
// it must own them.
func inDemandOrder(plan wire.PrefetchPlan, in *wire.BuildIntent) wire.PrefetchPlan {
	names := make([]string, len(in.CrateNames))
	for i, n := range in.CrateNames {
		names[i] = cargolock.CrateName(n)
	}
	names = compose.Dedupe(names)
	demand := make(map[string]uint32, len(names))
	for i, n := range names {
		demand[n] = uint32(i)
	}
	for i := range plan.Candidates {
		c := &plan.Candidates[i]
		if d, ok := demand[c.CrateName]; ok {
			c.DemandIndex = &d
		} else {
			c.DemandIndex = nil
		}
	}
	compose.SortForDispatch(plan.Candidates)
	return plan
}
