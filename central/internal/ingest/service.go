package ingest

import (
	"fmt"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// Store is the part of the store ingest writes to.
type Store interface {
	Apply(obs store.Observation) (store.ApplyResult, error)
	PutTimeline(id string, units int, body []byte, obs store.Observation) (store.TimelineOutcome, error)
	SeedImported(digest string) (bool, error)
}

// Service validates and stores what builds report.
type Service struct {
	st       Store
	timeline *TimelineDecoder
	now      func() time.Time
}

// NewService returns an ingest service writing to st.
func NewService(st Store, maxTimelineDecoded int64) (*Service, error) {
	dec, err := NewTimelineDecoder(maxTimelineDecoded)
	if err != nil {
		return nil, err
	}
	return &Service{st: st, timeline: dec, now: time.Now}, nil
}

// Close releases the timeline decoder.
func (s *Service) Close() { s.timeline.Close() }

// IngestManifest stores one build manifest atomically.
func (s *Service) IngestManifest(m *wire.BuildManifest) (wire.IngestResult, error) {
	obs, err := Manifest(m, s.now())
	if err != nil {
		return wire.IngestResult{}, err
	}
	res, err := s.st.Apply(obs)
	if err != nil {
		return wire.IngestResult{}, fmt.Errorf("store manifest: %w", err)
	}
	return wire.IngestResult{Stored: res.Stored, New: res.New}, nil
}

// IngestTimeline decodes a zstd build-timeline body and stores it, as
// received, with what it teaches.
func (s *Service) IngestTimeline(body []byte) (store.TimelineOutcome, error) {
	t, err := s.timeline.Decode(body)
	if err != nil {
		return "", err
	}
	out, err := s.st.PutTimeline(t.ClientRecordID, len(t.Units), body, Timeline(t, s.now()))
	if err != nil {
		return "", fmt.Errorf("store build timeline: %w", err)
	}
	return out, nil
}

// ImportSeed imports a seed file once: a file already imported (same bytes)
// is skipped, so restarts do not reshuffle recency. It returns whether it
// imported and how many invalid candidates it skipped.
func (s *Service) ImportSeed(f *SeedFile) (imported bool, skipped int, err error) {
	done, err := s.st.SeedImported(f.Digest)
	if err != nil {
		return false, 0, fmt.Errorf("check seed import: %w", err)
	}
	if done {
		return false, 0, nil
	}
	obs, skipped := Seed(f, s.now())
	if _, err := s.st.Apply(obs); err != nil {
		return false, skipped, fmt.Errorf("import seed: %w", err)
	}
	return true, skipped, nil
}
