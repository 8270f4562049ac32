// Package memlimit chooses the Go runtime's soft memory limit at startup,
// the same way for both binaries: from the container's cgroup and a
// configured ceiling, unless GOMEMLIMIT says otherwise.
package memlimit

import (
	"os"
	"strconv"
	"strings"
)

// CgroupMax is where cgroup v2 exposes the container's memory limit.
const CgroupMax = "/sys/fs/cgroup/memory.max"

// FromCgroup returns 80% of the memory limit in path (cgroup v2's
// memory.max), so the collector works harder before the kernel kills the
// process; false when there is no limit ("max", no file, unreadable).
func FromCgroup(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false // "max": no limit
	}
	return n / 5 * 4, true
}

// Choose returns the soft limit to set: the lower of FromCgroup(path) and
// ceiling (0: none). It returns false when GOMEMLIMIT is set, which wins
// (the runtime reads it itself), or when neither gives a limit.
func Choose(gomemlimit, path string, ceiling int64) (int64, bool) {
	if gomemlimit != "" {
		return 0, false
	}
	limit, ok := FromCgroup(path)
	if ceiling > 0 && (!ok || ceiling < limit) {
		limit, ok = ceiling, true
	}
	return limit, ok
}
