package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// BuildIdentity is what makes two builds compile the same keys apart from the
// sources of workspace members: the namespace (one CI job), the Cargo.lock
// packages, target, profile and toolchain. Later kache versions key their
// identity manifests the same way (lock digest, target, profile).
type BuildIdentity struct {
	Namespace string
	Target    string
	Profile   string
	Toolchain string
	// LockDeps are the lock's packages as "name@version", in any order.
	LockDeps []string
}

// Digest is the identity's key in the identity table. The lock's packages
// are hashed sorted, so their order does not matter.
func (id *BuildIdentity) Digest() [32]byte {
	deps := id.LockDeps
	if !slices.IsSorted(deps) {
		deps = slices.Sorted(slices.Values(deps))
	}
	h := sha256.New()
	for _, f := range []string{"kache-planner-identity/1", id.Namespace, id.Target, id.Profile, id.Toolchain} {
		h.Write([]byte(f))
		h.Write([]byte{'\n'})
	}
	for _, d := range deps {
		h.Write([]byte(d))
		h.Write([]byte{'\n'})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// IdentityBuild records that the artifacts at these indexes of an
// observation are the keys of a build with that identity.
type IdentityBuild struct {
	Digest    [32]byte
	Artifacts []int
}

// Identity returns the keys of the latest build with an identity, in the
// order the build listed them, each with the crate, cost and size it had
// then. An unknown identity yields none and no error.
// The slice is shared with the store's cache: callers must not modify it.
func (s *Store) Identity(digest [32]byte) ([]Variant, error) {
	return s.readIdentity(digest, nil)
}

// putIdentity replaces an identity's build unless the stored one is newer
// (crawls ingest old manifests after new ones).
func (s *Store) putIdentity(w *writeSet, id IdentityBuild, merged []*record, at int64) error {
	key := identityKey(id.Digest)
	if prev, ok := w.idents[id.Digest]; ok {
		// An earlier observation of the same batch wrote it.
		if prev > at {
			return nil
		}
	} else {
		old, err := s.get(key)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case len(old) > 0:
			if prev, n := binary.Uvarint(old); n > 0 && int64(prev) > at {
				return nil
			}
		}
	}
	b := binary.AppendUvarint(make([]byte, 0, 8+len(id.Artifacts)*48), uint64(at))
	b = binary.AppendUvarint(b, uint64(len(id.Artifacts)))
	for _, i := range id.Artifacts {
		if i < 0 || i >= len(merged) {
			return fmt.Errorf("%w: identity names entry %d of %d", ErrInvalid, i, len(merged))
		}
		r := merged[i]
		k, err := parseCacheKey(r.CacheKey)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		b = append(b, k[:]...)
		b, _ = appendLP(b, r.CrateName)
		b = binary.AppendUvarint(b, r.CompileTimeMs)
		b = binary.AppendUvarint(b, r.SizeBytes)
	}
	w.batch.Put(key, b)
	w.idents[id.Digest] = at
	return nil
}

// decodeIdentity reads an identity value: uvarint time, uvarint count, then
// per key its 32 bytes, lp(crate), uvarint cost, uvarint size.
func decodeIdentity(b []byte, names *interner) (int64, []Variant, error) {
	d := decoder{b: b, names: names}
	at := int64(d.uvarint())
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		return 0, nil, fmt.Errorf("%w: malformed identity", errKeyEncoding)
	}
	vs := make([]Variant, 0, n)
	for range n {
		var k rawKey
		if len(d.b) < len(k) {
			return 0, nil, fmt.Errorf("%w: truncated identity", errKeyEncoding)
		}
		copy(k[:], d.b)
		d.b = d.b[len(k):]
		v := Variant{CacheKey: k.String(), Built: true}
		v.CrateName = d.str()
		v.CompileTimeMs = d.uvarint()
		v.SizeBytes = d.uvarint()
		if d.err != nil {
			return 0, nil, d.err
		}
		vs = append(vs, v)
	}
	return at, vs, nil
}
