// Package store is central's ranking index in goleveldb. It is the only
// package that imports goleveldb.
//
// The bucket is the source of truth; this database is a derived index that can
// be rebuilt from it. Writes that an ingest acknowledges are synced.
//
// Key encoding (see keys.go):
//
//	0x01 "schema_version"                    -> uint32 big-endian schema version
//	0x01 "seed/" sha256                       -> seed import marker (import time)
//	0x01 "artifacts"                          -> uint64 count of artifact records
//	0x02 key[32]                              -> artifact record (crate, cost, size, recency, dims)
//	0x03 lp(crate) inv(ms) key[32]            -> crate index: one entry per built variant (cost, size, dims)
//	0x04 lp(crate) key[32]                    -> key-cache index: every known key of a crate
//	0x05 lp(ns) lp(name@version) inv(ms) key[32] -> dep index: keys built with that lock dep (crate, cost, size, dims)
//	0x06 lp(client_record_id)                 -> build timeline: unit count, then the zstd body as received
//	0x07 s3 object key                        -> ETag of a bucket object already crawled
//	0x08 identity[32]                         -> the latest build of an identity: its time and keys (crate, cost, size)
//	0x01 "listing"                            -> uint64 start time (ms) of the last complete listing of v3/manifests/
//	0x09 key[32]                              -> missing from a complete listing: that listing's start time
//	0x0A key[32]                              -> tombstone of a dropped key until its dep and identity entries are swept (a reported 404's until retention): drop time, reason, pending
//	0x0B family[32]                           -> demand: per crate when a family's builds ask for it and its keys left unused (demand.go)
//
// lp(s) is a one-byte length followed by s (strings longer than 255 bytes are
// rejected before they reach the store). Cache keys are stored as their 32 raw
// bytes. inv(ms) is the bitwise NOT of the build time in milliseconds,
// big-endian, so a prefix scan yields the newest variants first and an ingest
// writes one small entry per artifact instead of rewriting a list. Integers in
// values are unsigned varints. An identity is the SHA-256 of what makes two
// builds compile the same keys, member sources aside (BuildIdentity).
//
// Dropping a key (retention.go) deletes its record, crate-index and key-index
// entries at once and hides its dep-index and identity entries from reads
// until Sweep deletes them.
//
// SchemaVersion in keys.go lists the versions; Open upgrades older ones.
package store
