package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TimelineOutcome says what PutTimeline did, with the names of kache's
// `{"stored": ...}` reply.
type TimelineOutcome string

// The three outcomes of storing a build timeline.
const (
	TimelineInserted TimelineOutcome = "inserted"
	TimelineReplaced TimelineOutcome = "replaced"
	TimelineKept     TimelineOutcome = "kept"
)

// PutTimeline stores a build timeline body (as received) under its client
// record id, together with what it taught (obs), in one synced batch. A record
// already stored is replaced only by one with at least as many units, as kache's
// service does; a kept record teaches nothing new.
func (s *Store) PutTimeline(id string, units int, body []byte, obs Observation) (TimelineOutcome, error) {
	key, err := timelineKey(id)
	if err != nil {
		return "", fmt.Errorf("%w: client record id: %w", ErrInvalid, err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return "", ErrClosed
	}
	outcome := TimelineInserted
	old, err := s.get(key)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return "", err
	default:
		oldUnits, n := binary.Uvarint(old)
		if n > 0 && uint64(units) < oldUnits {
			return TimelineKept, nil
		}
		outcome = TimelineReplaced
	}
	w, err := s.prepare(obs)
	if err != nil {
		return "", err
	}
	val := binary.AppendUvarint(make([]byte, 0, len(body)+binary.MaxVarintLen64), uint64(units))
	w.batch.Put(key, append(val, body...))
	if err := s.commit(w); err != nil {
		return "", err
	}
	return outcome, nil
}

// Timeline returns a stored timeline's unit count and body as received.
func (s *Store) Timeline(id string) (int, []byte, error) {
	key, err := timelineKey(id)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: client record id: %w", ErrInvalid, err)
	}
	b, err := s.get(key)
	if err != nil {
		return 0, nil, err
	}
	units, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, fmt.Errorf("decode timeline %q: %w", id, errKeyEncoding)
	}
	return int(units), b[n:], nil
}
