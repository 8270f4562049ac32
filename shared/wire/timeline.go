package wire

// BuildTimeline is the subset of kache's build-timeline record
// (kache-protocol.md 7) that the planner reads. The record is stored whole as
// received; unknown fields are kept there, not here.
type BuildTimeline struct {
	Schema         int                `json:"schema"`
	ClientRecordID string             `json:"client_record_id"`
	SessionID      string             `json:"session_id,omitempty"`
	KacheVersion   string             `json:"kache_version,omitempty"`
	StartedAtMs    uint64             `json:"started_at_ms,omitempty"`
	FinishedAtMs   uint64             `json:"finished_at_ms,omitempty"`
	Identity       *TimelineIdentity  `json:"identity,omitempty"`
	RootHash       string             `json:"root_hash,omitempty"`
	Context        *RunnerContext     `json:"context,omitempty"`
	Summary        *TimelineSummary   `json:"summary,omitempty"`
	Units          []TimelineUnit     `json:"units"`
	Transfers      []TimelineTransfer `json:"transfers,omitempty"`
}

// TimelineIdentity names the build's identity manifest.
type TimelineIdentity struct {
	LockDigest  string `json:"lock_digest,omitempty"`
	IdentityKey string `json:"identity_key,omitempty"`
	Source      string `json:"source,omitempty"`
}

// TimelineSummary is the plan outcome of one build session.
type TimelineSummary struct {
	PlanID                string `json:"plan_id,omitempty"`
	PlanSource            string `json:"plan_source,omitempty"`
	ClosureReason         string `json:"closure_reason,omitempty"`
	CandidateKeys         uint64 `json:"candidate_keys,omitempty"`
	DownloadedKeys        uint64 `json:"downloaded_keys,omitempty"`
	DownloadedBytes       uint64 `json:"downloaded_bytes,omitempty"`
	UsedKeys              uint64 `json:"used_keys,omitempty"`
	DemandedKeys          uint64 `json:"demanded_keys,omitempty"`
	DemandedCandidateKeys uint64 `json:"demanded_candidate_keys,omitempty"`
	Cancelled             bool   `json:"cancelled,omitempty"`
}

// TimelineUnit is one compilation unit of a build.
type TimelineUnit struct {
	CacheKey      string `json:"cache_key"`
	CrateName     string `json:"crate_name"`
	Result        string `json:"result,omitempty"`
	StartedAtMs   uint64 `json:"started_at_ms,omitempty"`
	FinishedAtMs  uint64 `json:"finished_at_ms,omitempty"`
	CompileTimeMs uint64 `json:"compile_time_ms,omitempty"`
	Size          uint64 `json:"size,omitempty"`
}

// TimelineTransfer is one upload or download of a build.
type TimelineTransfer struct {
	CacheKey        string            `json:"cache_key"`
	CrateName       string            `json:"crate_name"`
	Direction       string            `json:"direction,omitempty"`
	OK              bool              `json:"ok"`
	CompressedBytes uint64            `json:"compressed_bytes,omitempty"`
	StartedAtMs     uint64            `json:"started_at_ms,omitempty"`
	FinishedAtMs    uint64            `json:"finished_at_ms,omitempty"`
	Prefetch        *TransferPrefetch `json:"prefetch,omitempty"`
	Outcome         string            `json:"outcome,omitempty"`
}

// TransferPrefetch attributes a download to a plan.
type TransferPrefetch struct {
	SessionID       string `json:"session_id,omitempty"`
	PlanID          string `json:"plan_id,omitempty"`
	Source          string `json:"source,omitempty"`
	CandidateRank   uint64 `json:"candidate_rank,omitempty"`
	CandidateSource string `json:"candidate_source,omitempty"`
}

// TimelineStored answers POST /v1/build-timelines.
type TimelineStored struct {
	Stored string `json:"stored"`
}
