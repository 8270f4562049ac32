// Package replay is the replay harness of issue 5: it simulates CI builds
// over a real project's Cargo.lock history (the traces format of
// shared/traces/README.md), asks several prefetch planning policies for a
// plan before every build, and scores each plan against what the build then
// needed. The build model, the policies and the scores are documented in
// README.md next to this file; the numbers in that model are the defaults of
// Config.
//
// Everything is deterministic for a Config (seed included): one goroutine,
// no wall clock, no map iteration where order matters.
package replay
