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
	b   []byte
	err error
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
	s, rest, err := readLP(d.b)
	if err != nil {
		d.err = err
		return ""
	}
	d.b = rest
	return s
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

// encodeList writes a variant list: count, then key32 lp(crate) body each.
// Summaries repeat the crate name per entry; it keeps one codec for both
// summaries and dep lists, and a name costs a few bytes.
func encodeList(vs []Variant) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 16+len(vs)*80), uint64(len(vs)))
	for i := range vs {
		k, _ := parseCacheKey(vs[i].CacheKey)
		b = append(b, k[:]...)
		b, _ = appendLP(b, vs[i].CrateName)
		b = appendVariantBody(b, &vs[i])
	}
	return b
}

func decodeList(b []byte) ([]Variant, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(b)) {
		return nil, fmt.Errorf("decode variant list: %w: count %d", errKeyEncoding, n)
	}
	vs := make([]Variant, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.key()
		v := Variant{CacheKey: k.String()}
		v.CrateName = d.str()
		d.variantBody(&v)
		vs = append(vs, v)
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode variant list: %w", d.err)
	}
	return vs, nil
}
