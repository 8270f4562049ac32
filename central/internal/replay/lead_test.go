package replay

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/kache-planner/kache-planner/central/internal/store"
)

func TestAllLocalAndWarmLead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	writeSyntheticTrace(t, dir, 30)
	tr, err := LoadTrace(dir)
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, leadMs int64) *Result {
		t.Helper()
		cfg := DefaultConfig(5)
		cfg.WarmLeadMs = leadMs
		res, err := Run(tr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	noLead, lead := run(t, 0), run(t, 20_000)
	if _, ok := noLead.Policies[PolicyOracleLead]; ok {
		t.Error("oracle_lead scored without a lead")
	}
	if i := slices.Index(lead.Order, PolicyOracleLead); i < 0 || lead.Order[len(lead.Order)-1] != PolicyAllLocal {
		t.Errorf("policies %v", lead.Order)
	}
	for _, res := range []*Result{noLead, lead} {
		local := res.Policies[PolicyAllLocal].Overall
		if local.Recall != 1 || local.OnTime != 1 || local.BytePrecision != 1 {
			t.Errorf("all_local %+v, want every needed artifact local", local)
		}
		for name, pr := range res.Policies {
			if pr.Overall.MeanBuildMs < local.MeanBuildMs-1e-9 {
				t.Errorf("%s builds in %.1f ms, faster than all_local's %.1f", name, pr.Overall.MeanBuildMs, local.MeanBuildMs)
			}
		}
	}
	// Policies that do not use the sidecar get no lead.
	for _, name := range []string{PolicyNone, PolicyKacheFallback, PolicyKacheService, PolicyLockfileAll, PolicyOracle, PolicyAllLocal} {
		if a, b := noLead.Policies[name].Overall, lead.Policies[name].Overall; a != b {
			t.Errorf("%s changed with the lead:\n%+v\n%+v", name, a, b)
		}
	}
	or, ol := lead.Policies[PolicyOracle].Overall, lead.Policies[PolicyOracleLead].Overall
	if ol.OnTime <= or.OnTime || ol.MeanBuildMs >= or.MeanBuildMs {
		t.Errorf("oracle_lead %+v not ahead of oracle %+v", ol, or)
	}
	if p0, p := noLead.Policies[PolicyPlanner].Overall, lead.Policies[PolicyPlanner].Overall; p.OnTime <= p0.OnTime || p.MeanBuildMs >= p0.MeanBuildMs {
		t.Errorf("planner with a lead %+v not ahead of without %+v", p, p0)
	}
	if lead.Model.WarmLeadMs != 20_000 {
		t.Errorf("model %+v", lead.Model)
	}
}

// TestWarmLeadSeesOnlyEarlierBuilds: a warm plan is asked the lead before
// its build, from what had completed by then. With a lead longer than the
// whole history nothing had, so the warmed policies fetch nothing.
func TestWarmLeadSeesOnlyEarlierBuilds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	writeSyntheticTrace(t, dir, 12)
	tr, err := LoadTrace(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(5)
	cfg.WarmLeadMs = 10 * 365 * 86400 * 1000
	res, err := Run(tr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{PolicyPlanner, PolicyOracleLead} {
		if s := res.Policies[name].Overall; s.Requests != 0 || s.Useful != 0 {
			t.Errorf("%s fetched %d keys planned before anything completed", name, s.Requests)
		}
	}
	if s := res.Policies[PolicyOracle].Overall; s.Useful == 0 {
		t.Error("oracle fetched nothing")
	}
	cfg = DefaultConfig(5)
	cfg.Context, cfg.WarmLeadMs = ContextNone, 1000
	if _, err := Run(tr, cfg); err == nil {
		t.Error("a warm lead ran without warm")
	}
}

// TestTimelines: the records a build run under a plan emits, and what
// central learns from them through its timeline path.
func TestTimelines(t *testing.T) {
	b := contextBuild(nil)
	b.Seq, b.StartMs, b.LockSHA = 7, 1_000_000, "0123456789abcdef0123"
	b.Units[0].Available = true
	run := &policyRun{
		downloads: []Download{
			{Key: key('a'), Crate: "serde", Exists: true, Size: 20, StartMs: 50, EndMs: 90},
			{Key: key('c'), Crate: "log", Exists: true, Size: 5, StartMs: 50, EndMs: 95},
		},
		sim:        SimResult{WallMs: 500, DemandMs: []float64{0, 200}},
		dispatchMs: 50,
	}
	kt := kacheTimeline(b, run, "acme/app")
	if kt.Identity == nil || kt.Identity.IdentityKey != "id/0123456789abcdef/aarch64-apple-darwin/release" || kt.Context != b.Runner {
		t.Errorf("identity %+v, context %+v", kt.Identity, kt.Context)
	}
	if len(kt.Units) != 2 || kt.Units[1].StartedAtMs != 1_000_200 || kt.Units[0].Result != "remote" || kt.Units[1].Result != "compiled" {
		t.Errorf("units %+v", kt.Units)
	}
	if len(kt.Transfers) != 2 || kt.Transfers[0].Outcome != "used_late/fetched" || kt.Transfers[1].Outcome != "unused/fetched" {
		t.Errorf("transfers %+v", kt.Transfers)
	}
	st := sidecarTimeline(b, run, "acme/app", nil)
	if st.Identity != nil || len(st.Units) != 0 || len(st.Transfers) != 2 || st.Summary.UsedKeys != 1 {
		t.Errorf("sidecar record %+v", st)
	}

	c, err := newCentral(ContextWarm, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b.Uploaded = []bool{true, true}
	b.runs = map[string]*policyRun{PolicyPlanner: run}
	if err := c.Learn(b, nil, b.StartMs+500); err != nil {
		t.Fatal(err)
	}
	ds, err := c.st.Demand(store.DemandFamily{Repository: "acme/app", Target: "aarch64-apple-darwin", Profile: "release"}.Digest())
	if err != nil || len(ds) != 3 {
		t.Fatalf("demand %+v, %v", ds, err)
	}
	for _, d := range ds {
		switch d.Crate {
		case "app":
			if d.DemandMs != 200 || d.Builds != 1 {
				t.Errorf("app %+v", d)
			}
		case "log":
			if len(d.Unused) != 1 || d.Unused[0].CacheKey != key('c') {
				t.Errorf("log %+v", d)
			}
		}
	}
	for _, id := range []string{"kache-acme/app-7", "kache-sidecar/sidecar-acme/app-7"} {
		if n, _, err := c.st.Timeline(id); err != nil || n != len(b.Units) && n != 0 {
			t.Errorf("timeline %s: %d units, %v", id, n, err)
		}
	}
}
