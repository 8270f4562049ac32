package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Demand: what build timelines taught about when the builds of a family ask
// for each crate, and which prefetched keys they then left unused. One row
// per family (key prefix 0x0B) holds every crate's figures, so a plan reads
// it once.

// DemandFamily names builds that ask for their crates in about the same
// order and at about the same times: one CI job of one repository. A field
// left blank is unknown; a timeline teaches the family with its repository
// and the ones without it, so a plan that knows less still finds one.
type DemandFamily struct {
	Repository string
	Target     string
	Profile    string
}

// Digest is the family's key in the demand table. Target and profile are
// compared as kache writes them in identity keys ('/' and '\' as '_').
func (f DemandFamily) Digest() [32]byte {
	h := sha256.New()
	for _, s := range []string{"kache-planner-demand/1", f.Repository, layoutName(f.Target), layoutName(f.Profile)} {
		h.Write([]byte(s))
		h.Write([]byte{'\n'})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// layoutName is a target or profile as kache puts it in an identity key.
func layoutName(s string) string { return strings.NewReplacer("/", "_", "\\", "_").Replace(s) }

// Demand table bounds: a family keeps its most recently asked-for crates,
// and per crate the keys left unused most often.
const (
	maxDemandCrates     = 4096
	maxUnusedPerCrate   = 4
	demandSmoothingBits = 1 // new estimate = old + (observed - old) / 2^bits
)

// CrateDemand is what a family's timelines say of one crate.
type CrateDemand struct {
	Crate string
	// DemandMs is when the family's builds ask for the crate, in
	// milliseconds from the build's start, smoothed over builds (each new
	// build moves it half way).
	DemandMs uint64
	// Builds counts the timelines that had it; LastMs is the newest one's
	// time.
	Builds uint32
	LastMs int64
	// Unused are keys of the crate that prefetches fetched and the
	// family's builds then never asked for, with how many times in a row.
	Unused []UnusedKey
}

// UnusedKey is a prefetched key left unused Times times in a row (a use
// starts it over).
type UnusedKey struct {
	CacheKey string
	Times    uint32
}

// DemandObservation is what one build timeline taught: when the build asked
// for each crate and what became of its prefetched keys. It applies to
// every family listed.
type DemandObservation struct {
	Families [][32]byte
	// Asked lists the crates the build asked for, with when (ms from its
	// start).
	Asked []CrateAsk
	// Prefetched lists the keys the build's plan fetched, used or not.
	Prefetched []PrefetchOutcome
}

// CrateAsk is one crate a build asked for.
type CrateAsk struct {
	Crate string
	AtMs  uint64
}

// PrefetchOutcome is one prefetched key and whether the build used it.
type PrefetchOutcome struct {
	Crate    string
	CacheKey string
	Used     bool
}

// Demand returns a family's crates (in no particular order); an unknown
// family yields none and no error. The slice is shared with the store's
// cache: callers must not modify it.
func (s *Store) Demand(family [32]byte) ([]CrateDemand, error) {
	return s.readDemand(family, nil)
}

// Demand is Store.Demand, recorded.
func (t *Reader) Demand(family [32]byte) ([]CrateDemand, error) {
	return t.s.readDemand(family, t.r)
}

func demandKey(family [32]byte) []byte {
	return append([]byte{prefixDemand}, family[:]...)
}

// readDemand reads a family row through the list cache. The cache holds
// lists of variants, so a row is cached as one variant per crate (crate,
// DemandMs as the cost, Builds as seen, LastMs as last seen) followed by
// one per unused key (its key and crate, Times as seen).
func (s *Store) readDemand(family [32]byte, rec *Reads) ([]CrateDemand, error) {
	key := demandKey(family)
	e, ok, epoch := s.lists.get(key)
	if ok {
		rec.add(e.key, e.ver)
		return demandFromVariants(e.vs), nil
	}
	b, err := s.get(key)
	var ds []CrateDemand
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if ds, err = decodeDemand(b); err != nil {
			return nil, fmt.Errorf("read demand %x: %w", family[:4], err)
		}
	}
	k := string(key)
	rec.add(k, s.lists.fill(k, demandToVariants(ds), epoch))
	return ds, nil
}

func demandToVariants(ds []CrateDemand) []Variant {
	vs := make([]Variant, 0, len(ds))
	for i := range ds {
		d := &ds[i]
		vs = append(vs, Variant{CrateName: d.Crate, CompileTimeMs: d.DemandMs, Seen: d.Builds, LastSeenMs: d.LastMs})
		for _, u := range d.Unused {
			vs = append(vs, Variant{CacheKey: u.CacheKey, CrateName: d.Crate, Seen: u.Times})
		}
	}
	return vs
}

func demandFromVariants(vs []Variant) []CrateDemand {
	if len(vs) == 0 {
		return nil
	}
	var ds []CrateDemand
	for _, v := range vs {
		if v.CacheKey != "" && len(ds) > 0 {
			d := &ds[len(ds)-1]
			d.Unused = append(d.Unused, UnusedKey{CacheKey: v.CacheKey, Times: v.Seen})
			continue
		}
		ds = append(ds, CrateDemand{Crate: v.CrateName, DemandMs: v.CompileTimeMs, Builds: v.Seen, LastMs: v.LastSeenMs})
	}
	return ds
}

// encodeDemand: uvarint crate count, then per crate lp(crate), uvarint
// demand ms, builds, last ms, unused count, and per unused key its 32 bytes
// and uvarint times.
func encodeDemand(ds []CrateDemand) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 16+len(ds)*24), uint64(len(ds)))
	for i := range ds {
		d := &ds[i]
		b, _ = appendLP(b, d.Crate)
		b = binary.AppendUvarint(b, d.DemandMs)
		b = binary.AppendUvarint(b, uint64(d.Builds))
		b = binary.AppendUvarint(b, uint64(d.LastMs))
		b = binary.AppendUvarint(b, uint64(len(d.Unused)))
		for _, u := range d.Unused {
			k, _ := parseCacheKey(u.CacheKey) // checked when merged
			b = append(b, k[:]...)
			b = binary.AppendUvarint(b, uint64(u.Times))
		}
	}
	return b
}

func decodeDemand(b []byte) ([]CrateDemand, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: malformed demand row", errKeyEncoding)
	}
	ds := make([]CrateDemand, 0, n)
	for range n {
		c := CrateDemand{Crate: d.str()}
		c.DemandMs = d.uvarint()
		c.Builds = uint32(d.uvarint())
		c.LastMs = int64(d.uvarint())
		nu := d.uvarint()
		if d.err != nil || nu > uint64(len(d.b)) {
			return nil, fmt.Errorf("%w: malformed demand row", errKeyEncoding)
		}
		for range nu {
			var k rawKey
			if len(d.b) < len(k) {
				return nil, fmt.Errorf("%w: truncated demand row", errKeyEncoding)
			}
			copy(k[:], d.b)
			d.b = d.b[len(k):]
			c.Unused = append(c.Unused, UnusedKey{CacheKey: k.String(), Times: uint32(d.uvarint())})
		}
		if d.err != nil {
			return nil, d.err
		}
		ds = append(ds, c)
	}
	return ds, nil
}

// mergeDemand folds one observation into a family's row (which it may
// reuse) and returns the new row.
func mergeDemand(ds []CrateDemand, obs *DemandObservation, at int64) ([]CrateDemand, error) {
	for _, p := range obs.Prefetched {
		if _, err := parseCacheKey(p.CacheKey); err != nil {
			return nil, err
		}
	}
	idx := make(map[string]int, len(ds)+len(obs.Asked))
	for i := range ds {
		idx[ds[i].Crate] = i
	}
	entry := func(crate string) (*CrateDemand, error) {
		if i, ok := idx[crate]; ok {
			return &ds[i], nil
		}
		if crate == "" || len(crate) > 255 {
			return nil, fmt.Errorf("%w: crate name of %d bytes", errKeyEncoding, len(crate))
		}
		idx[crate] = len(ds)
		ds = append(ds, CrateDemand{Crate: crate})
		return &ds[len(ds)-1], nil
	}
	for _, a := range obs.Asked {
		d, err := entry(a.Crate)
		if err != nil {
			return nil, err
		}
		if d.Builds == 0 || d.LastMs < at {
			// A crate asked for twice in one build (two versions) counts
			// once, at its first ask.
			if d.Builds == 0 {
				d.DemandMs = a.AtMs
			} else {
				d.DemandMs = uint64(int64(d.DemandMs) + (int64(a.AtMs)-int64(d.DemandMs))>>demandSmoothingBits)
			}
			d.Builds++
			d.LastMs = at
		}
	}
	for _, p := range obs.Prefetched {
		d, err := entry(p.Crate)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(d.Unused, func(u UnusedKey) bool { return u.CacheKey == p.CacheKey })
		switch {
		case p.Used && i >= 0:
			d.Unused = slices.Delete(d.Unused, i, i+1)
		case p.Used:
		case i >= 0:
			d.Unused[i].Times++
		default:
			d.Unused = append(d.Unused, UnusedKey{CacheKey: p.CacheKey, Times: 1})
		}
		if len(d.Unused) > maxUnusedPerCrate {
			slices.SortStableFunc(d.Unused, func(a, b UnusedKey) int { return int(b.Times) - int(a.Times) })
			d.Unused = d.Unused[:maxUnusedPerCrate]
		}
	}
	// Entries created only by a prefetch outcome have no ask yet.
	if len(ds) > maxDemandCrates {
		slices.SortStableFunc(ds, func(a, b CrateDemand) int {
			switch {
			case a.LastMs > b.LastMs:
				return -1
			case a.LastMs < b.LastMs:
				return 1
			}
			return 0
		})
		ds = ds[:maxDemandCrates]
	}
	return ds, nil
}

// putDemand merges a demand observation into each family's row.
func (s *Store) putDemand(w *writeSet, obs *DemandObservation, at int64) error {
	for _, f := range obs.Families {
		ds, ok := w.demands[f]
		if !ok {
			b, err := s.get(demandKey(f))
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			default:
				if ds, err = decodeDemand(b); err != nil {
					return err
				}
			}
		} else {
			ds = slices.Clone(ds)
		}
		merged, err := mergeDemand(ds, obs, at)
		if err != nil {
			return fmt.Errorf("%w: demand: %w", ErrInvalid, err)
		}
		w.demands[f] = merged
		w.batch.Put(demandKey(f), encodeDemand(merged))
	}
	return nil
}
