package replay

import (
	"slices"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func TestParseProtoOptions(t *testing.T) {
	tests := []struct {
		in      string
		want    ProtoOptions
		wantErr bool
	}{
		{"", ProtoOptions{}, false},
		{"versions,identity", ProtoOptions{PerCrateVersions: true, Identity: true}, false},
		{"all", FullProto(), false},
		{"versions, unseen ,toolchain,churn,cochange", ProtoOptions{PerCrateVersions: true, SkipUnseen: true, Toolchain: true, Churn: true, CoChange: true}, false},
		{"telepathy", ProtoOptions{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseProtoOptions(tt.in)
			if (err != nil) != tt.wantErr || !tt.wantErr && got != tt.want {
				t.Errorf("ParseProtoOptions(%q) = %+v, %v", tt.in, got, err)
			}
		})
	}
}

func TestCoChange(t *testing.T) {
	lock := func(vs ...string) []wire.LockDep {
		var deps []wire.LockDep
		for i := 0; i < len(vs); i += 2 {
			deps = append(deps, wire.LockDep{Name: vs[i], Version: vs[i+1]})
		}
		return deps
	}
	entries := func(kv ...string) []wire.ManifestEntry {
		var es []wire.ManifestEntry
		for i := 0; i < len(kv); i += 2 {
			es = append(es, wire.ManifestEntry{CrateName: kv[i], CacheKey: kv[i+1]})
		}
		return es
	}
	x := newCoChange()
	x.learn("ns", "1.80.0", lock("log", "0.4.0", "serde", "1.0.0"), entries("log", "k1", "app", "k2", "serde", "k3"))
	// log bumped: log and app changed, serde did not.
	x.learn("ns", "1.80.0", lock("log", "0.4.1", "serde", "1.0.0"), entries("log", "k4", "app", "k5", "serde", "k3"))
	// A toolchain update changes everything and teaches nothing.
	x.learn("ns", "1.81.0", lock("log", "0.4.1", "serde", "1.0.1"), entries("log", "k6", "app", "k7", "serde", "k8"))
	if !x.affects["log"]["app"] || !x.affects["log"]["log"] || x.affects["log"]["serde"] {
		t.Errorf("affects[log] = %v, want app and log", x.affects["log"])
	}
	if len(x.affects["serde"]) != 0 {
		t.Errorf("learned from a toolchain update: %v", x.affects["serde"])
	}
	if got := diffLocks(versionsByName(lock("a", "1", "b", "1", "b", "2")), versionsByName(lock("a", "1", "b", "1", "c", "1"))); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("diffLocks = %v", got)
	}
}

func TestChurn(t *testing.T) {
	x := churnIndex{}
	for i := range churnMinBuilds + 1 {
		x.learn("ns", []wire.ManifestEntry{{CrateName: "root", CacheKey: string(rune('a' + i))}, {CrateName: "lib", CacheKey: "same"}})
	}
	if !x.churny("ns", "root") || x.churny("ns", "lib") || x.churny("other", "root") {
		t.Errorf("churny root %v lib %v other %v", x.churny("ns", "root"), x.churny("ns", "lib"), x.churny("other", "root"))
	}
}
