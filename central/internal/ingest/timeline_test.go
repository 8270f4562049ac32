package ingest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestIdentityDims(t *testing.T) {
	tests := []struct {
		key, target, profile string
	}{
		{"id/0123456789abcdef/x86_64-unknown-linux-gnu/release", "x86_64-unknown-linux-gnu", "release"},
		{"id/0123456789abcdef/custom_target.json/dev", "custom_target.json", "dev"},
		{"id/0123456789abcdef//release", "", ""},
		{"x86_64-unknown-linux-gnu", "", ""},
		{"id/a/b/c/d", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if tg, p := identityDims(tt.key); tg != tt.target || p != tt.profile {
				t.Errorf("%q, %q; want %q, %q", tg, p, tt.target, tt.profile)
			}
		})
	}
}

func TestTimelineDemand(t *testing.T) {
	k := func(c byte) string { return strings.Repeat(string(c), 64) }
	const linux = "x86_64-unknown-linux-gnu"
	base := wire.BuildTimeline{
		Schema: 2, ClientRecordID: "r", StartedAtMs: 5000, FinishedAtMs: 9000,
		Identity: &wire.TimelineIdentity{IdentityKey: "id/0123456789abcdef/" + linux + "/debug"},
		Context:  &wire.RunnerContext{Repository: "acme/app"},
		Units: []wire.TimelineUnit{
			{CacheKey: k('a'), CrateName: "serde", StartedAtMs: 5100},
			{CacheKey: k('b'), CrateName: "app", StartedAtMs: 7000},
			{CacheKey: "bad", CrateName: "bad", StartedAtMs: 5000},
		},
		Transfers: []wire.TimelineTransfer{
			{CacheKey: k('a'), CrateName: "serde", OK: true, Prefetch: &wire.TransferPrefetch{}, Outcome: "used_on_time/fetched"},
			{CacheKey: k('c'), CrateName: "serde", OK: true, Prefetch: &wire.TransferPrefetch{}, Outcome: "unused/fetched"},
			{CacheKey: k('d'), CrateName: "log", OK: false, Prefetch: &wire.TransferPrefetch{}, Outcome: "unused/missing"},
			{CacheKey: k('e'), CrateName: "log", OK: true, Outcome: "unused/fetched"},
			{CacheKey: k('f'), CrateName: "log", OK: true, Prefetch: &wire.TransferPrefetch{}, Outcome: "not_observed/fetched"},
		},
	}
	fam := func(repo, profile string) [32]byte {
		return store.DemandFamily{Repository: repo, Target: linux, Profile: profile}.Digest()
	}
	tests := []struct {
		name     string
		edit     func(*wire.BuildTimeline)
		families [][32]byte
		asked    []store.CrateAsk
		outcomes int
	}{
		{
			name:     "kache's record",
			edit:     func(*wire.BuildTimeline) {},
			families: [][32]byte{fam("acme/app", "debug"), fam("", "debug"), fam("", "")},
			asked:    []store.CrateAsk{{Crate: "serde", AtMs: 100}, {Crate: "app", AtMs: 2000}},
			// two units used, a used and an unused prefetch
			outcomes: 4,
		},
		{
			name:     "no repository",
			edit:     func(tl *wire.BuildTimeline) { tl.Context = nil },
			families: [][32]byte{fam("", "debug"), fam("", "")},
			asked:    []store.CrateAsk{{Crate: "serde", AtMs: 100}, {Crate: "app", AtMs: 2000}},
			outcomes: 4,
		},
		{
			name:     "no start time: outcomes only",
			edit:     func(tl *wire.BuildTimeline) { tl.StartedAtMs = 0 },
			families: [][32]byte{fam("acme/app", "debug"), fam("", "debug"), fam("", "")},
			outcomes: 4,
		},
		{
			// The sidecar's record names no identity: its times and
			// outcomes could be any job's.
			name: "no identity",
			edit: func(tl *wire.BuildTimeline) { tl.Identity = nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := base
			tt.edit(&tl)
			obs := Timeline(&tl, time.Now())
			d := obs.Demand
			if tt.families == nil {
				if d != nil {
					t.Errorf("demand %+v, want none", d)
				}
				return
			}
			if d == nil {
				t.Fatal("no demand")
			}
			if !slices.Equal(d.Families, tt.families) || !slices.Equal(d.Asked, tt.asked) || len(d.Prefetched) != tt.outcomes {
				t.Errorf("families %d, asked %+v, outcomes %+v", len(d.Families), d.Asked, d.Prefetched)
			}
			if len(obs.Artifacts) != 2 {
				t.Errorf("%d artifacts, want the 2 valid units", len(obs.Artifacts))
			}
		})
	}
}
