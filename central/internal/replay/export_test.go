package replay

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// recorder is a policy that plans nothing and keeps, for every build it is
// asked about, what Builds exports.
type recorder struct {
	trace  *Trace
	builds []ExportedBuild
}

func (r *recorder) Name() string { return "recorder" }

func (r *recorder) Plan(b *Build) (wire.PrefetchPlan, error) {
	r.builds = append(r.builds, Export(b, r.trace.Commits[b.Commit].Commit))
	return executePlan("recorder", nil), nil
}

func (r *recorder) Learn(*Build, *wire.BuildManifest, int64) error { return nil }

// TestExportMatchesReplay: the builds Builds exports are, field for field,
// the builds a replay run asks its policies about: same order, keys,
// costs, intents, branch flags and start times.
func TestExportMatchesReplay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	writeSyntheticTrace(t, dir, 30)
	for _, maxCommits := range []int{0, 11} {
		tr, err := LoadTrace(dir)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig(9)
		cfg.MaxCommits = maxCommits
		rec := &recorder{trace: tr}
		r := &runner{trace: tr, cfg: cfg, sched: NewSchedule(tr), bucket: NewBucket()}
		r.fallback = &kacheFallback{bucket: r.bucket}
		r.policies = []Policy{none{}, rec}
		r.scores = make([][]BuildScore, len(r.policies))
		if err := r.replay(); err != nil {
			t.Fatal(err)
		}

		var buf bytes.Buffer
		n, err := ExportBuilds(&buf, tr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(rec.builds) || n == 0 {
			t.Fatalf("commits %d: exported %d builds, the replay ran %d", maxCommits, n, len(rec.builds))
		}
		dec := json.NewDecoder(&buf)
		firsts := 0
		for i := range n {
			var got ExportedBuild
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("line %d: %v", i+1, err)
			}
			// Compare through JSON, as a consumer of the file reads it.
			wantJSON, _ := json.Marshal(rec.builds[i])
			var want ExportedBuild
			if err := json.Unmarshal(wantJSON, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("commits %d: build %d differs from the replay's:\ngot  %+v\nwant %+v", maxCommits, i, got, want)
			}
			if got.Seq != i {
				t.Errorf("line %d has seq %d", i, got.Seq)
			}
			if got.FirstOfBranch {
				firsts++
			}
			for ui, u := range got.Units {
				for _, d := range u.Deps {
					if d >= ui {
						t.Fatalf("build %d unit %d depends on unit %d, not before it", i, ui, d)
					}
				}
			}
		}
		if maxCommits == 0 && firsts == 0 {
			t.Error("no first build of a branch exported")
		}
	}
}
