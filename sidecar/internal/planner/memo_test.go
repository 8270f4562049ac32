package planner

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/hints"
)

// Answers served from decoded hints are shared and their encoding kept;
// whatever replaces a stored hint (a newer plan from central, a refresh,
// any Put) must win on the next answer, even at the same StoredAt.
func TestServedHintsFollowTheStore(t *testing.T) {
	type step struct {
		name string
		// put stores plan n (by profile, "" unsplit) before the answer.
		put map[string]int
		// age moves the clock before the answer.
		age time.Duration
		// want: the answer's source and keys; sameAs: the index of an
		// earlier step whose answer (fingerprint and tail) it must share,
		// -1 for one that must differ from every earlier one.
		want     Source
		wantKeys []int
		sameAs   int
	}
	tests := []struct {
		name    string
		split   bool
		central int // central's plan n
		steps   []step
	}{
		{name: "unsplit", central: 9, steps: []step{
			{name: "first", put: map[string]int{"": 1}, want: SourceHint, wantKeys: []int{1}, sameAs: -1},
			{name: "again", want: SourceHint, wantKeys: []int{1}, sameAs: 0},
			{name: "replaced at the same time", put: map[string]int{"": 2}, want: SourceHint, wantKeys: []int{2}, sameAs: -1},
			{name: "stale: central's plan, stored", age: 20 * time.Minute, want: SourceCentral, wantKeys: []int{9}, sameAs: -1},
			{name: "central's hint served", want: SourceHint, wantKeys: []int{9}, sameAs: -1},
			{name: "and kept", want: SourceHint, wantKeys: []int{9}, sameAs: 4},
		}},
		{name: "split by profile", split: true, central: 9, steps: []step{
			{name: "first", put: map[string]int{"debug": 1, "release": 1}, want: SourceHint, wantKeys: []int{1}, sameAs: -1},
			{name: "again", want: SourceHint, wantKeys: []int{1}, sameAs: 0},
			{name: "one profile replaced", put: map[string]int{"release": 2}, want: SourceHint, wantKeys: []int{1, 2}, sameAs: -1},
			{name: "again after the change", want: SourceHint, wantKeys: []int{1, 2}, sameAs: 2},
			{name: "back to one plan", put: map[string]int{"release": 1}, want: SourceHint, wantKeys: []int{1}, sameAs: -1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := hints.OpenStorage(storage.NewMemStorage(), hints.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			clk := &clock{now: t0}
			central := &fakePlanner{plan: execPlan("central", tt.central)}
			p := newPlanner(t, Config{ObservesReads: tt.split, RevealWait: time.Millisecond}, Deps{Hints: store, Central: central, Now: clk.Now})
			keyOf := func(profile string) hints.Key {
				in := intent()
				in.Profile = profile
				return hints.KeyOf(in)
			}
			var got []Result
			for _, st := range tt.steps {
				for profile, n := range st.put {
					if err := store.Put(keyOf(profile), hints.Hint{Plan: encode(t, execPlan("hint", n)), StoredAt: clk.now}); err != nil {
						t.Fatal(err)
					}
				}
				clk.now = clk.now.Add(st.age)
				before, _ := store.Version(keyOf(""))
				res := p.Plan(context.Background(), intent())
				if res.Source != st.want || !sameKeys(res.Plan.Candidates, st.wantKeys) {
					t.Fatalf("step %q: %s %+v, want %s keys %v", st.name, res.Source, res.Plan.Candidates, st.want, st.wantKeys)
				}
				if res.Source == SourceHint {
					whole, _ := res.Plan.AppendJSON(nil)
					head, _ := res.Plan.AppendHead(nil)
					if res.Fingerprint == "" || !bytes.Equal(append(head, res.Tail...), whole) {
						t.Errorf("step %q: fingerprint %q, tail %s; want both, the tail of %s", st.name, res.Fingerprint, res.Tail, whole)
					}
				}
				for j, prev := range got {
					same := res.Fingerprint != "" && res.Fingerprint == prev.Fingerprint
					if same != (j == st.sameAs) {
						t.Errorf("step %q: same answer as step %q: %v", st.name, tt.steps[j].name, same)
					}
					if j == st.sameAs && &res.Tail[0] != &prev.Tail[0] {
						t.Errorf("step %q: tail encoded again", st.name)
					}
				}
				got = append(got, res)
				if res.Source == SourceCentral && !tt.split {
					waitVersionChange(t, store, keyOf(""), before)
				}
			}
		})
	}
}

// sameKeys says whether cands hold the keys of want, in any order.
func sameKeys(cands []wire.PrefetchCandidate, want []int) bool {
	var got, keys []string
	for _, c := range cands {
		got = append(got, c.CacheKey)
	}
	for _, n := range want {
		keys = append(keys, key(n))
	}
	slices.Sort(got)
	slices.Sort(keys)
	return slices.Equal(got, keys)
}

// waitVersionChange waits for the background store of a hint.
func waitVersionChange(t *testing.T, store *hints.Store, k hints.Key, before uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if v, ok := store.Version(k); ok && v != before {
			return
		}
	}
	t.Fatal("hint not stored")
}
