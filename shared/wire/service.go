package wire

// Error is the one error body of every JSON route: {"error": "..."}. Details
// lists offending items where there are several (an additive field).
type Error struct {
	Error   string        `json:"error"`
	Details []ErrorDetail `json:"details,omitempty"`
}

// ErrorDetail names one offending item of a request.
type ErrorDetail struct {
	Index     int    `json:"index"`
	CacheKey  string `json:"cache_key,omitempty"`
	CrateName string `json:"crate_name,omitempty"`
	Reason    string `json:"reason"`
}

// Health answers /healthz and /readyz.
type Health struct {
	Status  string `json:"status"`
	Planner string `json:"planner"`
	Version string `json:"version"`
	// KacheCompat is the kache release this service is a drop-in for
	// (additive; kache reads only status).
	KacheCompat string `json:"kache_compat,omitempty"`
}
