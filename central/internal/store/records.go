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
	// Toolchain is the rustc version that built it ("" = unknown).
	Toolchain string
	// Built is false for keys only known to exist (a bucket listing or a
	// seed's key_cache), true once a build manifest or timeline named them.
	Built bool
	// Listed is true once a listing of the bucket's entry manifests had the
	// key: only such keys are dropped for leaving the bucket. Artifact
	// records carry it; index entries do not.
	Listed bool
}

const (
	flagBuilt  byte = 1
	flagListed byte = 2
)

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
	if v.Listed {
		flags |= flagListed
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
	flags := d.byte()
	v.Built = flags&flagBuilt != 0
	v.Listed = flags&flagListed != 0
	v.Target = d.str()
	v.Profile = d.str()
}

// record is an artifact record: what is known of a key, plus where its crate
// index entry sits.
type record struct {
	Variant
	// builtAtMs is the time of its crate index entry; 0 if never built.
	builtAtMs int64
}

// encodeArtifact: lp(crate) body builtAt lp(toolchain). Schema 1 records end
// before builtAt or before the toolchain; both read as zero.
func encodeArtifact(r *record) []byte {
	return appendArtifact(make([]byte, 0, 64), r)
}

// appendArtifact appends encodeArtifact's encoding to b.
func appendArtifact(b []byte, r *record) []byte {
	b, _ = appendLP(b, r.CrateName)
	b = appendVariantBody(b, &r.Variant)
	b = binary.AppendUvarint(b, uint64(r.builtAtMs))
	b, _ = appendLP(b, r.Toolchain)
	return b
}

func decodeArtifact(key rawKey, b []byte) (record, error) {
	d := decoder{b: b}
	r := record{Variant: Variant{CacheKey: key.String()}}
	r.CrateName = d.str()
	d.variantBody(&r.Variant)
	if d.err == nil && len(d.b) > 0 {
		r.builtAtMs = int64(d.uvarint())
	}
	if d.err == nil && len(d.b) > 0 {
		r.Toolchain = d.str()
	}
	if d.err != nil {
		return record{}, fmt.Errorf("decode artifact %s: %w", r.CacheKey, d.err)
	}
	return r, nil
}

// encodeEntry is the value of a crate or dep index entry: [lp(crate)] cost,
// size, seen, flags, lp(target), lp(profile), lp(toolchain). The time and key
// are in the entry's key. Schema 1 entries end before the toolchain.
func encodeEntry(v *Variant, withCrate bool) []byte {
	return appendEntry(make([]byte, 0, 48), v, withCrate)
}

// appendEntry appends encodeEntry's encoding to b.
func appendEntry(b []byte, v *Variant, withCrate bool) []byte {
	if withCrate {
		b, _ = appendLP(b, v.CrateName)
	}
	b = binary.AppendUvarint(b, v.CompileTimeMs)
	b = binary.AppendUvarint(b, v.SizeBytes)
	b = binary.AppendUvarint(b, uint64(v.Seen))
	var flags byte
	if v.Built {
		flags |= flagBuilt
	}
	b = append(b, flags)
	b, _ = appendLP(b, v.Target)
	b, _ = appendLP(b, v.Profile)
	b, _ = appendLP(b, v.Toolchain)
	return b
}

func decodeEntry(b []byte, v *Variant, withCrate bool, names *interner) error {
	d := decoder{b: b, names: names}
	if withCrate {
		v.CrateName = d.str()
	}
	v.CompileTimeMs = d.uvarint()
	v.SizeBytes = d.uvarint()
	v.Seen = uint32(d.uvarint())
	v.Built = d.byte()&flagBuilt != 0
	v.Target = d.str()
	v.Profile = d.str()
	if d.err == nil && len(d.b) > 0 {
		v.Toolchain = d.str()
	}
	if d.err != nil {
		return fmt.Errorf("decode index entry: %w", d.err)
	}
	return nil
}
