package layout

import (
	"errors"
	"strings"
	"testing"
)

var (
	key64 = strings.Repeat("0f", 32)
	a64   = strings.Repeat("a", 64)
)

func TestNormalizePrefix(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"default", "artifacts", "artifacts"},
		{"empty stays empty", "", ""},
		{"only whitespace", " \t\n", ""},
		{"only slashes", "///", ""},
		{"trailing slash", "team/", "team"},
		{"leading slash", "/team", "team"},
		{"doubled slashes", "a//b///c", "a/b/c"},
		{"trimmed and collapsed", " /a//b/ ", "a/b"},
		{"nested kept", "team/ci/cache", "team/ci/cache"},
		{"inner space kept", "my cache", "my cache"},
		{"dots inside a segment", "a.b/..c/d..", "a.b/..c/d.."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizePrefix(tt.in)
			if err != nil {
				t.Fatalf("NormalizePrefix(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("NormalizePrefix(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalizePrefixRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"parent segment", "a/../b"},
		{"only parent", ".."},
		{"current segment", "./a"},
		{"trailing current", "a/."},
		{"parent after collapse", "a//..//"},
		{"backslash", `a\b`},
		{"windows path", `C:\cache`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizePrefix(tt.in)
			if !errors.Is(err, ErrInvalidPrefix) {
				t.Fatalf("NormalizePrefix(%q) = %q, %v; want ErrInvalidPrefix", tt.in, got, err)
			}
		})
	}
}

// Section 9 item 35, plus the empty prefix and the list prefixes.
func TestObjectKeys(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"entry manifest", EntryManifestKey("myprefix", "serde", "abc123"), "myprefix/v3/manifests/serde/abc123.json"},
		{"pack", PackKey("myprefix", "serde", "abc123"), "myprefix/v3/packs/serde/abc123.tar.zst"},
		{"shard", ShardObjectKey("artifacts", "x86_64-linux/abc123/release", "deadbeef"),
			"artifacts/_manifests/v3/x86_64-linux/abc123/release/shards/deadbeef.json"},
		{"build manifest", BuildManifestKey("prefix", "mykey"), "prefix/_manifests/mykey.json"},
		{"nested build manifest key", BuildManifestKey("prefix", "ci/main"), "prefix/_manifests/ci/main.json"},
		{"pack without prefix", PackKey("", "serde", "k"), "v3/packs/serde/k.tar.zst"},
		{"entry manifest without prefix", EntryManifestKey("", "serde", "k"), "v3/manifests/serde/k.json"},
		{"shard without prefix", ShardObjectKey("", "ns", "h"), "_manifests/v3/ns/shards/h.json"},
		{"entry manifests prefix", EntryManifestsPrefix("artifacts"), "artifacts/v3/manifests/"},
		{"entry manifests prefix without prefix", EntryManifestsPrefix(""), "v3/manifests/"},
		{"build manifests prefix", BuildManifestsPrefix("team/ci"), "team/ci/_manifests/"},
		{"build manifests prefix without prefix", BuildManifestsPrefix(""), "_manifests/"},
		{"join", Join("a/b", "c"), "a/b/c"},
		{"join without prefix", Join("", "c"), "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// Section 9 item 38.
func TestValidCacheKey(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"64 a", a64, true},
		{"all hex digits", strings.Repeat("0123456789abcdef", 4), true},
		{"empty", "", false},
		{"short", "abc123", false},
		{"63 chars", a64[:63], false},
		{"65 chars", a64 + "a", false},
		{"uppercase", strings.ToUpper(a64), false},
		{"non-hex g", strings.Repeat("g", 64), false},
		{"padded traversal", "../../../etc/passwd" + strings.Repeat("/", 64-19), false},
		{"padded absolute path", "/abs/path" + strings.Repeat("0", 64-9), false},
		{"trailing newline", strings.Repeat("0", 63) + "\n", false},
		{"multibyte", "é" + strings.Repeat("a", 62), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidCacheKey(tt.in); got != tt.want {
				t.Fatalf("ValidCacheKey(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// Section 9 item 38.
func TestValidCrateName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"serde", "serde", true},
		{"underscore", "tokio_stream", true},
		{"hyphen", "foo-bar", true},
		{"build script", "build_script_build", true},
		{"dot", "a.out", true},
		{"single char", "x", true},
		{"uppercase", "Inflector", true},
		{"128 chars", strings.Repeat("a", 128), true},
		{"single dot, as the client allows", ".", true},
		{"empty", "", false},
		{"parent traversal", "../evil", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"double dot inside", "a..b", false},
		{"double dot at end", "ab..", false},
		{"NUL", "nul\x00byte", false},
		{"tab", "tab\there", false},
		{"space", "a b", false},
		{"129 chars", strings.Repeat("a", 129), false},
		{"non-ascii", "sérde", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidCrateName(tt.in); got != tt.want {
				t.Fatalf("ValidCrateName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidatorsDoNotAllocate(t *testing.T) {
	inputs := []string{a64, "serde", "a..b", strings.Repeat("x", 200)}
	var ok bool
	allocs := testing.AllocsPerRun(100, func() {
		for _, s := range inputs {
			ok = ValidCacheKey(s) || ValidCrateName(s)
		}
	})
	_ = ok
	if allocs != 0 {
		t.Fatalf("validators allocate %v times per run", allocs)
	}
}

func TestParseEntryManifestKey(t *testing.T) {
	tests := []struct {
		name      string
		prefix    string
		objectKey string
		wantCrate string
		wantKey   string
		wantOK    bool
	}{
		{"round trip", "artifacts", EntryManifestKey("artifacts", "serde", key64), "serde", key64, true},
		{"round trip without prefix", "", EntryManifestKey("", "proc_macro2", key64), "proc_macro2", key64, true},
		{"round trip nested prefix", "team/ci", EntryManifestKey("team/ci", "a.out", key64), "a.out", key64, true},
		{"traversal before crate", "artifacts", "artifacts/v3/manifests/../x/" + key64 + ".json", "", "", false},
		{"traversal as crate", "artifacts", "artifacts/v3/manifests/../" + key64 + ".json", "", "", false},
		{"nested crate", "artifacts", "artifacts/v3/manifests/a/b/" + key64 + ".json", "", "", false},
		{"no crate segment", "artifacts", "artifacts/v3/manifests/" + key64 + ".json", "", "", false},
		{"empty crate segment", "artifacts", "artifacts/v3/manifests//" + key64 + ".json", "", "", false},
		{"wrong prefix", "artifacts", EntryManifestKey("other", "serde", key64), "", "", false},
		{"prefix without segment boundary", "artifacts", "artifactsX/v3/manifests/serde/" + key64 + ".json", "", "", false},
		{"key under a longer prefix", "artifacts", EntryManifestKey("artifacts/old", "serde", key64), "", "", false},
		{"leading slash without prefix", "", "/" + EntryManifestKey("", "serde", key64), "", "", false},
		{"short key", "artifacts", EntryManifestKey("artifacts", "serde", "abc123"), "", "", false},
		{"uppercase key", "artifacts", EntryManifestKey("artifacts", "serde", strings.ToUpper(a64)), "", "", false},
		{"not json", "artifacts", "artifacts/v3/manifests/serde/" + key64 + ".txt", "", "", false},
		{"pack key", "artifacts", PackKey("artifacts", "serde", key64), "", "", false},
		{"v2 layout", "artifacts", "artifacts/v2/manifests/serde/" + key64 + ".json", "", "", false},
		{"list prefix itself", "artifacts", EntryManifestsPrefix("artifacts"), "", "", false},
		{"empty", "artifacts", "", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crate, key, ok := ParseEntryManifestKey(tt.prefix, tt.objectKey)
			if crate != tt.wantCrate || key != tt.wantKey || ok != tt.wantOK {
				t.Fatalf("ParseEntryManifestKey(%q, %q) = %q, %q, %v; want %q, %q, %v",
					tt.prefix, tt.objectKey, crate, key, ok, tt.wantCrate, tt.wantKey, tt.wantOK)
			}
		})
	}
}

func TestParsePackKey(t *testing.T) {
	tests := []struct {
		name      string
		prefix    string
		objectKey string
		wantCrate string
		wantKey   string
		wantOK    bool
	}{
		{"round trip", "artifacts", PackKey("artifacts", "tokio", key64), "tokio", key64, true},
		{"round trip without prefix", "", PackKey("", "tokio", key64), "tokio", key64, true},
		{"traversal", "artifacts", "artifacts/v3/packs/../x/" + key64 + ".tar.zst", "", "", false},
		{"entry manifest key", "artifacts", EntryManifestKey("artifacts", "tokio", key64), "", "", false},
		{"zst only", "artifacts", "artifacts/v3/packs/tokio/" + key64 + ".zst", "", "", false},
		{"wrong prefix", "artifacts", PackKey("other", "tokio", key64), "", "", false},
		{"bad key", "artifacts", PackKey("artifacts", "tokio", "k"), "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crate, key, ok := ParsePackKey(tt.prefix, tt.objectKey)
			if crate != tt.wantCrate || key != tt.wantKey || ok != tt.wantOK {
				t.Fatalf("ParsePackKey(%q, %q) = %q, %q, %v; want %q, %q, %v",
					tt.prefix, tt.objectKey, crate, key, ok, tt.wantCrate, tt.wantKey, tt.wantOK)
			}
		})
	}
}

func TestParseEntryManifestKeyDoesNotAllocate(t *testing.T) {
	objectKey := EntryManifestKey("artifacts", "serde", key64)
	var crate string
	allocs := testing.AllocsPerRun(100, func() {
		crate, _, _ = ParseEntryManifestKey("artifacts", objectKey)
	})
	_ = crate
	if allocs != 0 {
		t.Fatalf("ParseEntryManifestKey allocates %v times per run", allocs)
	}
}

// FuzzParseEntryManifestKey checks that whatever the parser accepts is safe to
// use (valid crate and key) and is exactly the key the builder would produce.
func FuzzParseEntryManifestKey(f *testing.F) {
	f.Add("artifacts", EntryManifestKey("artifacts", "serde", a64))
	f.Add("", EntryManifestKey("", "serde", a64))
	f.Add("team/ci", EntryManifestKey("team/ci", "a.out", key64))
	f.Add("artifacts", "artifacts/v3/manifests/../x/"+a64+".json")
	f.Add("artifacts", "artifacts/v3/manifests/../"+a64+".json")
	f.Add("artifacts", "artifacts/v3/manifests/a/b/"+a64+".json")
	f.Add("a/", "a//v3/manifests/x/"+a64+".json")
	f.Fuzz(func(t *testing.T, prefix, objectKey string) {
		crate, key, ok := ParseEntryManifestKey(prefix, objectKey)
		if !ok {
			return
		}
		if !ValidCrateName(crate) {
			t.Fatalf("accepted %q with invalid crate %q", objectKey, crate)
		}
		if !ValidCacheKey(key) {
			t.Fatalf("accepted %q with invalid key %q", objectKey, key)
		}
		if rebuilt := EntryManifestKey(prefix, crate, key); rebuilt != objectKey {
			t.Fatalf("accepted %q as (%q, %q), which rebuilds to %q", objectKey, crate, key, rebuilt)
		}
	})
}

func BenchmarkParseEntryManifestKey(b *testing.B) {
	objectKey := EntryManifestKey("artifacts", "proc_macro2", key64)
	for b.Loop() {
		ParseEntryManifestKey("artifacts", objectKey)
	}
}
