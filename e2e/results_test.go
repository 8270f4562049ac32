//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
)

// scenarioResult is one fleet scenario's line in e2e-results.json and in
// the summary table. Figures that do not apply to a scenario stay unset (nil
// pointers and empty Extra), so the JSON says what was measured and nothing
// else.
type scenarioResult struct {
	Scenario string `json:"scenario"`
	Passed   bool   `json:"passed"`

	Builds                   *int     `json:"builds,omitempty"`
	BuildsFinished           *int     `json:"builds_finished,omitempty"`
	CorruptServed            *int     `json:"corrupt_served,omitempty"`
	AckedLost                *int     `json:"acked_lost,omitempty"`
	LocalHitRateFirstQuarter *float64 `json:"local_hit_rate_first_quarter,omitempty"`
	LocalHitRateLastQuarter  *float64 `json:"local_hit_rate_last_quarter,omitempty"`
	PlanP99Ms                *float64 `json:"plan_p99_ms,omitempty"`
	Errors                   *int     `json:"errors,omitempty"`
	PeakRSSMiB               *float64 `json:"peak_rss_mib,omitempty"`
	// Extra holds a scenario's own figures (name -> number or string).
	Extra map[string]any `json:"extra,omitempty"`
}

func intp(v int) *int           { return &v }
func floatp(v float64) *float64 { return &v }
func (r *scenarioResult) set(name string, v any) {
	if r.Extra == nil {
		r.Extra = map[string]any{}
	}
	r.Extra[name] = v
}

var results struct {
	mu  sync.Mutex
	all []scenarioResult
}

// recordScenario registers a scenario's result, completed when the test
// ends: fill is called from a cleanup, after every figure is known, and
// Passed is set from the test's outcome, so a scenario cannot report a pass
// it did not have. Call it at the top of the scenario's test.
func recordScenario(t *testing.T, name string, fill func(*scenarioResult)) {
	t.Helper()
	t.Cleanup(func() {
		r := scenarioResult{Scenario: name}
		if fill != nil {
			fill(&r)
		}
		r.Passed = !t.Failed()
		t.Logf("scenario %s: %s", name, r.line())
		results.mu.Lock()
		results.all = append(results.all, r)
		results.mu.Unlock()
	})
}

// line is the result's figures on one line.
func (r scenarioResult) line() string {
	var parts []string
	add := func(name string, v any) { parts = append(parts, fmt.Sprintf("%s=%v", name, v)) }
	if r.Builds != nil {
		add("builds", *r.Builds)
	}
	if r.BuildsFinished != nil {
		add("finished", *r.BuildsFinished)
	}
	if r.CorruptServed != nil {
		add("corrupt_served", *r.CorruptServed)
	}
	if r.AckedLost != nil {
		add("acked_lost", *r.AckedLost)
	}
	if r.LocalHitRateFirstQuarter != nil {
		add("hit_q1", fmt.Sprintf("%.3f", *r.LocalHitRateFirstQuarter))
	}
	if r.LocalHitRateLastQuarter != nil {
		add("hit_q4", fmt.Sprintf("%.3f", *r.LocalHitRateLastQuarter))
	}
	if r.PlanP99Ms != nil {
		add("plan_p99_ms", fmt.Sprintf("%.1f", *r.PlanP99Ms))
	}
	if r.Errors != nil {
		add("errors", *r.Errors)
	}
	if r.PeakRSSMiB != nil {
		add("peak_rss_mib", fmt.Sprintf("%.1f", *r.PeakRSSMiB))
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.Extra {
			if !yield(k) {
				return
			}
		}
	}) {
		v := r.Extra[k]
		if f, ok := v.(float64); ok {
			v = fmt.Sprintf("%.3g", f)
		}
		add(k, v)
	}
	return strings.Join(parts, " ")
}

// TestMain runs the suite, then prints the scenarios' summary table and
// writes it to e2e-results.json at the repository root.
func TestMain(m *testing.M) {
	code := m.Run()
	removeBinaries()
	results.mu.Lock()
	all := slices.Clone(results.all)
	results.mu.Unlock()
	if len(all) > 0 {
		if err := writeResults(all); err != nil {
			fmt.Fprintln(os.Stderr, "e2e-results.json:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func writeResults(all []scenarioResult) error {
	slices.SortStableFunc(all, func(a, b scenarioResult) int { return strings.Compare(a.Scenario, b.Scenario) })
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\n== fleet scenarios\nscenario\tresult\tfigures")
	for _, r := range all {
		verdict := "PASS"
		if !r.Passed {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Scenario, verdict, r.line())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	// The test binary runs in e2e/; the results go to the repository root.
	return os.WriteFile(filepath.Join("..", "e2e-results.json"), append(b, '\n'), 0o644)
}
