package cargolock

import "testing"

func TestCrateName(t *testing.T) {
	tests := []struct {
		pkg  string
		want string
	}{
		{"serde", "serde"},
		{"proc-macro2", "proc_macro2"},
		{"aho-corasick", "aho_corasick"},
		{"tokio_stream", "tokio_stream"},
		{"wasm-bindgen-macro-support", "wasm_bindgen_macro_support"},
		{"xml-rs", "xml"},
		{"rust-ini", "ini"},
		{"md-5", "md5"},
		{"sha-1", "sha1"},
		{"rust-crypto", "crypto"},
		{"rustc-serialize", "rustc_serialize"},
		{"utf-8", "utf8"},
		{"winapi-build", "build"},
		{"kernel32-sys", "kernel32"},
		{"ws2_32-sys", "ws2_32"},
		{"Inflector", "inflector"},
		{"libgit2-sys", "libgit2_sys"},
		{"utf8-ranges", "utf8_ranges"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			if got := CrateName(tt.pkg); got != tt.want {
				t.Fatalf("CrateName(%q) = %q, want %q", tt.pkg, got, tt.want)
			}
		})
	}
}

func TestCrateNameDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		CrateName("serde")
		CrateName("xml-rs")
		CrateName("build_script_build")
	})
	if allocs != 0 {
		t.Fatalf("CrateName allocates %v times per run", allocs)
	}
}
