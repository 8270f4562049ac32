package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestIntentDecoding(t *testing.T) {
	ns := "ci-main"
	tests := []struct {
		name string
		body string
		want BuildIntent
	}{
		{"only crate names (vector 1)", `{"crate_names":["serde"]}`, BuildIntent{CrateNames: []string{"serde"}}},
		{"client shape without namespace", `{"crate_names":["proc-macro2","serde","app"],"namespace":null,"cargo_lock_deps":[]}`,
			BuildIntent{CrateNames: []string{"proc-macro2", "serde", "app"}, CargoLockDeps: []LockDep{}}},
		{"namespace and lock deps", `{"crate_names":["syn"],"namespace":"ci-main","cargo_lock_deps":[["serde","1.0.210"],["syn","2.0.0"]]}`,
			BuildIntent{CrateNames: []string{"syn"}, Namespace: &ns, CargoLockDeps: []LockDep{{"serde", "1.0.210"}, {"syn", "2.0.0"}}}},
		{"unknown keys ignored", `{"crate_names":[],"session":"x","nested":{"a":[1]}}`, BuildIntent{CrateNames: []string{}}},
		{"sidecar dimensions", `{"crate_names":[],"namespace":"ci-main","cargo_lock_deps":[],"target":"x86_64-unknown-linux-gnu","profile":"debug","toolchain":"1.82.0"}`,
			BuildIntent{CrateNames: []string{}, Namespace: &ns, CargoLockDeps: []LockDep{}, Target: "x86_64-unknown-linux-gnu", Profile: "debug", Toolchain: "1.82.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got BuildIntent
			if err := json.Unmarshal([]byte(tt.body), &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLockDepRejectsOtherShapes(t *testing.T) {
	for _, body := range []string{`{"name":"serde","version":"1"}`, `["serde"]`, `["a","b","c"]`, `[1,2]`, `"serde@1"`} {
		var d LockDep
		if err := json.Unmarshal([]byte(body), &d); err == nil {
			t.Errorf("%s: decoded as %+v, want an error", body, d)
		}
	}
	b, err := json.Marshal(LockDep{"serde", "1.0.0"})
	if err != nil || string(b) != `["serde","1.0.0"]` {
		t.Fatalf("marshal = %s, %v", b, err)
	}
}

func TestDecodePlanClientRules(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
	}{
		{"missing disposition (vector 2)", `{"planner":"legacy","candidates":[{"cache_key":"abc","crate_name":"serde"}]}`, true},
		{"disposition in PascalCase", `{"disposition":"Execute","candidates":[]}`, true},
		{"UseFallback in PascalCase", `{"disposition":"UseFallback"}`, true},
		{"null disposition", `{"disposition":null}`, true},
		{"null candidates", `{"disposition":"execute","candidates":null}`, true},
		{"candidate without crate_name", `{"disposition":"execute","candidates":[{"cache_key":"k"}]}`, true},
		{"null source", `{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","source":null}]}`, true},
		{"negative size", `{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","size_bytes":-1}]}`, true},
		{"float cost", `{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","compile_time_ms":1.5}]}`, true},
		{"demand index over u32", `{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","demand_index":4294967296}]}`, true},
		{"do_nothing without candidates (vector 34)", `{"plan_id":"p-9","planner":"edge","disposition":"do_nothing","candidates":[]}`, false},
		{"missing candidates", `{"disposition":"use_fallback"}`, false},
		{"unknown keys", `{"disposition":"execute","candidates":[],"stats":{"from_shards":1},"x":1}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodePlan([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrPlanRejected) {
				t.Fatalf("err %v does not wrap ErrPlanRejected", err)
			}
		})
	}
}

func TestSourceDecoding(t *testing.T) {
	tests := []struct {
		body string
		want Source
	}{
		{`{"cache_key":"k","crate_name":"c","source":"telepathy"}`, SourceUnknown},
		{`{"cache_key":"k","crate_name":"c"}`, SourceUnknown},
		{`{"cache_key":"k","crate_name":"c","source":"shard"}`, SourceShard},
		{`{"cache_key":"k","crate_name":"c","source":"key_cache"}`, SourceKeyCache},
		{`{"cache_key":"k","crate_name":"c","source":"manifest"}`, SourceUnknown},
	}
	for _, tt := range tests {
		p, err := DecodePlan([]byte(`{"disposition":"execute","candidates":[` + tt.body + `]}`))
		if err != nil {
			t.Fatalf("%s: %v", tt.body, err)
		}
		c := p.Candidates[0]
		if c.Source != tt.want {
			t.Errorf("%s: source %q, want %q", tt.body, c.Source, tt.want)
		}
		if strings.Contains(tt.body, "telepathy") && (c.CompileTimeMs != 0 || c.SizeBytes != 0 || c.DemandIndex != nil) {
			t.Errorf("metadata should be unknown: %+v", c)
		}
	}
}

// The example execute response of kache-protocol.md 1.9 decodes and encodes
// back to the same bytes: field order and omission rules match Rust's.
func TestPlanRoundTripGolden(t *testing.T) {
	golden, err := os.ReadFile("testdata/execute_plan.json")
	if err != nil {
		t.Fatal(err)
	}
	golden = bytes.TrimSpace(golden)
	p, err := DecodePlan(golden)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, golden) {
		t.Fatalf("round trip differs:\n got %s\nwant %s", got, golden)
	}
}

func TestEmptyPlanHasCandidateArray(t *testing.T) {
	for _, p := range []PrefetchPlan{
		{Disposition: UseFallback},
		{PlanID: "plan-1", Planner: "planner", Disposition: UseFallback, Candidates: []PrefetchCandidate{}},
	} {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"candidates":[]`)) {
			t.Fatalf("%s lacks an empty candidates array", b)
		}
	}
	if _, err := (&PrefetchPlan{Disposition: "Execute"}).AppendJSON(nil); err == nil {
		t.Fatal("encoding an invalid disposition should fail")
	}
}

func TestCandidateAlwaysHasSource(t *testing.T) {
	p := PrefetchPlan{Disposition: Execute, Candidates: []PrefetchCandidate{{CacheKey: "k", CrateName: "c"}}}
	b, _ := p.AppendJSON(nil)
	if !bytes.Contains(b, []byte(`"source":"unknown"`)) {
		t.Fatalf("%s lacks source", b)
	}
}

// FuzzPlanEncoding checks that the hand-written encoder produces JSON that
// encoding/json decodes to the same plan, for any strings and numbers.
func FuzzPlanEncoding(f *testing.F) {
	f.Add("plan-1", "planner", "acdc", "serde", uint64(5), uint64(7), uint32(3), true)
	f.Add("p\"\\\n\x00<>&\u2028", "\xff\xfe", "k", "c\t", uint64(0), uint64(0), uint32(0), false)
	f.Fuzz(func(t *testing.T, id, name, key, crate string, cost, size uint64, demand uint32, hasDemand bool) {
		c := PrefetchCandidate{CacheKey: key, CrateName: crate, CompileTimeMs: cost, SizeBytes: size, Source: SourceHistory}
		if hasDemand {
			c.DemandIndex = &demand
		}
		p := PrefetchPlan{PlanID: id, Planner: name, Disposition: Execute, Candidates: []PrefetchCandidate{c}}
		b, err := p.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %q", b)
		}
		got, err := DecodePlan(b)
		if err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		want := p
		want.PlanID = strings.ToValidUTF8(id, "\ufffd")
		want.Planner = strings.ToValidUTF8(name, "\ufffd")
		want.Candidates[0].CacheKey = strings.ToValidUTF8(key, "\ufffd")
		want.Candidates[0].CrateName = strings.ToValidUTF8(crate, "\ufffd")
		if utf8.ValidString(id) && got.PlanID != id {
			t.Fatalf("plan id %q != %q", got.PlanID, id)
		}
		std, _ := json.Marshal(struct {
			A, B, C, D string
		}{id, name, key, crate})
		var back struct{ A, B, C, D string }
		_ = json.Unmarshal(std, &back)
		if got.PlanID != back.A || got.Planner != back.B || got.Candidates[0].CacheKey != back.C || got.Candidates[0].CrateName != back.D {
			t.Fatalf("strings differ from encoding/json's: got %+v", got)
		}
		if !reflect.DeepEqual(got.Candidates[0].DemandIndex, want.Candidates[0].DemandIndex) ||
			got.Candidates[0].CompileTimeMs != cost || got.Candidates[0].SizeBytes != size {
			t.Fatalf("numbers differ: %+v vs %+v", got.Candidates[0], want.Candidates[0])
		}
	})
}

func BenchmarkPlanAppendJSON(b *testing.B) {
	cands := make([]PrefetchCandidate, 1000)
	for i := range cands {
		d := uint32(i / 2)
		cands[i] = PrefetchCandidate{CacheKey: strings.Repeat("ab", 32), CrateName: "serde_derive", CompileTimeMs: 1234, SizeBytes: 567890, Source: SourceHistory, DemandIndex: &d}
	}
	p := PrefetchPlan{PlanID: "plan-1", Planner: "planner", Disposition: Execute, Candidates: cands}
	buf := make([]byte, 0, 256<<10)
	b.Run("AppendJSON", func(b *testing.B) {
		for b.Loop() {
			buf, _ = p.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		type plain PrefetchPlan // no MarshalJSON method
		for b.Loop() {
			_, _ = json.Marshal(plain(p))
		}
	})
}

// The fast path for lock deps must agree with encoding/json on every input.
func FuzzLockDep(f *testing.F) {
	for _, s := range []string{`["serde","1.0.0"]`, ` [ "a" , "b" ] `, `["a\u0041","b"]`, `["é","1"]`, `["a","b","c"]`, `["a"]`, `[1,"b"]`, `["a\"","b"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return
		}
		var fast LockDep
		fastErr := fast.UnmarshalJSON([]byte(s))
		var v []string
		slowErr := json.Unmarshal([]byte(s), &v)
		if slowErr == nil && len(v) != 2 {
			slowErr = errors.New("not a pair")
		}
		if (fastErr == nil) != (slowErr == nil) {
			t.Fatalf("%q: fast err %v, slow err %v", s, fastErr, slowErr)
		}
		if fastErr == nil && (fast.Name != v[0] || fast.Version != v[1]) {
			t.Fatalf("%q: fast %+v, slow %v", s, fast, v)
		}
	})
}

func TestShardEntryCandidate(t *testing.T) {
	cost, size := uint64(1200), uint64(4096)
	tests := []struct {
		name  string
		entry ShardEntry
		want  PrefetchCandidate
	}{
		{name: "metadata unknown", entry: ShardEntry{CacheKey: "k", CrateName: "c"},
			want: PrefetchCandidate{CacheKey: "k", CrateName: "c"}},
		{name: "compile time only", entry: ShardEntry{CacheKey: "k", CrateName: "c", CompileTimeMs: &cost},
			want: PrefetchCandidate{CacheKey: "k", CrateName: "c", CompileTimeMs: cost}},
		{name: "size only", entry: ShardEntry{CacheKey: "k", CrateName: "c", ArtifactSize: &size},
			want: PrefetchCandidate{CacheKey: "k", CrateName: "c", SizeBytes: size}},
		{name: "both", entry: ShardEntry{CacheKey: "k", CrateName: "c", CompileTimeMs: &cost, ArtifactSize: &size},
			want: PrefetchCandidate{CacheKey: "k", CrateName: "c", CompileTimeMs: cost, SizeBytes: size}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.entry.Candidate(); got != tt.want {
				t.Errorf("Candidate() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The fast path for manifest entries must agree with encoding/json on every
// input, including the error cases.
func FuzzManifestEntry(f *testing.F) {
	for _, s := range []string{
		`{"cache_key":"ab","crate_name":"serde","compile_time_ms":5000,"artifact_size":1048576}`,
		` { "crate_name" : "x" , "cache_key" : "k" } `, `{}`, `null`, `{"cache_key":"a\u0041"}`,
		`{"Cache_Key":"k"}`, `{"compile_time_ms":-1}`, `{"compile_time_ms":1.5}`, `{"compile_time_ms":1e3}`,
		`{"artifact_size":18446744073709551615}`, `{"artifact_size":18446744073709551616}`,
		`{"cache_key":null}`, `{"cache_key":"a","cache_key":"b"}`, `{"other":[1,2]}`, `{"crate_name":"é"}`,
		`{"compile_time_ms":"5"}`, `[]`, `"x"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return
		}
		var fast ManifestEntry
		fastErr := fast.UnmarshalJSON([]byte(s))
		var slow manifestEntryJSON
		slowErr := json.Unmarshal([]byte(s), &slow)
		if (fastErr == nil) != (slowErr == nil) {
			t.Fatalf("%q: fast err %v, slow err %v", s, fastErr, slowErr)
		}
		if fastErr == nil && fast != ManifestEntry(slow) {
			t.Fatalf("%q: fast %+v, slow %+v", s, fast, slow)
		}
	})
}

func TestBuildManifestDecodesEntries(t *testing.T) {
	const doc = `{"version":3,"created":"2026-01-01T00:00:00Z","manifest_key":"x86_64-unknown-linux-gnu","entries":[
	 {"cache_key":"k1","crate_name":"serde","compile_time_ms":5000,"artifact_size":1048576},
	 {"crate_name":"tokio","cache_key":"k\u0032","artifact_size":7}]}`
	var m BuildManifest
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	want := []ManifestEntry{{CacheKey: "k1", CrateName: "serde", CompileTimeMs: 5000, ArtifactSize: 1048576}, {CacheKey: "k2", CrateName: "tokio", ArtifactSize: 7}}
	if !slices.Equal(m.Entries, want) {
		t.Fatalf("entries %+v", m.Entries)
	}
}

// The fast path for kache's intents must agree with encoding/json on every
// input, including the error cases.
func FuzzBuildIntent(f *testing.F) {
	for _, s := range []string{
		`{"crate_names":["serde","syn"],"namespace":null,"cargo_lock_deps":[["serde","1.0.0"],["syn","2.0.0"]]}`,
		` { "crate_names" : [ "a" , "b" ] , "namespace" : "ci-main" , "cargo_lock_deps" : [ [ "a" , "1" ] ] } `,
		`{"crate_names":[],"namespace":"","cargo_lock_deps":[]}`,
		`{}`, `null`, `[]`, `{"crate_names":null}`, `{"crate_names":["a\u0041"]}`, `{"crate_names":["é"]}`,
		`{"crate_names":["a"],"crate_names":["b"]}`, `{"Crate_Names":["a"]}`, `{"namespace":1}`,
		`{"crate_names":["a"],"target":"x86_64-unknown-linux-gnu","profile":"release"}`,
		`{"cargo_lock_deps":[["a","1","2"]]}`, `{"cargo_lock_deps":[["a"]]}`, `{"crate_names":[1]}`,
		`{"crate_names":null,"namespace":null,"cargo_lock_deps":null}`, `{"target":null}`, `{"profile":"a","profile":"b"}`,
		`{"crate_names":["a"],"namespace":"","cargo_lock_deps":[],"target":"x86_64-unknown-linux-gnu","profile":"release","toolchain":"1.82.0"}`,
		`{"toolchain":"1.82.0","runner":{"repository":"r"}}`, `{"target":"\u0078"}`, `{"profile":7}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var direct BuildIntent
		if DecodePlainIntent([]byte(s), &direct) && !json.Valid([]byte(s)) {
			t.Fatalf("%q: invalid JSON read by the fast path", s)
		}
		if !json.Valid([]byte(s)) {
			return
		}
		var fast BuildIntent
		fastErr := json.Unmarshal([]byte(s), &fast)
		type reference BuildIntent // encoding/json's own decoding
		var slow reference
		slowErr := json.Unmarshal([]byte(s), &slow)
		if (fastErr == nil) != (slowErr == nil) {
			t.Fatalf("%q: fast err %v, slow err %v", s, fastErr, slowErr)
		}
		if fastErr == nil && !reflect.DeepEqual(fast, BuildIntent(slow)) {
			t.Fatalf("%q:\nfast %+v\nslow %+v", s, fast, slow)
		}
	})
}

func TestPlainIntentsTakeTheFastPath(t *testing.T) {
	for _, s := range []string{
		`{"crate_names":["serde","syn"],"namespace":null,"cargo_lock_deps":[]}`,
		`{"crate_names":["serde"],"namespace":"ci-main","cargo_lock_deps":[["serde","1.0.0"]]}`,
	} {
		var in BuildIntent
		if !plainIntent([]byte(s), &in) || len(in.CrateNames) == 0 {
			t.Errorf("%s: not read by the fast path", s)
		}
	}
}

// appendString writes what encoding/json writes for a string, byte for
// byte, through either path (plain or escaped).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "serde_json", strings.Repeat("0123456789abcdef", 4), `a"b`, "<&>", "tab\there", "crate_é_with_a_long_name",
		"a\u2028b", "abcdefgh\xff", "\x00\x7f\x80", "12345678\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString([]byte("x"), s); !bytes.Equal(got[1:], want) {
			t.Fatalf("%q: %s, encoding/json %s", s, got[1:], want)
		}
		if plain(s) && string(want) != `"`+s+`"` {
			t.Fatalf("%q is not plain: encoding/json writes %s", s, want)
		}
	})
}

// The fast path for plans decodes exactly what encoding/json decodes, and
// takes only what DecodePlan accepts.
func FuzzDecodePlan(f *testing.F) {
	golden, err := os.ReadFile("testdata/execute_plan.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(golden))
	d := uint32(4)
	p := PrefetchPlan{PlanID: "p-1", Planner: "kache-service", Disposition: Execute, Stats: &PlanStats{IntentCrates: 3, Truncated: []string{"max_keys"}},
		Candidates: []PrefetchCandidate{{CacheKey: strings.Repeat("ab", 32), CrateName: "serde", CompileTimeMs: 12, SizeBytes: 3456, Source: SourceShard, DemandIndex: &d},
			{CacheKey: "k", CrateName: "c", Source: SourceManifest}}}
	b, _ := p.AppendJSON(nil)
	f.Add(string(b))
	for _, s := range []string{
		`{"disposition":"do_nothing"}`, `{"disposition":"execute","candidates":[]}`, `{}`, `{"disposition":"Execute"}`,
		`{"disposition":"execute","candidates":null}`, `{"disposition":"execute","candidates":[{"cache_key":"k"}]}`,
		`{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","size_bytes":-1}]}`,
		`{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","compile_time_ms":1.5}]}`,
		`{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","demand_index":4294967296}]}`,
		`{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","size_bytes":18446744073709551615}]}`,
		`{"disposition":"execute","candidates":[{"cache_key":"k","crate_name":"c","source":"telepathy","size_bytes":012}]}`,
		`{"disposition":"execute","disposition":"do_nothing"}`, `{"disposition":"execute","stats":{"truncated":["a}"]},"x":1}`,
		` { "plan_id" : "p" , "disposition" : "use_fallback" , "candidates" : [ { "crate_name" : "c" , "cache_key" : "k" } ] } `,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fast, ok := plainPlan([]byte(s))
		slow, err := decodePlanJSON([]byte(s))
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("%q: the fast path took what encoding/json refuses: %v", s, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\nfast %+v\nslow %+v", s, fast, slow)
		}
	})
}

// Central's plans take the fast path.
func TestCentralPlansTakeTheFastPath(t *testing.T) {
	d := uint32(1)
	p := PrefetchPlan{PlanID: "p", Planner: "kache-service", Disposition: Execute, Stats: &PlanStats{FromShards: 1},
		Candidates: []PrefetchCandidate{{CacheKey: strings.Repeat("0f", 32), CrateName: "tokio", CompileTimeMs: 1, SizeBytes: 2, Source: SourceHistory, DemandIndex: &d}}}
	b, err := p.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := plainPlan(b)
	if !ok || !reflect.DeepEqual(got, p) {
		t.Fatalf("fast path: %v, %+v", ok, got)
	}
}

// BenchmarkDecodePlan decodes a 500-candidate plan as central writes it
// (about 80 KB): the fast path against encoding/json.
func BenchmarkDecodePlan(b *testing.B) {
	p := PrefetchPlan{PlanID: "plan-1", Planner: "kache-service", Disposition: Execute, Stats: &PlanStats{IntentCrates: 500}}
	for i := range 500 {
		d := uint32(i)
		p.Candidates = append(p.Candidates, PrefetchCandidate{CacheKey: strings.Repeat("ab", 32), CrateName: "crate_" + strconv.Itoa(i),
			CompileTimeMs: uint64(i * 37), SizeBytes: uint64(i * 7919), Source: SourceShard, DemandIndex: &d})
	}
	body, err := p.AppendJSON(nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, fast := range []bool{true, false} {
		b.Run(map[bool]string{true: "fast", false: "encoding-json"}[fast], func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var got PrefetchPlan
				var err error
				if fast {
					got, err = DecodePlan(body)
				} else {
					got, err = decodePlanJSON(body)
				}
				if err != nil || len(got.Candidates) != 500 {
					b.Fatal(err)
				}
			}
		})
	}
}
