package store

import (
	"encoding/binary"
	"fmt"
)

// Variant is one cache key of a crate with what is known about it.
type Variant struct {
	CacheKey      string
	CrateName     string
	CompileTimeMs uint64
	SizeBytes     uint64
	FirstSeenMs   int64
	LastSeenMs    int64
	Seen          uint32
	Target        string
	Profile       string
	// Built is false for keys only known to exist (a bucket listing or a
	// seed's key_cache), true once a build manifest or timeline named them.
	Built bool
}

const flagBuilt byte = 1

type decoder struct {
	b     []byte
	err   error
	names *interner // optional: shares repeated strings
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", errKeyEncoding)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = fmt.Errorf("%w: truncated value", errKeyEncoding)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str() string {
	if d.err != nil {
		return ""
	}
	if len(d.b) < 1 || len(d.b) < 1+int(d.b[0]) {
		d.err = fmt.Errorf("%w: truncated string", errKeyEncoding)
		return ""
	}
	raw := d.b[1 : 1+int(d.b[0])]
	d.b = d.b[1+len(raw):]
	if d.names != nil {
		return d.names.intern(raw)
	}
	return string(raw)
}

func (d *decoder) key() rawKey {
	var k rawKey
	if d.err != nil {
		return k
	}
	if len(d.b) < len(k) {
		d.err = fmt.Errorf("%w: truncated cache key", errKeyEncoding)
		return k
	}
	copy(k[:], d.b)
	d.b = d.b[len(k):]
	return k
}

// appendVariantBody writes the fields shared by artifact records, summaries
// and dep lists. Strings were length-checked when the variant was admitted.
func appendVariantBody(dst []byte, v *Variant) []byte {
	dst = binary.AppendUvarint(dst, v.CompileTimeMs)
	dst = binary.AppendUvarint(dst, v.SizeBytes)
	dst = binary.AppendUvarint(dst, uint64(v.FirstSeenMs))
	dst = binary.AppendUvarint(dst, uint64(v.LastSeenMs))
	dst = binary.AppendUvarint(dst, uint64(v.Seen))
	var flags byte
	if v.Built {
		flags |= flagBuilt
	}
	dst = append(dst, flags)
	dst, _ = appendLP(dst, v.Target)
	dst, _ = appendLP(dst, v.Profile)
	return dst
}

func (d *decoder) variantBody(v *Variant) {
	v.CompileTimeMs = d.uvarint()
	v.SizeBytes = d.uvarint()
	v.FirstSeenMs = int64(d.uvarint())
	v.LastSeenMs = int64(d.uvarint())
	v.Seen = uint32(d.uvarint())
	v.Built = d.byte()&flagBuilt != 0
	v.Target = d.str()
	v.Profile = d.str()
}

// encodeArtifact: lp(crate) body.
func encodeArtifact(v *Variant) []byte {
	b, _ := appendLP(make([]byte, 0, 64), v.CrateName)
	return appendVariantBody(b, v)
}

func decodeArtifact(key rawKey, b []byte) (Variant, error) {
	d := decoder{b: b}
	v := Variant{CacheKey: key.String()}
	v.CrateName = d.str()
	d.variantBody(&v)
	if d.err != nil {
		return Variant{}, fmt.Errorf("decode artifact %s: %w", v.CacheKey, d.err)
	}
	return v, nil
}

// List entry flags beyond flagBuilt: a field equal to the previous entry's
// (or, for the first entry, empty) is not written. Lists hold one crate and
// one or two targets and profiles, so most entries carry none of them.
const (
	flagNewCrate   byte = 1 << 1
	flagNewTarget  byte = 1 << 2
	flagNewProfile byte = 1 << 3
)

// encodeList writes a variant list compactly: count, then per entry key32,
// cost, size, last seen, seen count, flags, and only the names that changed
// from the previous entry. First-seen times live in artifact records only.
func encodeList(vs []Variant) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 8+len(vs)*48), uint64(len(vs)))
	var crate, target, profile string
	for i := range vs {
		v := &vs[i]
		k, _ := parseCacheKey(v.CacheKey)
		b = append(b, k[:]...)
		b = binary.AppendUvarint(b, v.CompileTimeMs)
		b = binary.AppendUvarint(b, v.SizeBytes)
		b = binary.AppendUvarint(b, uint64(v.LastSeenMs))
		b = binary.AppendUvarint(b, uint64(v.Seen))
		var flags byte
		if v.Built {
			flags |= flagBuilt
		}
		if v.CrateName != crate {
			flags |= flagNewCrate
		}
		if v.Target != target {
			flags |= flagNewTarget
		}
		if v.Profile != profile {
			flags |= flagNewProfile
		}
		b = append(b, flags)
		if flags&flagNewCrate != 0 {
			b, _ = appendLP(b, v.CrateName)
		}
		if flags&flagNewTarget != 0 {
			b, _ = appendLP(b, v.Target)
		}
		if flags&flagNewProfile != 0 {
			b, _ = appendLP(b, v.Profile)
		}
		crate, target, profile = v.CrateName, v.Target, v.Profile
	}
	return b
}

func decodeList(b []byte, names *interner) ([]Variant, error) {
	d := decoder{b: b, names: names}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(b)) {
		return nil, fmt.Errorf("decode variant list: %w: count %d", errKeyEncoding, n)
	}
	vs := make([]Variant, 0, n)
	var crate, target, profile string
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.key()
		v := Variant{CacheKey: k.String()}
		v.CompileTimeMs = d.uvarint()
		v.SizeBytes = d.uvarint()
		v.LastSeenMs = int64(d.uvarint())
		v.Seen = uint32(d.uvarint())
		flags := d.byte()
		v.Built = flags&flagBuilt != 0
		if flags&flagNewCrate != 0 {
			crate = d.str()
		}
		if flags&flagNewTarget != 0 {
			target = d.str()
		}
		if flags&flagNewProfile != 0 {
			profile = d.str()
		}
		v.CrateName, v.Target, v.Profile = crate, target, profile
		vs = append(vs, v)
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode variant list: %w", d.err)
	}
	return vs, nil
}
