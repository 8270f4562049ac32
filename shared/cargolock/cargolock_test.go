package cargolock

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

const crates = "registry+https://github.com/rust-lang/crates.io-index"

// Section 9 item 37.
func TestParseFileVector37(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []wire.LockDep
	}{
		{"v3 names sorted", "vector37.lock", []wire.LockDep{{Name: "my-crate", Version: "0.1.0"}, {Name: "serde", Version: "1.0.210"}, {Name: "tokio", Version: "1.36.0"}}},
		{"extra fields ignored", "vector37_extras.lock", []wire.LockDep{{Name: "my-crate", Version: "0.1.0"}, {Name: "serde", Version: "1.0.210"}, {Name: "tokio", Version: "1.36.0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if got := l.Deps(); !slices.Equal(got, tt.want) {
				t.Fatalf("Deps() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseFileMissing(t *testing.T) {
	_, err := ParseFile(filepath.Join("testdata", "missing", "Cargo.lock"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ParseFile(missing) error = %v, want fs.ErrNotExist", err)
	}
}

func TestParseFormats(t *testing.T) {
	tests := []struct {
		name string
		file string
		want *Lockfile
	}{
		{"v1 with metadata checksums", "v1.lock", &Lockfile{Version: 1, Packages: []Package{
			{Name: "aho-corasick", Version: "0.6.3", Source: crates, Dependencies: []DepRef{{"memchr", "1.0.1"}}},
			{Name: "grep", Version: "0.1.6", Dependencies: []DepRef{{"memchr", "1.0.1"}, {"regex", "0.2.2"}}},
			{Name: "libc", Version: "0.2.29", Source: crates},
			{Name: "memchr", Version: "1.0.1", Source: crates, Dependencies: []DepRef{{"libc", "0.2.29"}}},
			{Name: "regex", Version: "0.2.2", Source: crates, Dependencies: []DepRef{{"aho-corasick", "0.6.3"}, {"memchr", "1.0.1"}}},
			{Name: "ripgrep", Version: "0.6.0", Dependencies: []DepRef{{"grep", "0.1.6"}, {"memchr", "1.0.1"}, {"regex", "0.2.2"}}},
		}}},
		{"v1 with a root table", "v1_root.lock", &Lockfile{Version: 1, Packages: []Package{
			{Name: "ripgrep", Version: "0.6.0", Dependencies: []DepRef{{"grep", "0.1.6"}, {"memchr", "1.0.1"}, {"regex", "0.2.2"}}},
			{Name: "aho-corasick", Version: "0.6.3", Source: crates, Dependencies: []DepRef{{"memchr", "1.0.1"}}},
			{Name: "grep", Version: "0.1.6", Dependencies: []DepRef{{"memchr", "1.0.1"}, {"regex", "0.2.2"}}},
			{Name: "libc", Version: "0.2.29", Source: crates},
			{Name: "memchr", Version: "1.0.1", Source: crates, Dependencies: []DepRef{{"libc", "0.2.29"}}},
			{Name: "regex", Version: "0.2.2", Source: crates, Dependencies: []DepRef{{"aho-corasick", "0.6.3"}, {"memchr", "1.0.1"}}},
		}}},
		{"v2 without version key", "v2.lock", &Lockfile{Version: 2, Packages: []Package{
			{Name: "app", Version: "0.1.0", Dependencies: []DepRef{{"cfg-if", "0.1.10"}, {"cfg-if", "1.0.0"}, {"log", ""}}},
			{Name: "cfg-if", Version: "0.1.10", Source: crates},
			{Name: "cfg-if", Version: "1.0.0", Source: crates},
			{Name: "log", Version: "0.4.14", Source: crates, Dependencies: []DepRef{{"cfg-if", "1.0.0"}}},
		}}},
		{"v3", "v3.lock", &Lockfile{Version: 3, Packages: []Package{
			{Name: "my-crate", Version: "0.1.0", Dependencies: []DepRef{{"proc-macro2", ""}, {"serde", ""}, {"tokio", ""}}},
			{Name: "proc-macro2", Version: "1.0.86", Source: crates, Dependencies: []DepRef{{"unicode-ident", ""}}},
			{Name: "serde", Version: "1.0.210", Source: crates},
			{Name: "tokio", Version: "1.36.0", Source: crates},
			{Name: "unicode-ident", Version: "1.0.12", Source: crates},
		}}},
		{"v4 with a git source", "v4.lock", &Lockfile{Version: 4, Packages: []Package{
			{Name: "bat", Version: "0.25.0", Dependencies: []DepRef{{"bat-macros", ""}, {"syntect", "5.2.0"}, {"windows-sys", "0.59.0"}}},
			{Name: "bat-macros", Version: "0.1.0", Dependencies: []DepRef{{"syntect", "5.2.0"}}},
			{Name: "syntect", Version: "5.2.0", Source: crates, Dependencies: []DepRef{{"windows-sys", "0.52.0"}}},
			{Name: "syntect", Version: "5.2.0", Source: "git+https://github.com/trishume/syntect?branch=master#7fe13c0fd53cdfa0f9fea1aa14c5ba37f81d8b71"},
			{Name: "windows-sys", Version: "0.52.0", Source: crates},
			{Name: "windows-sys", Version: "0.59.0", Source: crates},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseFile() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name        string
		input       string
		wantVersion int
		wantDeps    []wire.LockDep
	}{
		{"empty input", "", 1, []wire.LockDep{}},
		{"version only", "version = 4\n", 4, []wire.LockDep{}},
		{"future version", "version = 5\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\n", 5, []wire.LockDep{{Name: "a", Version: "1.0.0"}}},
		{"unknown tables and keys", `version = 3
generator = "x"

[[package]]
name = "a"
version = "1.0.0"
replace = "b 1.0.0"
features = ["x"]

[metadata]
"checksum a 1.0.0" = "<none>"

[[patch.unused]]
name = "b"
version = "2.0.0"
`, 3, []wire.LockDep{{Name: "a", Version: "1.0.0"}}},
		{"bytewise order and duplicates", `version = 3
[[package]]
name = "a_b"
version = "1.0.0"
[[package]]
name = "a-b"
version = "1.0.0"
[[package]]
name = "Zed"
version = "1.0.0"
[[package]]
name = "a-b"
version = "1.0.0"
source = "git+https://example.com/a-b#0"
[[package]]
name = "a-b"
version = "1.0.0-rc.1"
`, 3, []wire.LockDep{
			{Name: "Zed", Version: "1.0.0"}, {Name: "a-b", Version: "1.0.0"}, {Name: "a-b", Version: "1.0.0-rc.1"}, {Name: "a_b", Version: "1.0.0"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse(strings.NewReader(tt.input))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if l.Version != tt.wantVersion {
				t.Fatalf("Version = %d, want %d", l.Version, tt.wantVersion)
			}
			got := l.Deps()
			if got == nil || !slices.Equal(got, tt.wantDeps) {
				t.Fatalf("Deps() = %#v, want %#v", got, tt.wantDeps)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr error // nil: any error
	}{
		{"not toml", "[[package]\nname = ", nil},
		{"package without name", "[[package]]\nversion = \"1.0.0\"\n", ErrInvalid},
		{"package without version", "[[package]]\nname = \"serde\"\n", ErrInvalid},
		{"root without version", "[root]\nname = \"app\"\n", ErrInvalid},
		{"empty dependency", "[[package]]\nname = \"a\"\nversion = \"1\"\ndependencies = [\"\"]\n", ErrInvalid},
		{"dependency with empty version", "[[package]]\nname = \"a\"\nversion = \"1\"\ndependencies = [\"b \"]\n", ErrInvalid},
		{"dependency source without parentheses", "[[package]]\nname = \"a\"\nversion = \"1\"\ndependencies = [\"b 1.0.0 registry+x\"]\n", ErrInvalid},
		{"dependency with a leading space", "[[package]]\nname = \"a\"\nversion = \"1\"\ndependencies = [\" b\"]\n", ErrInvalid},
		{"version zero", "version = 0\n", ErrInvalid},
		{"negative version", "version = -3\n", ErrInvalid},
		{"version as a string", "version = \"3\"\n", nil},
		{"package not an array of tables", "package = \"serde\"\n", nil},
		{"name not a string", "[[package]]\nname = 1\nversion = \"1\"\n", nil},
		{"arrays nested past the bound", "version = 3\nx = " + strings.Repeat("[", 500_000) + strings.Repeat("]", 500_000) + "\n", ErrInvalid},
		{"inline tables nested past the bound", "version = 3\nx = " + strings.Repeat("{a=", 100) + "1" + strings.Repeat("}", 100) + "\n", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse(strings.NewReader(tt.input))
			if err == nil {
				t.Fatalf("Parse() = %+v, want an error", l)
			}
			if !strings.HasPrefix(err.Error(), "parse Cargo.lock: ") {
				t.Fatalf("error %q is not wrapped as parse Cargo.lock", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v does not wrap %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	_, err := Parse(io.LimitReader(newlines{}, MaxSize+1))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Parse(MaxSize+1 bytes) error = %v, want ErrTooLarge", err)
	}
}

// A regular file over the cap is refused from its size, without reading it.
func TestParseFileTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "Cargo.lock")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	if _, err := ParseFile(p); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ParseFile(MaxSize+1 bytes) error = %v, want ErrTooLarge", err)
	}
}

// Brackets inside strings and comments do not count as nesting.
func TestTooDeep(t *testing.T) {
	deep := strings.Repeat("[", 40)
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"x = " + deep, true},
		{`x = "` + deep + `"`, false},
		{`x = "\"` + deep + `"`, false},
		{"x = '" + deep + "'", false},
		{`x = """` + "\n" + deep + `"""`, false},
		{"x =  + deep + ", false},
		{"# " + deep + "\nx = 1", false},
		{"[[package]]\ndependencies = [\"a\", \"b\"]\n", false},
	} {
		if got := tooDeep(tt.in, 32); got != tt.want {
			t.Errorf("tooDeep(%.30q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// newlines is an endless stream of '\n', valid TOML of any length.
type newlines struct{}

var newlineBlock = []byte(strings.Repeat("\n", 32<<10))

func (newlines) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], newlineBlock)
	}
	return n, nil
}

func TestMembers(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"v1 path packages", "v1.lock", []string{"grep", "ripgrep"}},
		{"v1 root table", "v1_root.lock", []string{"ripgrep", "grep"}},
		{"v3 single member", "v3.lock", []string{"my-crate"}},
		{"no sources at all", "vector37.lock", []string{"serde", "tokio", "my-crate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			var got []string
			for _, p := range l.Members() {
				got = append(got, p.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Members() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	l := &Lockfile{Packages: []Package{
		{Name: "cfg-if", Version: "0.1.10", Source: crates},
		{Name: "cfg-if", Version: "1.0.0", Source: crates},
		{Name: "log", Version: "0.4.14", Source: crates},
		{Name: "itertools", Version: "0.13.0", Source: crates, Dependencies: []DepRef{{"either", ""}}},
		{Name: "itertools", Version: "0.13.0", Source: crates},
	}}
	tests := []struct {
		name       string
		ref        DepRef
		wantSource string
		wantDeps   int
		wantOK     bool
	}{
		{"omitted version, one package", DepRef{"log", ""}, crates, 0, true},
		{"exact version", DepRef{"cfg-if", "1.0.0"}, crates, 0, true},
		{"omitted version, several versions", DepRef{"cfg-if", ""}, "", 0, false},
		{"unknown version", DepRef{"cfg-if", "2.0.0"}, "", 0, false},
		{"unknown package", DepRef{"serde", ""}, "", 0, false},
		{"duplicated entry resolves to the first", DepRef{"itertools", ""}, crates, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := l.Lookup(tt.ref)
			if ok != tt.wantOK {
				t.Fatalf("Lookup(%v) ok = %v, want %v", tt.ref, ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if p.Name != tt.ref.Name || (tt.ref.Version != "" && p.Version != tt.ref.Version) || p.Source != tt.wantSource || len(p.Dependencies) != tt.wantDeps {
				t.Fatalf("Lookup(%v) = %+v", tt.ref, p)
			}
		})
	}
}

// tracesDir holds real Cargo.lock histories; the shared folder is a sibling
// of the repository root.
const tracesDir = "../../../shared/traces"

func realLocks(tb testing.TB) []string {
	tb.Helper()
	if _, err := os.Stat(tracesDir); errors.Is(err, fs.ErrNotExist) {
		tb.Skipf("%s does not exist", tracesDir)
	}
	files, err := filepath.Glob(filepath.Join(tracesDir, "*", "locks", "*.lock"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatalf("no lock files under %s", tracesDir)
	}
	return files
}

func TestParseRealLocks(t *testing.T) {
	for _, path := range realLocks(t) {
		name := filepath.Base(filepath.Dir(filepath.Dir(path))) + "/" + filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l, err := ParseFile(path)
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if len(l.Packages) == 0 {
				t.Fatal("no packages")
			}
			if len(l.Members()) == 0 {
				t.Fatal("no workspace members")
			}
			deps := l.Deps()
			if !slices.IsSortedFunc(deps, compareLockDeps) || len(slices.CompactFunc(slices.Clone(deps), func(a, b wire.LockDep) bool { return a == b })) != len(deps) {
				t.Fatal("Deps() not sorted and unique")
			}
			checkOrder(t, l, l.DependencyOrder())
		})
	}
}

func compareLockDeps(a, b wire.LockDep) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.Version, b.Version)
}

func BenchmarkParse(b *testing.B) {
	var largest string
	var size int64
	for _, path := range realLocks(b) {
		if fi, err := os.Stat(path); err == nil && fi.Size() > size {
			largest, size = path, fi.Size()
		}
	}
	data, err := os.ReadFile(largest)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(strings.NewReader(string(data))); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts can
// be used: Deps sorted and unique, DependencyOrder listing each name once.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.lock"))
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[[package]]\nname = \"a\"\nversion = \"1\"\ndependencies = [\"a\", \"b 1 (x)\"]\n[[package]]\nname = \"b\"\nversion = \"1\"\ndependencies = [\"a 1\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		deps := l.Deps()
		if deps == nil || !slices.IsSortedFunc(deps, compareLockDeps) {
			t.Fatalf("Deps() = %v", deps)
		}
		l.Members()
		for _, p := range l.Packages {
			for _, d := range p.Dependencies {
				l.Lookup(d)
			}
		}
		checkOrder(t, l, l.DependencyOrder())
		if len(l.Packages) > 0 {
			root := l.Packages[0].Name
			if order := l.DependencyOrder(root); !slices.Contains(order, root) {
				t.Fatalf("DependencyOrder(%q) = %v, missing the root", root, order)
			}
		}
	})
}
