package crawl

import (
	"slices"
)

// maxMissing bounds the keys one pass remembers as missing from the
// listing; the rest wait for the next pass.
const maxMissing = 100_000

// listingDiff finds the keys the store has and a listing of the bucket's
// entry manifests does not. A listing returns keys in order, so each crate's
// keys arrive together: when the crate changes, its keys are compared with
// the store's; crates the listing never named are compared at the end. A
// listing whose crates come back out of order is not used.
type listingDiff struct {
	st        Store
	crate     string
	keys      []string
	done      map[string]bool
	missing   []string
	partial   bool
	unordered bool
	objects   int
}

func newListingDiff(st Store) *listingDiff {
	return &listingDiff{st: st, done: map[string]bool{}}
}

// add notes one listed entry manifest.
func (d *listingDiff) add(crate, key string) error {
	d.objects++
	if crate != d.crate {
		if err := d.endCrate(); err != nil {
			return err
		}
		if d.done[crate] {
			d.unordered = true
		}
		d.crate = crate
	}
	if !d.unordered {
		d.keys = append(d.keys, key)
	}
	return nil
}

func (d *listingDiff) endCrate() error {
	if d.crate == "" {
		return nil
	}
	if !d.unordered {
		slices.Sort(d.keys)
		gone, err := d.st.Unlisted(d.crate, d.keys)
		if err != nil {
			return err
		}
		d.note(gone)
	}
	d.done[d.crate] = true
	d.crate, d.keys = "", d.keys[:0]
	return nil
}

func (d *listingDiff) note(gone []string) {
	if room := maxMissing - len(d.missing); len(gone) > room {
		gone, d.partial = gone[:room], true
	}
	d.missing = append(d.missing, gone...)
}

// finish compares the last crate and the crates the listing did not name.
func (d *listingDiff) finish() error {
	if err := d.endCrate(); err != nil {
		return err
	}
	if d.unordered || d.objects == 0 {
		return nil
	}
	return d.st.Crates(func(crate string) error {
		if d.done[crate] {
			return nil
		}
		gone, err := d.st.Unlisted(crate, nil)
		if err != nil {
			return err
		}
		d.note(gone)
		return nil
	})
}

// applyDiff hands a complete listing's missing keys to the store, which
// drops those a previous complete listing missed too. A listing of nothing
// is not applied: an emptied bucket and a wrong prefix look the same, and
// the age policy still forgets what nothing uses.
func (c *Crawler) applyDiff(d *listingDiff, startMs int64, s *Stats) error {
	if err := d.finish(); err != nil {
		return err
	}
	switch {
	case d.unordered:
		c.log.Warn("entry manifests listed out of order: no key dropped this pass")
		return nil
	case d.objects == 0:
		return nil
	}
	res, err := c.st.ApplyListing(startMs, d.missing, d.partial)
	if err != nil {
		return err
	}
	s.Unlisted, s.Deleted = res.Marked, res.Dropped
	return nil
}
