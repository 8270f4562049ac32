// Package buildinfo reports the version both binaries print and serve.
package buildinfo

import "strings"

// DefaultVersion is the kache release this planner is a drop-in for; a release
// build overrides Version with -ldflags.
const DefaultVersion = "0.15.0-rc.2"

// Version is set at link time by goreleaser (-X ...buildinfo.Version=...).
var Version = DefaultVersion

// Commit and Date are set at link time by release builds.
var (
	Commit = "none"
	Date   = "unknown"
)

// Resolve returns the version kache-service reports: a leading "v" is stripped
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
