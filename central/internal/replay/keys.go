package replay

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
)

// Job is one CI job of a commit: what its build compiles for. Every job is a
// separate build on a cold runner.
type Job struct {
	Target   string `json:"target"`
	Profile  string `json:"profile"`
	Features string `json:"features"`
}

// DefaultJobs are two targets times debug/release, a common CI matrix.
func DefaultJobs() []Job {
	return []Job{
		{Target: "x86_64-unknown-linux-gnu", Profile: "debug", Features: "default"},
		{Target: "x86_64-unknown-linux-gnu", Profile: "release", Features: "default"},
		{Target: "aarch64-apple-darwin", Profile: "debug", Features: "default"},
		{Target: "aarch64-apple-darwin", Profile: "release", Features: "default"},
	}
}

// Rust 1.N is released rustEpoch + N*releasePeriod: every six weeks since
// 1.1 (2015-06-25); the epoch is six weeks before that, a day before 1.0.
const (
	rustEpoch     int64 = 1431561600 // 2015-05-14 UTC
	releasePeriod int64 = 42 * 86400
)

// Toolchain is the stable Rust a CI job uses at a time: the newest release
// at least lag seconds old, as CI images pick up a release a few days late.
func Toolchain(unixSec, lag int64) string {
	n := (unixSec - lag - rustEpoch) / releasePeriod
	if n < 0 {
		n = 0
	}
	return fmt.Sprintf("1.%d.0", n)
}

// keySchema versions the key derivation below; it is hashed into every key.
const keySchema = "kache-replay-key/1"

// UnitKeys derives the cache key of every package a build compiles, indexed
// like g.Packages ("" for packages not built). Like kache's keys, each key
// hashes the crate's identity, the target, profile, features and toolchain,
// and the keys of its dependencies, so a change low in the graph changes
// every key above it. A registry or git package is identified by name,
// version and source; a workspace member (no source) by its directory's tree
// hash from members, so an unchanged member keeps its key across commits. A
// source-less package missing from members is identified by the lock file
// (lockSHA), so it is rebuilt whenever the lock changes.
func UnitKeys(g *LockGraph, members map[string]string, job Job, toolchain, lockSHA string) []string {
	keys := make([]string, len(g.Packages))
	buf := make([]byte, 0, 1024)
	var depKeys []string
	for _, i := range g.Units {
		buf = append(buf[:0], keySchema...)
		buf = appendField(buf, identity(g, i, members, lockSHA))
		buf = appendField(buf, job.Target)
		buf = appendField(buf, job.Profile)
		buf = appendField(buf, job.Features)
		buf = appendField(buf, toolchain)
		depKeys = depKeys[:0]
		for _, j := range g.Deps[i] {
			depKeys = append(depKeys, "d:"+keys[j])
		}
		for _, j := range g.Cyclic[i] {
			depKeys = append(depKeys, "c:"+identity(g, j, members, lockSHA))
		}
		slices.Sort(depKeys)
		for _, k := range depKeys {
			buf = appendField(buf, k)
		}
		sum := sha256.Sum256(buf)
		keys[i] = hex.EncodeToString(sum[:])
	}
	return keys
}

func identity(g *LockGraph, i int, members map[string]string, lockSHA string) string {
	p := &g.Packages[i]
	switch {
	case p.Source != "":
		return p.Name + "@" + p.Version + "+" + p.Source
	case members[p.Name] != "":
		return p.Name + "@path:" + members[p.Name]
	default:
		return p.Name + "@" + p.Version + "+lock:" + lockSHA
	}
}

// appendField writes a newline-separated field; names and hashes hold no
// newlines, so fields cannot run together.
func appendField(buf []byte, s string) []byte {
	buf = append(buf, '\n')
	return append(buf, s...)
}
