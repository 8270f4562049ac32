package ingest

import (
	"fmt"
	"strings"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// MissingKeys validates a report of keys a runner got 404s for, as a
// manifest's entries are validated, and returns its keys without repeats.
// Any invalid key rejects the report, naming every offender.
func MissingKeys(r *wire.MissingKeys) ([]wire.MissingKey, error) {
	if len(r.Keys) > wire.MaxMissingKeys {
		return nil, fmt.Errorf("%w: %d keys in one report, at most %d", ErrTooLarge, len(r.Keys), wire.MaxMissingKeys)
	}
	var details []wire.ErrorDetail
	seen := make(map[string]bool, len(r.Keys))
	keys := make([]wire.MissingKey, 0, len(r.Keys))
	for i, k := range r.Keys {
		var reasons []string
		if !layout.ValidCacheKey(k.CacheKey) {
			reasons = append(reasons, "cache_key is not 64 lowercase hex digits")
		}
		if !layout.ValidCrateName(k.CrateName) {
			reasons = append(reasons, "crate_name is not 1-128 of [A-Za-z0-9_.-] without \"..\"")
		}
		if len(reasons) > 0 {
			details = append(details, wire.ErrorDetail{Index: i, CacheKey: clip(k.CacheKey), CrateName: clip(k.CrateName), Reason: strings.Join(reasons, "; ")})
			continue
		}
		if !seen[k.CacheKey] {
			seen[k.CacheKey] = true
			keys = append(keys, k)
		}
	}
	if len(details) > 0 {
		return nil, &ValidationError{Msg: fmt.Sprintf("missing-keys report rejected: %d invalid keys", len(details)), Details: details}
	}
	return keys, nil
}
