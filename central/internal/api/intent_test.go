package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

var intentCases = []struct {
	name string
	body string
	fast bool // read by the scanner, not encoding/json
}{
	{"kache", `{"crate_names":["serde","tokio"],"namespace":"ns","cargo_lock_deps":[["serde","1.0.0"],["tokio","1.2.3"]]}`, true},
	{"spaces", " \n{ \"crate_names\" : [ \"a\" , \"b\" ] ,\t\"namespace\":null , \"cargo_lock_deps\" : [ [ \"a\" , \"1\" ] ] }\r\n", true},
	{"empty object", `{}`, true},
	{"empty arrays", `{"crate_names":[],"cargo_lock_deps":[]}`, true},
	{"nulls", `{"crate_names":null,"namespace":null,"cargo_lock_deps":null}`, true},
	{"sidecar fields", `{"crate_names":["a"],"namespace":"","cargo_lock_deps":[],"target":"x86_64-unknown-linux-gnu","profile":"release","toolchain":"1.82.0"}`, true},
	{"escape", `{"crate_names":["a\u0062"]}`, false},
	{"non-ascii", `{"namespace":"é"}`, false},
	{"other field", `{"crate_names":["a"],"budget":{"max_keys":3}}`, false},
	{"features", `{"features":["x"]}`, false},
	{"other case", `{"Crate_Names":["a"]}`, false},
	{"duplicate", `{"crate_names":["a"],"crate_names":["b"]}`, false},
	{"null target", `{"target":null}`, false},
	{"three-element dep", `{"cargo_lock_deps":[["a","1","x"]]}`, false},
	{"number", `{"crate_names":[1]}`, false},
	{"trailing comma", `{"crate_names":["a"],}`, false},
	{"trailing data", `{"crate_names":["a"]} x`, false},
	{"two values", `{}{}`, false},
	{"unterminated", `{"crate_names":["a"`, false},
	{"empty", ``, false},
	{"array", `[]`, false},
}

// decodeIntent answers exactly what encoding/json does, through the
// scanner when it can.
func TestDecodeIntent(t *testing.T) {
	for _, tc := range intentCases {
		t.Run(tc.name, func(t *testing.T) {
			var in wire.BuildIntent
			fast := wire.DecodePlainIntent([]byte(tc.body), &in)
			if fast != tc.fast {
				t.Errorf("scanned: %v, want %v", fast, tc.fast)
			}
			checkIntent(t, []byte(tc.body))
		})
	}
}

func checkIntent(t *testing.T, body []byte) {
	t.Helper()
	var got, want wire.BuildIntent
	gotErr := decodeIntent(body, &got)
	wantErr := reqbody.Unmarshal(body, &want)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("error %v, encoding/json %v", gotErr, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %#v, encoding/json %#v", got, want)
	}
}

func FuzzDecodeIntent(f *testing.F) {
	for _, tc := range intentCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkIntent(t, body)
	})
}

func BenchmarkDecodeIntent(b *testing.B) {
	ns := "bench"
	in := wire.BuildIntent{Namespace: &ns}
	for i := range 500 {
		in.CrateNames = append(in.CrateNames, fmt.Sprintf("crate-%05d", i))
		in.CargoLockDeps = append(in.CargoLockDeps, wire.LockDep{Name: fmt.Sprintf("crate-%05d", i), Version: "1.0.9"})
	}
	body, _ := json.Marshal(in)
	for _, fast := range []bool{true, false} {
		b.Run(fmt.Sprintf("scanner=%v", fast), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var out wire.BuildIntent
				var err error
				if fast {
					err = decodeIntent(body, &out)
				} else {
					err = reqbody.Unmarshal(body, &out)
				}
				if err != nil || len(out.CrateNames) != 500 {
					b.Fatal(err)
				}
			}
		})
	}
}
