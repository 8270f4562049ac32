package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRetentionHistory ingests half a year of a fleet's builds and
// prints the database's size as it goes, once with the 30-day age policy
// (run, swept and compacted every simulated day, as the retention loop
// does) and once without. Run it once: `just bench-retention`, or
// go test ./central/internal/store -run '^$' -bench RetentionHistory -benchtime 1x.
//
// The fleet: 6 workspaces of 400 locked crates, the last 20 their own
// members; 8 builds a day each, every build listing all 400 keys with the
// lock (dep links and an identity). Members get new keys every build, 5
// dependencies a day get a new version, and a new toolchain every 6 weeks
// changes every key.
func BenchmarkRetentionHistory(b *testing.B) {
	for _, policy := range []struct {
		name      string
		retention time.Duration
	}{
		{"retention=30d", 30 * 24 * time.Hour},
		{"retention=off", 0},
	} {
		b.Run(policy.name, func(b *testing.B) {
			for range b.N {
				replayHistory(b, policy.retention)
			}
		})
	}
}

const (
	histDays         = 180
	histWorkspaces   = 6
	histCrates       = 400
	histMembers      = 20
	histBuildsPerDay = 8
	histBumpsPerDay  = 5
	histToolchainDay = 42
	histReportEvery  = 15
)

func replayHistory(b *testing.B, retention time.Duration) {
	dir := filepath.Join(b.TempDir(), "db")
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	day := 24 * time.Hour
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var now time.Time
	s.forget.now = func() time.Time { return now }
	rng := rand.New(rand.NewPCG(1, 2))
	// versions[w][i] is the lock version of crate i of workspace w.
	versions := make([][]int, histWorkspaces)
	for w := range versions {
		versions[w] = make([]int, histCrates)
	}
	toolchain, entries, peak := 0, 0, int64(0)
	began := time.Now()
	// db MiB: the directory after the day's builds; tables: after the
	// day's policy run (expire, sweep, compact), which took policy ms.
	fmt.Fprintf(os.Stdout, "%-14s %4s %9s %10s %9s %9s %10s %8s\n", "policy", "day", "keys", "entries", "db MiB", "tables", "policy ms", "elapsed")
	var policyTook time.Duration
	for d := range histDays {
		if d > 0 && d%histToolchainDay == 0 {
			toolchain++
		}
		for w := range histWorkspaces {
			for range histBumpsPerDay {
				versions[w][rng.IntN(histCrates-histMembers)]++
			}
		}
		for n := range histBuildsPerDay * histWorkspaces {
			w := n % histWorkspaces
			now = start.Add(time.Duration(d)*day + time.Duration(n)*day/time.Duration(histBuildsPerDay*histWorkspaces))
			build := d*histBuildsPerDay + n/histWorkspaces
			obs := historyBuild(w, build, toolchain, versions[w], now)
			if _, err := s.Apply(obs); err != nil {
				b.Fatal(err)
			}
			entries += len(obs.Artifacts)
		}
		// The directory after the day's builds: the tables a compaction
		// replaced are gone by then (goleveldb deletes them a moment
		// after).
		size := dirBytes(b, dir)
		peak = max(peak, size)
		now = start.Add(time.Duration(d+1) * day)
		if retention > 0 {
			t0 := time.Now()
			if _, err := s.Expire(now.Add(-retention).UnixMilli()); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Sweep(); err != nil {
				b.Fatal(err)
			}
			if s.DeletesSinceCompaction() >= 1000 {
				if err := s.Compact(); err != nil {
					b.Fatal(err)
				}
			}
			policyTook = time.Since(t0)
		}
		if (d+1)%histReportEvery == 0 {
			tables, _ := s.TableBytes()
			name := "off"
			if retention > 0 {
				name = fmt.Sprintf("%dd", retention/day)
			}
			fmt.Fprintf(os.Stdout, "retention=%-4s %4d %9d %10d %9.1f %9.1f %10d %8s\n", name, d+1, s.ArtifactCount(), entries,
				mib(size), mib(tables), policyTook.Milliseconds(), time.Since(began).Round(time.Second))
		}
	}
	time.Sleep(time.Second)
	final := dirBytes(b, dir)
	b.ReportMetric(mib(final), "final-MiB")
	b.ReportMetric(mib(peak), "peak-MiB")
	b.ReportMetric(float64(s.ArtifactCount()), "final-keys")
	b.ReportMetric(float64(entries)/time.Since(began).Seconds(), "entries/s")
}

// historyBuild is one build of workspace w: every crate's key, linked to
// its lock dep, as the build identity of the lock.
func historyBuild(w, build, toolchain int, versions []int, at time.Time) Observation {
	obs := Observation{AtMs: at.UnixMilli(), Artifacts: make([]Artifact, histCrates), DepLinks: make([]DepLink, 0, histCrates)}
	ns := fmt.Sprintf("github.com/acme/ws%d/x86_64-unknown-linux-gnu/debug", w)
	deps := make([]string, histCrates)
	for i := range histCrates {
		crate := fmt.Sprintf("ws%d_crate_%d", w, i)
		if i < histCrates-histMembers {
			crate = fmt.Sprintf("dep_%d", (w*97+i)%600) // workspaces share most dependencies
		}
		gen := versions[i]
		if i >= histCrates-histMembers {
			gen = build
		}
		var h [24]byte
		binary.BigEndian.PutUint64(h[:], uint64(w))
		binary.BigEndian.PutUint64(h[8:], uint64(i))
		binary.BigEndian.PutUint64(h[16:], uint64(gen)<<16|uint64(toolchain))
		sum := sha256.Sum256(h[:])
		obs.Artifacts[i] = Artifact{CacheKey: hex.EncodeToString(sum[:]), CrateName: crate, CompileTimeMs: uint64(100 + i), SizeBytes: uint64(10_000 + 37*i),
			Target: "x86_64-unknown-linux-gnu", Profile: "debug", Toolchain: fmt.Sprintf("1.%d.0", 80+toolchain)}
		deps[i] = fmt.Sprintf("%s@0.%d.0", crate, versions[i])
		if i < histCrates-histMembers {
			obs.DepLinks = append(obs.DepLinks, DepLink{Namespace: ns, Dep: deps[i], Artifact: i})
		}
	}
	id := BuildIdentity{Namespace: ns, Target: "x86_64-unknown-linux-gnu", Profile: "debug", Toolchain: fmt.Sprintf("1.%d.0", 80+toolchain), LockDeps: deps}
	all := make([]int, histCrates)
	for i := range all {
		all[i] = i
	}
	obs.Identity = &IdentityBuild{Digest: id.Digest(), Artifacts: all}
	return obs
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
