// Package e2e holds end-to-end tests: the real binaries against real servers
// (etcd and a Kubernetes API server built from the Go module proxy by
// tools.sh into ~/.cache/kache-planner/tools). They run with `just e2e`
// (which builds every tool first) or `go test -tags e2e ./e2e/`; .ci/run
// builds the tools first. A missing tool fails the test, with the command that
// builds it (KACHE_E2E_SKIP_MISSING_TOOLS=1 skips instead, by choice).
// Without the tag this package has no tests.
package e2e
