// Package e2e holds end-to-end tests: the real binaries against real servers
// (etcd and a Kubernetes API server built from the Go module proxy by
// tools.sh into ~/.cache/kache-planner/tools). They run with `go test -tags e2e ./e2e/`; .ci/run builds the
// servers first. A missing server fails the test under CI=true and skips it
// otherwise (internal/testenv). Without the tag this package has no tests.
package e2e
