package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/kache-planner/kache-planner/central/internal/store"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// SeedFile is a parsed legacy seed file (kache-protocol.md 2.8).
type SeedFile struct {
	State  wire.SeedState
	Digest string
}

// ReadSeedFile reads and parses a seed file; missing or unparseable is an
// error, as in kache.
func ReadSeedFile(path string) (*SeedFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seed state file: %w", err)
	}
	var s wire.SeedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse seed state file %s: %w", path, err)
	}
	sum := sha256.Sum256(b)
	return &SeedFile{State: s, Digest: hex.EncodeToString(sum[:])}, nil
}

// Seed returns the observation importing a seed file, in a deterministic order
// (sorted map keys). Earlier candidates of a list are treated as more recent,
// so the file's own order decides variant choice. Candidates a kache client
// would drop (invalid key or crate name) are skipped and counted. Metadata is
// kept.
func Seed(f *SeedFile, now time.Time) (obs store.Observation, skipped int) {
	at := now.UnixMilli()
	obs = store.Observation{AtMs: at, SeedDigest: f.Digest}
	add := func(a store.Artifact, rank int) int {
		if !layout.ValidCacheKey(a.CacheKey) || !layout.ValidCrateName(a.CrateName) {
			skipped++
			return -1
		}
		a.SeenAtMs = at - int64(rank)
		obs.Artifacts = append(obs.Artifacts, a)
		return len(obs.Artifacts) - 1
	}
	for _, ns := range slices.Sorted(maps.Keys(f.State.Namespaces)) {
		if len(ns) > maxName {
			skipped++
			continue
		}
		deps := f.State.Namespaces[ns].Deps
		for _, dep := range slices.Sorted(maps.Keys(deps)) {
			for rank, c := range deps[dep] {
				i := add(fromCandidate(c, c.CrateName), rank)
				if i >= 0 && len(dep) <= maxName {
					obs.DepLinks = append(obs.DepLinks, store.DepLink{Namespace: ns, Dep: dep, Artifact: i})
				}
			}
		}
	}
	for _, crate := range slices.Sorted(maps.Keys(f.State.History)) {
		// kache files history under the map key, not the candidate's name.
		for rank, c := range f.State.History[crate] {
			add(fromCandidate(c, crate), rank)
		}
	}
	for _, crate := range slices.Sorted(maps.Keys(f.State.KeyCache)) {
		for rank, k := range f.State.KeyCache[crate] {
			add(store.Artifact{CacheKey: k, CrateName: crate, ListedOnly: true}, rank)
		}
	}
	return obs, skipped
}

func fromCandidate(c wire.PrefetchCandidate, crate string) store.Artifact {
	return store.Artifact{CacheKey: c.CacheKey, CrateName: crate, CompileTimeMs: c.CompileTimeMs, SizeBytes: c.SizeBytes}
}
