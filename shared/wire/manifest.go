package wire

import "encoding/json"

// BuildManifest is kache's `_manifests/{key}.json` object (kache-protocol.md
// 4.3), also the body of central's POST /v1/manifests. The fields after
// Entries are ingest extensions with the same names and shapes as in
// BuildIntent.
type BuildManifest struct {
	Version     int             `json:"version"`
	Created     string          `json:"created,omitempty"`
	ManifestKey string          `json:"manifest_key,omitempty"`
	Entries     []ManifestEntry `json:"entries"`

	Namespace     *string        `json:"namespace,omitempty"`
	CargoLockDeps []LockDep      `json:"cargo_lock_deps,omitempty"`
	Target        string         `json:"target,omitempty"`
	Profile       string         `json:"profile,omitempty"`
	Features      []string       `json:"features,omitempty"`
	Runner        *RunnerContext `json:"runner,omitempty"`
	// Toolchain is the rustc version the entries were built with (see
	// BuildIntent.Toolchain).
	Toolchain string `json:"toolchain,omitempty"`
}

// ManifestEntry is one artifact of a build manifest. kache always writes all
// four fields.
type ManifestEntry struct {
	CacheKey      string `json:"cache_key"`
	CrateName     string `json:"crate_name"`
	CompileTimeMs uint64 `json:"compile_time_ms"`
	ArtifactSize  uint64 `json:"artifact_size"`
}

// ShardObject is `_manifests/v3/{namespace}/shards/{hash}.json` (4.4).
type ShardObject struct {
	Version int          `json:"version"`
	Entries []ShardEntry `json:"entries"`
}

// ShardEntry is one shard row; the metadata is omitted when unknown.
type ShardEntry struct {
	CacheKey      string  `json:"cache_key"`
	CrateName     string  `json:"crate_name"`
	CompileTimeMs *uint64 `json:"compile_time_ms,omitempty"`
	ArtifactSize  *uint64 `json:"artifact_size,omitempty"`
}

// Candidate is the plan candidate for a shard row, unknown metadata as 0.
func (e ShardEntry) Candidate() PrefetchCandidate {
	c := PrefetchCandidate{CacheKey: e.CacheKey, CrateName: e.CrateName}
	if e.CompileTimeMs != nil {
		c.CompileTimeMs = *e.CompileTimeMs
	}
	if e.ArtifactSize != nil {
		c.SizeBytes = *e.ArtifactSize
	}
	return c
}

// EntryManifest is `v3/manifests/{crate}/{key}.json` (4.2).
type EntryManifest struct {
	Version       int    `json:"version"`
	CacheKey      string `json:"cache_key"`
	CrateName     string `json:"crate_name"`
	PackKey       string `json:"pack_key"`
	PackBytes     uint64 `json:"pack_bytes"`
	OriginalBytes uint64 `json:"original_bytes"`
	FileCount     uint64 `json:"file_count"`
}

// IngestResult answers POST /v1/manifests.
type IngestResult struct {
	Stored int `json:"stored"`
	New    int `json:"new"`
}

// SeedState is the legacy seed file of kache-protocol.md 2.8.
type SeedState struct {
	Namespaces map[string]SeedNamespace       `json:"namespaces"`
	History    map[string][]PrefetchCandidate `json:"history"`
	KeyCache   map[string][]string            `json:"key_cache"`
}

// SeedNamespace maps "name@version" to shard candidates.
type SeedNamespace struct {
	Deps map[string][]PrefetchCandidate `json:"deps"`
}

// manifestEntryJSON has ManifestEntry's fields without its UnmarshalJSON, for
// the general path.
type manifestEntryJSON ManifestEntry

// UnmarshalJSON reads an entry. Build manifests carry thousands of entries in
// one shape (four keys, plain strings, integers), which is read directly;
// anything else (escapes, other or differently-cased keys, nulls, other
// number forms) goes to encoding/json, so the result is always what
// encoding/json would produce.
func (e *ManifestEntry) UnmarshalJSON(b []byte) error {
	if fast, ok := plainEntry(b); ok {
		*e = fast
		return nil
	}
	return json.Unmarshal(b, (*manifestEntryJSON)(e))
}

func plainEntry(b []byte) (ManifestEntry, bool) {
	var e ManifestEntry
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return e, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return e, skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return e, false
		}
		j = skipSpace(b, j)
		if j >= len(b) || b[j] != ':' {
			return e, false
		}
		j = skipSpace(b, j+1)
		switch key {
		case "cache_key", "crate_name":
			var v string
			if v, j, ok = plainString(b, j); !ok {
				return e, false
			}
			if key == "cache_key" {
				e.CacheKey = v
			} else {
				e.CrateName = v
			}
		case "compile_time_ms", "artifact_size":
			var v uint64
			if v, j, ok = plainUint(b, j); !ok {
				return e, false
			}
			if key == "compile_time_ms" {
				e.CompileTimeMs = v
			} else {
				e.ArtifactSize = v
			}
		default:
			return e, false
		}
		j = skipSpace(b, j)
		if j >= len(b) {
			return e, false
		}
		switch b[j] {
		case ',':
			i = skipSpace(b, j+1)
		case '}':
			return e, skipSpace(b, j+1) == len(b)
		default:
			return e, false
		}
	}
}

// plainUint reads an unsigned integer of at most 19 digits (so it cannot
// overflow) with no sign, fraction or exponent.
func plainUint(b []byte, i int) (uint64, int, bool) {
	var v uint64
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	n := i - start
	if n == 0 || n > 19 || (n > 1 && b[start] == '0') {
		return 0, i, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, i, false
	}
	return v, i, true
}
