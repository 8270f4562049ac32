package prefetch

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kache-planner/kache-planner/shared/layout"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func (e *Engine) openSessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions)
}

// A burst of plans keeps at most maxOpenSessions sessions open: each plan
// past the bound closes the finished session inactive the longest, which is
// reported as evicted, and is prefetched.
func TestOpenSessionsAreBounded(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100, 200})
	e, _, rec := newEngine(t, Config{Concurrency: 2}, f, 0)
	var first *Session
	for i := range maxOpenSessions + 40 {
		s := e.Submit(Plan{ID: fmt.Sprintf("plan-%d", i), Candidates: cands})
		if i == 0 {
			first = s
		}
		wait(t, s)
		if n := e.openSessions(); n > maxOpenSessions {
			t.Fatalf("%d sessions open after plan %d, want at most %d", n, i, maxOpenSessions)
		}
	}
	if n := e.openSessions(); n != maxOpenSessions {
		t.Fatalf("%d sessions open, want %d", n, maxOpenSessions)
	}
	rec.mu.Lock()
	reports := rec.reports
	rec.mu.Unlock()
	if len(reports) != 40 || reports[0].SessionID != first.ID() || reports[0].Reason != "evicted" {
		t.Fatalf("%d sessions reported, want the 40 oldest evicted; first %+v", len(reports), reports[0])
	}
	if _, ok := e.Session(first.ID()); ok {
		t.Error("the evicted session is still listed")
	}
	if n := counterValue(t, e.m.refused); n != 0 {
		t.Errorf("%v plans refused, want none (finished sessions make room)", n)
	}
}

// When every open session is still fetching, a new plan is not prefetched,
// and nothing open is closed for it.
func TestPlanRefusedWhileEverySessionFetches(t *testing.T) {
	f := newFake()
	cands := seed(f, []int{100})
	gate := make(chan struct{})
	defer close(gate)
	f.gate[layout.EntryManifestKey("artifacts", cands[0].CrateName, cands[0].CacheKey)] = gate
	e, _, rec := newEngine(t, Config{Concurrency: 1}, f, 0)
	for i := range maxOpenSessions {
		e.Submit(Plan{ID: fmt.Sprintf("plan-%d", i), Candidates: cands})
	}
	s := e.Submit(Plan{ID: "one-too-many", Candidates: cands})
	select {
	case <-s.Done():
	default:
		t.Fatal("a plan over the bound was queued")
	}
	if n := e.openSessions(); n != maxOpenSessions {
		t.Fatalf("%d sessions open, want %d", n, maxOpenSessions)
	}
	if n := counterValue(t, e.m.refused); n != 1 {
		t.Errorf("%v plans refused, want 1", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reports) != 0 {
		t.Errorf("%d sessions closed to make room for the refused plan", len(rec.reports))
	}
}
