package prefetch

import (
	"context"
	"testing"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// A plan identical to an open session's (answers of the same hints: the
// same Fingerprint, runner and budget) joins that session: no second
// session, no second report, and its plan id still finds the session.
func TestIdenticalPlanJoinsOpenSession(t *testing.T) {
	runner := func(repo string) *wire.RunnerContext { return &wire.RunnerContext{Repository: repo} }
	tests := []struct {
		name string
		// second changes the second plan (a copy of the first's).
		second func(*Plan)
		// before runs on the first session before the second plan.
		before   func(*Engine, *Session)
		wantJoin bool
	}{
		{name: "same fingerprint", wantJoin: true},
		{name: "no fingerprint", second: func(p *Plan) { p.Fingerprint = "" }},
		{name: "other fingerprint", second: func(p *Plan) { p.Fingerprint = "hints-v2" }},
		{name: "other runner", second: func(p *Plan) { p.Runner = runner("acme/other") }},
		{name: "other budget", second: func(p *Plan) { p.Budget.MaxKeys = 1 }},
		{name: "first session had a failed download", before: func(e *Engine, s *Session) {
			e.mu.Lock()
			s.cands[0].res = resultFailed
			e.mu.Unlock()
		}},
		{name: "first session stopped at its deadline", before: func(e *Engine, s *Session) {
			e.mu.Lock()
			s.stopWhy = "deadline"
			e.mu.Unlock()
		}},
		{name: "first session closed", before: func(e *Engine, s *Session) { e.closeSession(context.Background(), s, "idle") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			cands := seed(f, []int{100, 200})
			e, _, rec := newEngine(t, Config{Concurrency: 2}, f, 0)
			plan := Plan{ID: "plan-1", Fingerprint: "hints-v1", Candidates: cands, Runner: runner("acme/app")}
			first := e.Submit(plan)
			wait(t, first)
			if tt.before != nil {
				tt.before(e, first)
			}
			next := plan
			next.ID = "plan-2"
			if tt.second != nil {
				tt.second(&next)
			}
			second := e.Submit(next)
			if joined := second == first; joined != tt.wantJoin {
				t.Fatalf("joined %v, want %v", joined, tt.wantJoin)
			}
			wait(t, second)
			if got, ok := e.Session("plan-2"); !ok || got != second {
				t.Errorf("Session(plan-2) = %v, %v; want the session that took it", got, ok)
			}
			wantJoined := 0.0
			if tt.wantJoin {
				wantJoined = 1
			}
			if n := counterValue(t, e.m.joined); n != wantJoined {
				t.Errorf("joined counter %v, want %v", n, wantJoined)
			}
			if !tt.wantJoin {
				return
			}
			if n := f.openCount(layout.PackKey("artifacts", cands[0].CrateName, cands[0].CacheKey)); n != 1 {
				t.Errorf("pack fetched %d times, want once", n)
			}
			e.closeSession(context.Background(), first, "idle")
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.reports) != 1 || rec.reports[0].Joined != 1 {
				t.Errorf("reports %+v, want one, with one joined plan", rec.reports)
			}
			if _, ok := e.Session("plan-2"); ok {
				t.Error("a joined plan id still finds its closed session")
			}
		})
	}
}
