package wire

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
