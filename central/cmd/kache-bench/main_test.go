package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/shared/cargolock"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// manifest writes what encoding/json would for the same build.
func TestManifest(t *testing.T) {
	o := options{crates: 20_000}
	for _, b := range []int{0, 7, 12345} {
		var got wire.BuildManifest
		if err := json.Unmarshal(manifest(o, b, 19_990, 20, "1.0.9"), &got); err != nil {
			t.Fatal(err)
		}
		ns := "bench"
		want := wire.BuildManifest{Version: 3, Created: time.UnixMilli(1_700_000_000_000 + int64(b)*60_000).UTC().Format(time.RFC3339Nano),
			ManifestKey: "x86_64-unknown-linux-gnu", Namespace: &ns, Target: "x86_64-unknown-linux-gnu", Profile: "debug"}
		for i := range 20 {
			crate := (19_990 + i) % o.crates
			want.Entries = append(want.Entries, wire.ManifestEntry{
				CacheKey:      fmt.Sprintf("%032x%032x", b+1, crate+1),
				CrateName:     cargolock.CrateName(crateName(crate)),
				CompileTimeMs: uint64(100 + (crate*37)%20000),
				ArtifactSize:  uint64(10_000 + (crate*7919)%5_000_000),
			})
			want.CargoLockDeps = append(want.CargoLockDeps, wire.LockDep{Name: crateName(crate), Version: "1.0.9"})
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("build %d:\n got %+v\nwant %+v", b, got, want)
		}
	}
}
