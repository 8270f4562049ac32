// Package buildinfo reports the version both binaries print and serve: this
// project's own release, and separately the kache release whose protocol and
// chart it is a drop-in for.
package buildinfo

import "strings"

// DefaultVersion is what a build that was not given a release version
// reports (go run, go build); goreleaser sets Version from the git tag.
const DefaultVersion = "0.2.0-dev"

// KacheCompat is the kache release whose planner routes, flags, env vars and
// Helm values this project follows (kache-protocol.md).
const KacheCompat = "0.15.0-rc.2"

// Version is set at link time by goreleaser (-X ...buildinfo.Version=...).
var Version = DefaultVersion

// Commit and Date are set at link time by release builds.
var (
	Commit = "none"
	Date   = "unknown"
)

// Line is the --version line of a binary: its name, its version and the
// kache release it is a drop-in for.
func Line(binary string) string {
	return binary + " " + Resolve(Version) + " (kache_compat " + KacheCompat + ")"
}

// Resolve returns the version a binary reports: a leading "v" is stripped
// unless the value is exactly "v"; empty means the default.
func Resolve(v string) string {
	v = strings.TrimSpace(v)
	if v == "" {
		return DefaultVersion
	}
	if v != "v" {
		v = strings.TrimPrefix(v, "v")
	}
	return v
}
