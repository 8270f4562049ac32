package wire

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Source says where a candidate came from. The client reads any string it does
// not know as "unknown", so a planner may add sources; JSON null is an error.
type Source string

// The sources a kache client knows, plus SourceManifest from later kache
// versions (read as unknown by older clients).
const (
	SourceShard    Source = "shard"
	SourceHistory  Source = "history"
	SourceKeyCache Source = "key_cache"
	SourceUnknown  Source = "unknown"
	SourceManifest Source = "manifest"
)

// Rank is the client's confidence rank (lower is better): shard 0, history 1,
// key_cache 2, anything else 3.
func (s Source) Rank() int {
	switch s {
	case SourceShard:
		return 0
	case SourceHistory:
		return 1
	case SourceKeyCache:
		return 2
	default:
		return 3
	}
}

// UnmarshalJSON accepts any string, mapping unknown ones to SourceUnknown as the
// client's serde `other` arm does.
func (s *Source) UnmarshalJSON(b []byte) error {
	var v *string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode source: %w", err)
	}
	if v == nil {
		return errors.New("decode source: null is not a source")
	}
	switch Source(*v) {
	case SourceShard, SourceHistory, SourceKeyCache, SourceUnknown:
		*s = Source(*v)
	default:
		*s = SourceUnknown
	}
	return nil
}

// Disposition tells the client what to do with a plan. Only the snake_case
// spellings parse on the client.
type Disposition string

// The three dispositions of kache-protocol.md 1.3.
const (
	Execute     Disposition = "execute"
	UseFallback Disposition = "use_fallback"
	DoNothing   Disposition = "do_nothing"
)

// Valid reports whether d is one of the three spellings the client accepts.
func (d Disposition) Valid() bool {
	return d == Execute || d == UseFallback || d == DoNothing
}

// UnmarshalJSON rejects every spelling the client rejects.
func (d *Disposition) UnmarshalJSON(b []byte) error {
	var v *string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode disposition: %w", err)
	}
	if v == nil || !Disposition(*v).Valid() {
		return fmt.Errorf("decode disposition: unknown variant %s", b)
	}
	*d = Disposition(*v)
	return nil
}
