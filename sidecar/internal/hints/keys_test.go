package hints

import (
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestJobKeyOf(t *testing.T) {
	base := JobKeyOf(baseIntent())
	if base == KeyOf(baseIntent()) {
		t.Fatal("a job's key must differ from the intent's")
	}
	tests := []struct {
		name   string
		modify func(*wire.BuildIntent)
		same   bool
	}{
		// warm names every package of the lock, kache the closure of what
		// it builds, in its own order: the same job either way.
		{name: "other crate names", modify: func(in *wire.BuildIntent) { in.CrateNames = []string{"app"} }, same: true},
		{name: "no crate names", modify: func(in *wire.BuildIntent) { in.CrateNames = nil }, same: true},
		{name: "new commit", modify: func(in *wire.BuildIntent) { in.Runner.Commit = "bbb" }, same: true},
		{name: "lock deps reordered", modify: func(in *wire.BuildIntent) {
			in.CargoLockDeps[0], in.CargoLockDeps[1] = in.CargoLockDeps[1], in.CargoLockDeps[0]
		}, same: true},
		{name: "dep bumped", modify: func(in *wire.BuildIntent) { in.CargoLockDeps[0].Version = "1.0.211" }},
		{name: "namespace null", modify: func(in *wire.BuildIntent) { in.Namespace = nil }},
		{name: "target", modify: func(in *wire.BuildIntent) { in.Target = "aarch64-apple-darwin" }},
		{name: "profile", modify: func(in *wire.BuildIntent) { in.Profile = "release" }},
		{name: "toolchain", modify: func(in *wire.BuildIntent) { in.Toolchain = "1.82.0" }},
		{name: "features", modify: func(in *wire.BuildIntent) { in.Features = []string{"a"} }},
		{name: "budget", modify: func(in *wire.BuildIntent) { in.Budget = &wire.Budget{MaxBytes: 1} }},
		{name: "repository", modify: func(in *wire.BuildIntent) { in.Runner.Repository = "acme/other" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseIntent()
			tt.modify(in)
			if got := JobKeyOf(in) == base; got != tt.same {
				t.Errorf("JobKeyOf equal to base = %v, want %v", got, tt.same)
			}
		})
	}
}
