package cargolock

import "strings"

// CrateName maps a Cargo package name to the rustc crate name of its library
// target, which is what kache's object layout, history and key cache are keyed
// by (kache-protocol.md 4.7): BuildIntent.crate_names and Cargo.lock use
// package names (proc-macro2), the layout uses crate names (proc_macro2).
//
// Cargo derives the crate name by replacing '-' with '_'. A few well-known
// packages rename their library target instead ([lib] name = ...); those come
// from a table, since a Cargo.lock does not record target names. A package not
// in the table that renames its target is mapped by the default rule and will
// not match its layout entries.
//
// It does not allocate when pkg has no '-' and is not in the table.
func CrateName(pkg string) string {
	if lib, ok := renamedLib(pkg); ok {
		return lib
	}
	if strings.IndexByte(pkg, '-') < 0 {
		return pkg
	}
	return strings.ReplaceAll(pkg, "-", "_")
}

// renamedLib lists packages whose library target is not their package name
// with '-' replaced by '_'. A switch on constants compiles to a search
// without allocating.
func renamedLib(pkg string) (string, bool) {
	switch pkg {
	case "xml-rs":
		return "xml", true
	case "rust-ini":
		return "ini", true
	case "md-5":
		return "md5", true
	case "sha-1":
		return "sha1", true
	case "rust-crypto":
		return "crypto", true
	case "rustc-serialize":
		return "rustc_serialize", true
	case "utf-8":
		return "utf8", true
	case "rust-argon2":
		return "argon2", true
	case "rust-s3":
		return "s3", true
	case "Inflector":
		return "inflector", true
	// winapi 0.2's per-DLL crates (still in old lock files) name their
	// library after the DLL, and their build helper is plain "build".
	case "winapi-build":
		return "build", true
	case "kernel32-sys":
		return "kernel32", true
	case "advapi32-sys":
		return "advapi32", true
	case "user32-sys":
		return "user32", true
	case "gdi32-sys":
		return "gdi32", true
	case "ws2_32-sys":
		return "ws2_32", true
	case "shell32-sys":
		return "shell32", true
	case "ole32-sys":
		return "ole32", true
	case "dbghelp-sys":
		return "dbghelp", true
	case "psapi-sys":
		return "psapi", true
	case "userenv-sys":
		return "userenv", true
	case "secur32-sys":
		return "secur32", true
	case "crypt32-sys":
		return "crypt32", true
	}
	return "", false
}
