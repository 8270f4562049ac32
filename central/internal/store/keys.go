package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	prefixMeta       byte = 0x01
	prefixArtifact   byte = 0x02
	prefixCrateIndex byte = 0x03
	prefixCrateKey   byte = 0x04
	prefixDep        byte = 0x05
	prefixTimeline   byte = 0x06
	prefixObject     byte = 0x07
	prefixIdentity   byte = 0x08
	prefixSuspect    byte = 0x09
	prefixTombstone  byte = 0x0A
	prefixDemand     byte = 0x0B
)

// SchemaVersion is the key encoding this package writes. Open refuses a
// database written by a newer version and upgrades an older one (see
// migrate).
//
//	1: the first encoding.
//	2: a toolchain after the target and profile of artifact records and
//	   index entries (absent in version 1 values: unknown), and the identity
//	   table (0x08).
const SchemaVersion uint32 = 2

var (
	keySchemaVersion = []byte{prefixMeta, 's', 'c', 'h', 'e', 'm', 'a', '_', 'v', 'e', 'r', 's', 'i', 'o', 'n'}
	keyArtifactCount = []byte{prefixMeta, 'a', 'r', 't', 'i', 'f', 'a', 'c', 't', 's'}
	keyListing       = []byte{prefixMeta, 'l', 'i', 's', 't', 'i', 'n', 'g'}
)

var errKeyEncoding = errors.New("key encoding")

// rawKey is a cache key's 32 bytes.
type rawKey [32]byte

func parseCacheKey(s string) (rawKey, error) {
	var k rawKey
	if len(s) != 64 {
		return k, fmt.Errorf("%w: cache key %q is not 64 hex digits", errKeyEncoding, s)
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("%w: cache key %q: %w", errKeyEncoding, s, err)
	}
	return k, nil
}

func (k rawKey) String() string { return hex.EncodeToString(k[:]) }

func appendLP(dst []byte, s string) ([]byte, error) {
	if len(s) > 255 {
		return dst, fmt.Errorf("%w: %d-byte string exceeds 255", errKeyEncoding, len(s))
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...), nil
}

// readLP returns the length-prefixed string at the start of b and the rest.
func readLP(b []byte) (string, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, fmt.Errorf("%w: truncated string", errKeyEncoding)
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], nil
}

func artifactKey(k rawKey) []byte {
	return append([]byte{prefixArtifact}, k[:]...)
}

// crateIndexPrefix is where a crate's built variants are listed, newest
// first: each entry's key ends with the inverted build time and the cache key.
func crateIndexPrefix(crate string) ([]byte, error) {
	return appendLP([]byte{prefixCrateIndex}, crate)
}

// appendRecent appends the inverted time (so newer sorts first) and the key.
func appendRecent(prefix []byte, atMs int64, k rawKey) []byte {
	b := make([]byte, 0, len(prefix)+8+len(k))
	b = append(b, prefix...)
	b = binary.BigEndian.AppendUint64(b, ^uint64(atMs))
	return append(b, k[:]...)
}

// parseRecent reads the time and key from the end of an index key.
func parseRecent(key []byte) (int64, rawKey, bool) {
	var k rawKey
	if len(key) < 8+len(k) {
		return 0, k, false
	}
	tail := key[len(key)-8-len(k):]
	copy(k[:], tail[8:])
	return int64(^binary.BigEndian.Uint64(tail[:8])), k, true
}

func crateKeyPrefix(crate string) ([]byte, error) {
	return appendLP([]byte{prefixCrateKey}, crate)
}

func crateKeyKey(crate string, k rawKey) ([]byte, error) {
	b, err := crateKeyPrefix(crate)
	if err != nil {
		return nil, err
	}
	return append(b, k[:]...), nil
}

// depIndexPrefix is where the keys built with a lock dep are listed, newest
// first, like crateIndexPrefix.
func depIndexPrefix(namespace, dep string) ([]byte, error) {
	b, err := appendLP([]byte{prefixDep}, namespace)
	if err != nil {
		return nil, err
	}
	return appendLP(b, dep)
}

func timelineKey(id string) ([]byte, error) {
	return appendLP([]byte{prefixTimeline}, id)
}

func seedKey(digest string) []byte {
	return append([]byte{prefixMeta, 's', 'e', 'e', 'd', '/'}, digest...)
}

// objectKey records a bucket object already ingested, by its S3 key.
func objectKey(s3key string) []byte {
	return append([]byte{prefixObject}, s3key...)
}

// identityKey is where the latest build of an identity lists its keys.
func identityKey(digest [32]byte) []byte {
	return append([]byte{prefixIdentity}, digest[:]...)
}

// suspectKey marks a key that a complete listing of the bucket's entry
// manifests did not have.
func suspectKey(k rawKey) []byte {
	return append([]byte{prefixSuspect}, k[:]...)
}

// tombstoneKey records a dropped key.
func tombstoneKey(k rawKey) []byte {
	return append([]byte{prefixTombstone}, k[:]...)
}
