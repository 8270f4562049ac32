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
	return obs
}
