package store

import (
	"slices"
	"testing"
)

func TestMergeDemand(t *testing.T) {
	ask := func(crate string, at uint64) CrateAsk { return CrateAsk{Crate: crate, AtMs: at} }
	unused := func(crate string, k int) PrefetchOutcome { return PrefetchOutcome{Crate: crate, CacheKey: hexKey(k)} }
	used := func(crate string, k int) PrefetchOutcome {
		return PrefetchOutcome{Crate: crate, CacheKey: hexKey(k), Used: true}
	}
	tests := []struct {
		name string
		obs  []DemandObservation // merged in order, one second apart
		want []CrateDemand
	}{
		{
			name: "first build sets the time",
			obs:  []DemandObservation{{Asked: []CrateAsk{ask("a", 100), ask("b", 300)}}},
			want: []CrateDemand{{Crate: "a", DemandMs: 100, Builds: 1, LastMs: 1000}, {Crate: "b", DemandMs: 300, Builds: 1, LastMs: 1000}},
		},
		{
			name: "later builds move it half way",
			obs:  []DemandObservation{{Asked: []CrateAsk{ask("a", 100)}}, {Asked: []CrateAsk{ask("a", 300)}}, {Asked: []CrateAsk{ask("a", 0)}}},
			want: []CrateDemand{{Crate: "a", DemandMs: 100, Builds: 3, LastMs: 3000}},
		},
		{
			name: "two versions in one build count once",
			obs:  []DemandObservation{{Asked: []CrateAsk{ask("a", 100), ask("a", 900)}}},
			want: []CrateDemand{{Crate: "a", DemandMs: 100, Builds: 1, LastMs: 1000}},
		},
		{
			name: "unused prefetches count up in a row",
			obs: []DemandObservation{
				{Asked: []CrateAsk{ask("a", 10)}, Prefetched: []PrefetchOutcome{unused("a", 1), used("a", 2)}},
				{Prefetched: []PrefetchOutcome{unused("a", 1), unused("a", 2)}},
			},
			want: []CrateDemand{{Crate: "a", DemandMs: 10, Builds: 1, LastMs: 1000, Unused: []UnusedKey{{hexKey(1), 2}, {hexKey(2), 1}}}},
		},
		{
			name: "a use starts the count over",
			obs: []DemandObservation{
				{Prefetched: []PrefetchOutcome{unused("a", 1)}},
				{Prefetched: []PrefetchOutcome{unused("a", 1)}},
				{Prefetched: []PrefetchOutcome{used("a", 1)}},
			},
			want: []CrateDemand{{Crate: "a"}},
		},
		{
			name: "the most often unused keys are kept",
			obs: []DemandObservation{
				{Prefetched: []PrefetchOutcome{unused("a", 1), unused("a", 2)}},
				{Prefetched: []PrefetchOutcome{unused("a", 2), unused("a", 3), unused("a", 4), unused("a", 5)}},
			},
			want: []CrateDemand{{Crate: "a", Unused: []UnusedKey{{hexKey(2), 2}, {hexKey(1), 1}, {hexKey(3), 1}, {hexKey(4), 1}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ds []CrateDemand
			for i := range tt.obs {
				var err error
				if ds, err = mergeDemand(ds, &tt.obs[i], int64(i+1)*1000); err != nil {
					t.Fatal(err)
				}
			}
			if !demandEqual(ds, tt.want) {
				t.Errorf("got %+v\nwant %+v", ds, tt.want)
			}
			back, err := decodeDemand(encodeDemand(ds))
			if err != nil || !demandEqual(back, ds) {
				t.Errorf("round trip: %+v, %v", back, err)
			}
			if vs := demandFromVariants(demandToVariants(ds)); !demandEqual(vs, ds) {
				t.Errorf("cache round trip: %+v", vs)
			}
		})
	}
}

func demandEqual(a, b []CrateDemand) bool {
	return slices.EqualFunc(a, b, func(x, y CrateDemand) bool {
		return x.Crate == y.Crate && x.DemandMs == y.DemandMs && x.Builds == y.Builds && x.LastMs == y.LastMs && slices.Equal(x.Unused, y.Unused)
	})
}

func TestMergeDemandRejects(t *testing.T) {
	for _, obs := range []DemandObservation{
		{Asked: []CrateAsk{{Crate: ""}}},
		{Prefetched: []PrefetchOutcome{{Crate: "a", CacheKey: "short"}}},
	} {
		if _, err := mergeDemand(nil, &obs, 1); err == nil {
			t.Errorf("%+v merged", obs)
		}
	}
	if _, err := decodeDemand([]byte{5, 1}); err == nil {
		t.Error("a truncated row decoded")
	}
}

func TestDemandApplyAndRead(t *testing.T) {
	s := memStore(t, Options{})
	fam := DemandFamily{Repository: "acme/app", Target: "x86_64-unknown-linux-gnu", Profile: "debug"}.Digest()
	other := DemandFamily{Target: "x86_64-unknown-linux-gnu", Profile: "debug"}.Digest()
	if ds, err := s.Demand(fam); err != nil || ds != nil {
		t.Fatalf("unknown family: %v, %v", ds, err)
	}
	var reads Reads
	r := s.Tracked(&reads)
	if _, err := r.Demand(fam); err != nil {
		t.Fatal(err)
	}
	reads.Seal()
	apply := func(at int64, ms uint64) {
		t.Helper()
		obs := Observation{AtMs: at, Demand: &DemandObservation{Families: [][32]byte{fam, other}, Asked: []CrateAsk{{Crate: "serde", AtMs: ms}}}}
		if _, err := s.Apply(obs); err != nil {
			t.Fatal(err)
		}
	}
	apply(1000, 400)
	if s.Current(&reads) {
		t.Error("a plan that read the family is still current after a timeline taught it")
	}
	apply(2000, 200)
	for _, f := range [][32]byte{fam, other} {
		ds, err := s.Demand(f)
		if err != nil || len(ds) != 1 || ds[0].DemandMs != 300 || ds[0].Builds != 2 {
			t.Errorf("family row: %+v, %v", ds, err)
		}
	}
	if a, b := (DemandFamily{Target: "a/b"}).Digest(), (DemandFamily{Target: "a_b"}).Digest(); a != b {
		t.Error("targets are not compared as identity keys write them")
	}
}
