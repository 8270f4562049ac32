package replay

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/klauspost/compress/zstd"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Build timelines (kache-protocol.md 7): after a build, kache posts its
// record to its planner endpoint, the sidecar, which relays it to central
// unchanged, and the sidecar posts its own outcome record of the plan it
// prefetched. The planner policy's builds emit both, from the build as it
// ran under the planner's plan, and central ingests them through its
// timeline route's code (ingest.Service.IngestTimeline: zstd body, decode,
// store). Nothing in them is more than a build reports about itself.

// timelineSchema is the schema kache and the sidecar write.
const timelineSchema = 2

// unitResult labels how a unit was served, for kache's unit records.
func unitResult(u *Unit, d *Download, demandMs float64) string {
	switch {
	case d != nil && d.EndMs <= demandMs:
		return "prefetched"
	case d != nil && d.StartMs <= demandMs:
		return "prefetch_wait"
	case u.Available:
		return "remote"
	}
	return "compiled"
}

// kacheTimeline is kache's record of a build run: every unit with when
// rustc asked for it (the unit's start), the identity key kache derives
// from the lock, the target and the profile of its out-dir, the CI context
// kache reads from the job's environment (kache runs inside the job, with
// or without warm), and its prefetch downloads with their outcomes.
// The trace has no Cargo.lock bytes to hash, so the lock's blob id stands
// in for kache's BLAKE3 digest (both name the lock's content).
func kacheTimeline(b *Build, run *policyRun, project string) wire.BuildTimeline {
	start := uint64(b.StartMs)
	digest := b.LockSHA
	if len(digest) > 16 {
		digest = digest[:16]
	}
	session := "kache-" + project + "-" + strconv.Itoa(b.Seq)
	t := wire.BuildTimeline{
		Schema:         timelineSchema,
		ClientRecordID: session,
		SessionID:      session,
		StartedAtMs:    start,
		FinishedAtMs:   start + uint64(run.sim.WallMs),
		Identity: &wire.TimelineIdentity{
			LockDigest:  digest,
			IdentityKey: "id/" + digest + "/" + b.Job.Target + "/" + b.Job.Profile,
			Source:      "lock_env",
		},
		Context: b.Runner,
		Units:   make([]wire.TimelineUnit, len(b.Units)),
	}
	byKey := prefetchedUnits(b, run.downloads)
	for i := range b.Units {
		u := &b.Units[i]
		at := run.sim.DemandMs[i]
		t.Units[i] = wire.TimelineUnit{
			CacheKey: u.Key, CrateName: u.Crate, Result: unitResult(u, byKey[i], at),
			StartedAtMs: start + uint64(at), CompileTimeMs: u.CompileMs, Size: u.SizeBytes,
		}
	}
	t.Transfers = prefetchTransfers(b, run, session)
	return t
}

// sidecarTimeline is the sidecar's outcome record of the plan it served
// (kache-sidecar's prefetch session report): no units, the transfers with
// their outcomes, the job context it was told (warm's, none without), and
// no identity, which the sidecar does not write.
func sidecarTimeline(b *Build, run *policyRun, project string, runner *wire.RunnerContext) wire.BuildTimeline {
	start := uint64(b.StartMs)
	session := "sidecar-" + project + "-" + strconv.Itoa(b.Seq)
	t := wire.BuildTimeline{
		Schema:         timelineSchema,
		ClientRecordID: "kache-sidecar/" + session,
		SessionID:      session,
		StartedAtMs:    uint64(float64(b.StartMs) + run.dispatchMs),
		FinishedAtMs:   start + uint64(run.sim.WallMs),
		Context:        runner,
		Units:          []wire.TimelineUnit{},
		Transfers:      prefetchTransfers(b, run, session),
	}
	s := &wire.TimelineSummary{PlanID: session, PlanSource: "central", ClosureReason: "build_finished", CandidateKeys: uint64(len(run.downloads))}
	for _, tr := range t.Transfers {
		if tr.OK {
			s.DownloadedKeys++
			s.DownloadedBytes += tr.CompressedBytes
		}
		if len(tr.Outcome) >= 4 && tr.Outcome[:4] == "used" {
			s.UsedKeys++
		}
	}
	s.DemandedCandidateKeys = s.UsedKeys
	t.Summary = s
	return t
}

// prefetchTransfers are a run's prefetch downloads with the sidecar's
// outcome names: used_on_time (local when asked for), used_late (asked for
// while in flight) or unused, then the download's result (fetched, or
// missing for a 404).
func prefetchTransfers(b *Build, run *policyRun, session string) []wire.TimelineTransfer {
	demand := make(map[string]float64, len(b.Units))
	for i := range b.Units {
		if at, ok := demand[b.Units[i].Key]; !ok || run.sim.DemandMs[i] < at {
			demand[b.Units[i].Key] = run.sim.DemandMs[i]
		}
	}
	out := make([]wire.TimelineTransfer, len(run.downloads))
	for i := range run.downloads {
		d := &run.downloads[i]
		outcome := "unused"
		if at, ok := demand[d.Key]; ok && d.Exists {
			outcome = "used_late"
			if d.EndMs <= at {
				outcome = "used_on_time"
			}
		}
		res := "fetched"
		if !d.Exists {
			res = "missing"
		}
		out[i] = wire.TimelineTransfer{
			CacheKey: d.Key, CrateName: d.Crate, Direction: "download", OK: d.Exists, CompressedBytes: d.Size,
			StartedAtMs: uint64(float64(b.StartMs) + d.StartMs), FinishedAtMs: uint64(float64(b.StartMs) + d.EndMs),
			Prefetch: &wire.TransferPrefetch{SessionID: session, PlanID: session, Source: "central", CandidateRank: uint64(i)},
			Outcome:  outcome + "/" + res,
		}
	}
	return out
}

// timelineEncoder compresses records as kache does (zstd level 3).
type timelineEncoder struct{ enc *zstd.Encoder }

func newTimelineEncoder() (*timelineEncoder, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("create zstd encoder: %w", err)
	}
	return &timelineEncoder{enc: enc}, nil
}

func (e *timelineEncoder) encode(t *wire.BuildTimeline) ([]byte, error) {
	raw, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode timeline: %w", err)
	}
	return e.enc.EncodeAll(raw, nil), nil
}
