package wire

// MissingKeys is the body of central's POST /v1/missing-keys: planned keys
// whose objects the bucket answered 404 for when a sidecar prefetched them.
type MissingKeys struct {
	Keys []MissingKey `json:"keys"`
}

// MissingKey is one key a runner could not fetch.
type MissingKey struct {
	CacheKey  string `json:"cache_key"`
	CrateName string `json:"crate_name"`
}

// MaxMissingKeys bounds the keys of one MissingKeys report.
const MaxMissingKeys = 256

// MissingKeysResult is central's answer to a MissingKeys report: Dropped
// keys stop being planned; Present ones the bucket still has (central
// checked); Unknown ones central did not plan from; Unconfirmed ones could
// not be checked and were kept.
type MissingKeysResult struct {
	Dropped     int `json:"dropped"`
	Present     int `json:"present"`
	Unknown     int `json:"unknown"`
	Unconfirmed int `json:"unconfirmed"`
}
