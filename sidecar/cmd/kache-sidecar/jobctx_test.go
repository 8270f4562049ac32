package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/planner"
	"github.com/kache-planner/kache-planner/sidecar/internal/runner"
	"github.com/kache-planner/kache-planner/sidecar/internal/s3api"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

func TestSplitWarmArgs(t *testing.T) {
	tests := []struct {
		name         string
		cmd          string
		args         []string
		flags, cargo []string
	}{
		{"no command", "warm", []string{"--workspace", "."}, []string{"--workspace", "."}, nil},
		{"command", "warm", []string{"--workspace", ".", "--", "cargo", "build", "--", "x"}, []string{"--workspace", "."}, []string{"cargo", "build", "--", "x"}},
		{"serve keeps its arguments", "serve", []string{"--", "cargo"}, []string{"--", "cargo"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, cargo := splitWarmArgs(tt.cmd, tt.args)
			if !reflect.DeepEqual(flags, tt.flags) || !reflect.DeepEqual(cargo, tt.cargo) {
				t.Errorf("got %q and %q", flags, cargo)
			}
		})
	}
}

func TestParseCargoCommand(t *testing.T) {
	tests := []struct {
		cmd  string
		want cargoJob
	}{
		{"", cargoJob{}},
		{"cargo build", cargoJob{Profile: "debug"}},
		{"cargo build --release", cargoJob{Profile: "release"}},
		{"cargo b -r --target aarch64-apple-darwin", cargoJob{Profile: "release", Target: "aarch64-apple-darwin"}},
		{"cargo build --target=x86_64-unknown-linux-musl --target wasm32-unknown-unknown", cargoJob{Profile: "debug", Target: "x86_64-unknown-linux-musl"}},
		{"cargo test --profile dev", cargoJob{Profile: "debug"}},
		{"cargo build --profile=ci-fast", cargoJob{Profile: "ci-fast"}},
		{"cargo bench", cargoJob{Profile: "release"}},
		{"cargo bench --profile test", cargoJob{Profile: "debug"}},
		{"cargo install --path .", cargoJob{Profile: "release"}},
		{"cargo build --features a,b -F c --features=b", cargoJob{Profile: "debug", Features: []string{"a", "b", "c"}}},
		{"cargo +nightly build --release", cargoJob{Profile: "release", Toolchain: "nightly"}},
		{"cargo run -- --release --target x", cargoJob{Profile: "debug"}},
		{"cross build --release --target aarch64-unknown-linux-gnu", cargoJob{Profile: "release", Target: "aarch64-unknown-linux-gnu"}},
		{"cargo --locked build --release", cargoJob{Profile: "release"}},
		{"cargo build --target", cargoJob{Profile: "debug"}},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			if got := parseCargoCommand(strings.Fields(tt.cmd)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("features separated by spaces in one argument", func(t *testing.T) {
		got := parseCargoCommand([]string{"cargo", "build", "--features", "x y,z"})
		if !reflect.DeepEqual(got.Features, []string{"x", "y", "z"}) {
			t.Errorf("features %q", got.Features)
		}
	})
}

func TestDescribeJob(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Cargo.lock"), []byte(lockFile), 0o644); err != nil {
		t.Fatal(err)
	}
	ws := config.Config{Workspace: dir}
	info := runner.Info{Provider: runner.ProviderGitHub, Target: "x86_64-unknown-linux-gnu",
		Context: wire.RunnerContext{Repository: "acme/app", Commit: "abc", GitRef: "refs/heads/main"}}
	job := cargoJob{Profile: "release", Target: "aarch64-apple-darwin", Features: []string{"fast"}}

	in := &wire.BuildIntent{Toolchain: "1.82.0"}
	must(t, describeJob(in, ws, info, job))
	if in.Runner == nil || in.Runner.Repository != "acme/app" || in.Target != "aarch64-apple-darwin" || in.Profile != "release" ||
		!reflect.DeepEqual(in.Features, []string{"fast"}) || in.Toolchain != "1.82.0" || len(in.CargoLockDeps) != 3 || in.Namespace != nil {
		t.Errorf("intent %+v: lock deps go with no namespace too", in)
	}
	if j, ok := runner.JobOf(in); !ok || j.Profile != "release" {
		t.Error("the sidecar does not see warm's intent as a job")
	}

	in = &wire.BuildIntent{}
	ws.Target = "x86_64-unknown-linux-musl"
	must(t, describeJob(in, ws, info, job))
	ws.Target = ""
	if in.Target != info.Target {
		t.Errorf("target %q: the --target flag (already in info) wins over the cargo command", in.Target)
	}

	in = &wire.BuildIntent{}
	must(t, describeJob(in, ws, runner.Info{Target: "x86_64-unknown-linux-gnu"}, cargoJob{}))
	if in.Runner != nil || in.Profile != "" || in.Target != "x86_64-unknown-linux-gnu" {
		t.Errorf("outside CI without a command: %+v", in)
	}
	if err := describeJob(&wire.BuildIntent{}, config.Config{Workspace: t.TempDir()}, info, job); err == nil {
		t.Error("no Cargo.lock must fail")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// demandRecorder is the engine behind the S3 surface.
type demandRecorder struct{ refs []store.Ref }

func (d *demandRecorder) Demand(_ context.Context, r store.Ref) error {
	d.refs = append(d.refs, r)
	return nil
}

// profilePlans is central planning by the intent's profile: one key each.
type profilePlans struct{}

func (profilePlans) Plan(_ context.Context, in *wire.BuildIntent) (wire.PrefetchPlan, error) {
	k := strings.Repeat("1", 64)
	if in.Profile == "release" {
		k = strings.Repeat("2", 64)
	}
	return wire.PrefetchPlan{Planner: "central", Disposition: wire.Execute,
		Candidates: []wire.PrefetchCandidate{{CacheKey: k, CrateName: "serde", Source: wire.SourceHistory}}}, nil
}

// TestReadObserver: a read through the S3 surface reaches the engine and
// tells the planner the build's profile.
func TestReadObserver(t *testing.T) {
	jobs := newJobContext(time.Now)
	p, err := planner.New(planner.Config{ObservesReads: true, Deadline: time.Second}, planner.Deps{Central: profilePlans{}, Jobs: jobs})
	must(t, err)
	defer p.Stop(context.Background())
	eng := &demandRecorder{}
	var d s3api.Demander = readObserver{Demander: eng, p: p}
	ref := store.Ref{Kind: store.Pack, Crate: "serde", CacheKey: strings.Repeat("2", 64)}
	must(t, d.Demand(context.Background(), ref))
	if len(eng.refs) != 1 || eng.refs[0] != ref {
		t.Fatalf("engine got %v", eng.refs)
	}
	res := p.Plan(context.Background(), &wire.BuildIntent{CrateNames: []string{"serde"}, CargoLockDeps: []wire.LockDep{}})
	if len(res.Plan.Candidates) != 1 || res.Plan.Candidates[0].CacheKey != ref.CacheKey {
		t.Errorf("plan %+v: the read said release", res.Plan.Candidates)
	}
}
