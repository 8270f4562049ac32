package bucketplan

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Plan ids and the index's build time come from Config.Now (the sidecar's
// clock, which may be offset from the host's).
func TestConfigNowDatesPlansAndIndex(t *testing.T) {
	at := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	b := newFakeBucket()
	putManifest(b, "serde", key(1))
	s := newSource(t, b, nil, func(c *Config) { c.Now = func() time.Time { return at } })
	if err := s.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, built := s.IndexStats(); n != 1 || !built.Equal(at) {
		t.Fatalf("index of %d keys built %s, want 1 built %s", n, built, at)
	}
	plan, err := s.Plan(context.Background(), &wire.BuildIntent{CrateNames: []string{"serde"}, CargoLockDeps: []wire.LockDep{}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "plan-" + strconv.FormatInt(at.UnixMilli(), 10); plan.PlanID != want {
		t.Fatalf("plan id %q, want %q", plan.PlanID, want)
	}
}
