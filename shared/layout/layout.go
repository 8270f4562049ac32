// Package layout builds and parses the object keys of kache's remote cache
// (kache-protocol.md section 4) and validates the two values that end up in
// them: cache keys and crate names.
//
// Every builder takes a prefix that has already been through NormalizePrefix;
// the kache client normalizes once at config load, so a planner or sidecar
// must do the same or its keys will not match the client's.
package layout

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidPrefix is returned by NormalizePrefix for a prefix the client
// refuses rather than normalizes.
var ErrInvalidPrefix = errors.New("invalid prefix")

// Fixed parts of the v3 layout.
const (
	entryManifestsDir = "v3/manifests/"
	packsDir          = "v3/packs/"
	buildManifestsDir = "_manifests/"
	manifestExt       = ".json"
	packExt           = ".tar.zst"
)

// NormalizePrefix canonicalizes a configured prefix the way the client does:
// surrounding whitespace is trimmed, empty segments (leading, trailing and
// doubled slashes) collapse, and "" stays "" (objects at the bucket root).
// A "." or ".." segment or any backslash is an error, not something to
// reinterpret: a traversal-shaped prefix is refused by the client too.
func NormalizePrefix(p string) (string, error) {
	trimmed := strings.TrimSpace(p)
	if strings.ContainsRune(trimmed, '\\') {
		return "", fmt.Errorf("normalize prefix %q: %w: backslash", p, ErrInvalidPrefix)
	}
	segments := make([]string, 0, strings.Count(trimmed, "/")+1)
	for seg := range strings.SplitSeq(trimmed, "/") {
		switch seg {
		case "":
			continue
		case ".", "..":
			return "", fmt.Errorf("normalize prefix %q: %w: %q segment", p, ErrInvalidPrefix, seg)
		}
		segments = append(segments, seg)
	}
	return strings.Join(segments, "/"), nil
}

// Join returns "{prefix}/{rest}", or rest alone for the empty prefix so that
// keys never start with a slash.
func Join(prefix, rest string) string {
	if prefix == "" {
		return rest
	}
	return prefix + "/" + rest
}

// PackKey is the object holding an entry's artifacts:
// {prefix}/v3/packs/{crate}/{key}.tar.zst.
func PackKey(prefix, crate, cacheKey string) string {
	return Join(prefix, packsDir+crate+"/"+cacheKey+packExt)
}

// EntryManifestKey is the small per-entry object the client HEADs for
// existence and LISTs for its key cache: {prefix}/v3/manifests/{crate}/{key}.json.
func EntryManifestKey(prefix, crate, cacheKey string) string {
	return Join(prefix, entryManifestsDir+crate+"/"+cacheKey+manifestExt)
}

// EntryManifestsPrefix is the LIST prefix of every entry manifest, with its
// trailing slash: {prefix}/v3/manifests/.
func EntryManifestsPrefix(prefix string) string {
	return Join(prefix, entryManifestsDir)
}

// BuildManifestKey is a monolithic build manifest written by
// `kache save-manifest`: {prefix}/_manifests/{manifestKey}.json. The manifest
// key is inserted verbatim and may contain slashes.
func BuildManifestKey(prefix, manifestKey string) string {
	return Join(prefix, buildManifestsDir+manifestKey+manifestExt)
}

// BuildManifestsPrefix is the LIST prefix of build manifests (and, below
// "v3/", of shards): {prefix}/_manifests/.
func BuildManifestsPrefix(prefix string) string {
	return Join(prefix, buildManifestsDir)
}

// ShardObjectKey is the object of one Cargo.lock shard:
// {prefix}/_manifests/v3/{namespace}/shards/{hash}.json. The namespace is
// inserted verbatim (it usually contains slashes, e.g. "linux/hash/debug").
func ShardObjectKey(prefix, namespace, shardHash string) string {
	return Join(prefix, buildManifestsDir+"v3/"+namespace+"/shards/"+shardHash+manifestExt)
}

// ParseEntryManifestKey is the inverse of EntryManifestKey for keys returned
// by a LIST of EntryManifestsPrefix(prefix). It accepts exactly what the
// client's key cache accepts (section 4.5): the key ends in ".json", the last
// segment is a valid cache key and the one before it a valid crate name, with
// nothing else between the manifests prefix and the crate. It does not
// allocate: crate and cacheKey are substrings of objectKey.
func ParseEntryManifestKey(prefix, objectKey string) (crate, cacheKey string, ok bool) {
	return parseEntryKey(prefix, entryManifestsDir, manifestExt, objectKey)
}

// ParsePackKey is the inverse of PackKey, with the same rules as
// ParseEntryManifestKey.
func ParsePackKey(prefix, objectKey string) (crate, cacheKey string, ok bool) {
	return parseEntryKey(prefix, packsDir, packExt, objectKey)
}

func parseEntryKey(prefix, dir, ext, objectKey string) (crate, cacheKey string, ok bool) {
	rest, ok := trimJoinedPrefix(prefix, objectKey)
	if !ok {
		return "", "", false
	}
	rest, ok = strings.CutPrefix(rest, dir)
	if !ok {
		return "", "", false
	}
	rest, ok = strings.CutSuffix(rest, ext)
	if !ok {
		return "", "", false
	}
	// A valid crate name has no '/', so splitting at the last one leaves
	// exactly one segment for the crate or fails validation.
	slash := strings.LastIndexByte(rest, '/')
	if slash < 0 {
		return "", "", false
	}
	crate, cacheKey = rest[:slash], rest[slash+1:]
	if !ValidCacheKey(cacheKey) || !ValidCrateName(crate) {
		return "", "", false
	}
	return crate, cacheKey, true
}

// trimJoinedPrefix removes what Join(prefix, "") would put in front of rest,
// without building that string.
func trimJoinedPrefix(prefix, objectKey string) (string, bool) {
	if prefix == "" {
		return objectKey, true
	}
	rest, ok := strings.CutPrefix(objectKey, prefix)
	if !ok || !strings.HasPrefix(rest, "/") {
		return "", false
	}
	return rest[1:], true
}

// CacheKeyLen is the length of a cache key: a lowercase hex blake3 digest.
const CacheKeyLen = 64

// MaxCrateNameLen is the longest crate name the client accepts.
const MaxCrateNameLen = 128

// ValidCacheKey reports whether s is exactly 64 lowercase hex characters, the
// only shape the client accepts. Keys from a planner or a bucket listing end up
// in local paths and object keys, so anything else is rejected, never
// sanitized. It does not allocate.
func ValidCacheKey(s string) bool {
	if len(s) != CacheKeyLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidCrateName reports whether s is 1-128 characters of [A-Za-z0-9_.-] and
// does not contain "..", the client's rule for a crate name used as an object
// key segment. It matches the client exactly, so "." alone is valid. It does
// not allocate.
func ValidCrateName(s string) bool {
	if len(s) == 0 || len(s) > MaxCrateNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		case c == '.':
			if i+1 < len(s) && s[i+1] == '.' {
				return false
			}
		default:
			return false
		}
	}
	return true
}
