package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Timeline schemas accepted. kache has shipped 2 and mentions 6; records are
// stored whole, so a range costs nothing.
const (
	MinTimelineSchema = 1
	MaxTimelineSchema = 16
)

// TimelineDecoder decodes zstd timeline bodies with a decoded-size limit.
// It is safe for concurrent use.
type TimelineDecoder struct {
	dec        *zstd.Decoder
	maxDecoded int64
}

// NewTimelineDecoder returns a decoder refusing bodies that decode to more
// than maxDecoded bytes.
func NewTimelineDecoder(maxDecoded int64) (*TimelineDecoder, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(uint64(maxDecoded)),
		zstd.WithDecoderMaxWindow(uint64(min(maxDecoded, 1<<27))))
	if err != nil {
		return nil, fmt.Errorf("create zstd decoder: %w", err)
	}
	return &TimelineDecoder{dec: dec, maxDecoded: maxDecoded}, nil
}

// Close releases the decoder.
func (d *TimelineDecoder) Close() { d.dec.Close() }

// Decode decompresses and parses one timeline body.
func (d *TimelineDecoder) Decode(body []byte) (*wire.BuildTimeline, error) {
	raw, err := d.dec.DecodeAll(body, nil)
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
		return nil, fmt.Errorf("%w: timeline decodes to more than %d bytes", ErrTooLarge, d.maxDecoded)
	case err != nil:
		return nil, fmt.Errorf("%w: body is not zstd: %w", ErrEncoding, err)
	case int64(len(raw)) > d.maxDecoded:
		return nil, fmt.Errorf("%w: timeline decodes to more than %d bytes", ErrTooLarge, d.maxDecoded)
	}
	var t wire.BuildTimeline
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&t); err != nil {
		return nil, &ValidationError{Msg: "body is not a build-timeline record: " + err.Error()}
	}
	if t.Schema < MinTimelineSchema || t.Schema > MaxTimelineSchema {
		return nil, &ValidationError{Msg: fmt.Sprintf("timeline schema %d is not supported (want %d-%d)", t.Schema, MinTimelineSchema, MaxTimelineSchema)}
	}
	if strings.TrimSpace(t.ClientRecordID) == "" {
		return nil, &ValidationError{Msg: "client_record_id is blank"}
	}
	if len(t.ClientRecordID) > maxName {
		return nil, &ValidationError{Msg: "client_record_id longer than 255 bytes"}
	}
	return &t, nil
}

// Timeline returns what a build timeline teaches: every unit with a valid key
// and crate name is an artifact that build used, with its cost and size.
// Invalid units are skipped, not rejected: a timeline is telemetry.
func Timeline(t *wire.BuildTimeline, now time.Time) store.Observation {
	at := int64(t.FinishedAtMs)
	if at <= 0 {
		at = int64(t.StartedAtMs)
	}
	if at <= 0 {
		at = now.UnixMilli()
	}
	obs := store.Observation{AtMs: at}
	for _, u := range t.Units {
		if !layout.ValidCacheKey(u.CacheKey) || !layout.ValidCrateName(u.CrateName) {
			continue
		}
		obs.Artifacts = append(obs.Artifacts, store.Artifact{
			CacheKey:      u.CacheKey,
			CrateName:     u.CrateName,
			CompileTimeMs: u.CompileTimeMs,
			SizeBytes:     u.Size,
		})
	}
	obs.Demand = demand(t)
	return obs
}

// demand is what a timeline teaches about its family's builds: when the
// build asked for each crate (a unit's start, from the build's start) and
// which prefetched keys it used. The family is the job: the repository of
// the record's CI context and the target and profile of its identity key
// (id/{lock digest}/{target}/{profile}, kache-protocol.md 7). A record
// whose identity key names no target teaches nothing here: its times could
// be any job's. Prefetch outcomes are the transfers a plan attributed,
// named "used..." or "unused..." (kache-sidecar's vocabulary); failed
// transfers (404s) are left to retention.
func demand(t *wire.BuildTimeline) *store.DemandObservation {
	var target, profile string
	if t.Identity != nil {
		target, profile = identityDims(t.Identity.IdentityKey)
	}
	if target == "" {
		return nil
	}
	d := &store.DemandObservation{Families: families(t.Context, target, profile)}
	start := t.StartedAtMs
	for _, u := range t.Units {
		if !layout.ValidCacheKey(u.CacheKey) || !layout.ValidCrateName(u.CrateName) {
			continue
		}
		if start > 0 && u.StartedAtMs >= start {
			d.Asked = append(d.Asked, store.CrateAsk{Crate: u.CrateName, AtMs: u.StartedAtMs - start})
		}
		d.Prefetched = append(d.Prefetched, store.PrefetchOutcome{Crate: u.CrateName, CacheKey: u.CacheKey, Used: true})
	}
	for _, tr := range t.Transfers {
		if tr.Prefetch == nil || !tr.OK || tr.Direction == "upload" || !layout.ValidCacheKey(tr.CacheKey) || !layout.ValidCrateName(tr.CrateName) {
			continue
		}
		switch {
		case strings.HasPrefix(tr.Outcome, "used"):
			d.Prefetched = append(d.Prefetched, store.PrefetchOutcome{Crate: tr.CrateName, CacheKey: tr.CacheKey, Used: true})
		case strings.HasPrefix(tr.Outcome, "unused"):
			d.Prefetched = append(d.Prefetched, store.PrefetchOutcome{Crate: tr.CrateName, CacheKey: tr.CacheKey})
		}
	}
	if len(d.Asked) == 0 && len(d.Prefetched) == 0 {
		return nil
	}
	return d
}

// identityDims reads the target and profile of a kache identity key,
// id/{lock digest}/{target}/{profile}; blank when it is not one.
func identityDims(key string) (target, profile string) {
	parts := strings.Split(key, "/")
	if len(parts) != 4 || parts[0] != "id" || parts[2] == "" || len(parts[2]) > maxName || len(parts[3]) > maxName {
		return "", ""
	}
	return parts[2], parts[3]
}

// families are the demand families a record of this job teaches, most
// specific first: with its repository, then without, then without the
// profile, so a plan that knows less (no job context) still finds one.
func families(ctx *wire.RunnerContext, target, profile string) [][32]byte {
	var out [][32]byte
	if ctx != nil && ctx.Repository != "" && len(ctx.Repository) <= maxName {
		out = append(out, store.DemandFamily{Repository: ctx.Repository, Target: target, Profile: profile}.Digest())
	}
	out = append(out, store.DemandFamily{Target: target, Profile: profile}.Digest())
	if profile != "" {
		out = append(out, store.DemandFamily{Target: target}.Digest())
	}
	return out
}
