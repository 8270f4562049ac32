package store

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// Section writes one byte range of a Writer's object, so that an object can
// arrive over several connections at once, each range written in order at
// its offset of the same temp file. Sections of one Writer may be written
// concurrently; each one by a single goroutine.
//
// The object is verified as a whole, exactly as one written by Write: Commit
// refuses it unless the sections hold every byte, and when the ETag given
// to Create is a plain MD5 the file is hashed in offset order as soon as
// each range before a section is complete, reading back what the sections
// wrote (so the hash runs while later ranges still arrive).
type Section struct {
	w       *Writer
	off, n  int64
	written int64 // only the section's writer touches it until it is complete
	done    bool  // guarded by w.smu
}

// Section returns a writer of the object's bytes [off, off+n). A Writer
// written by sections takes no Write. Sections must not overlap, and every
// Section's writes must have returned before Commit or Abort.
func (w *Writer) Section(off, n int64) (*Section, error) {
	w.smu.Lock()
	defer w.smu.Unlock()
	switch {
	case w.done:
		return nil, errors.New("store: writer already finished")
	case w.written > 0:
		return nil, fmt.Errorf("store: %s is written by Write", w.ref)
	case n <= 0 || off < 0 || off+n > w.size:
		return nil, fmt.Errorf("store: section %d+%d is outside %s's %d bytes", off, n, w.ref, w.size)
	}
	i, _ := slices.BinarySearchFunc(w.sections, off, func(s *Section, off int64) int {
		switch {
		case s.off < off:
			return -1
		case s.off > off:
			return 1
		}
		return 0
	})
	if i > 0 && w.sections[i-1].off+w.sections[i-1].n > off || i < len(w.sections) && w.sections[i].off < off+n {
		return nil, fmt.Errorf("store: section %d+%d of %s overlaps another", off, n, w.ref)
	}
	s := &Section{w: w, off: off, n: n}
	w.sections = slices.Insert(w.sections, i, s)
	return s, nil
}

// Write writes p at the section's next offset; writing past the section's
// end fails, as Write does past the object's.
func (s *Section) Write(p []byte) (int, error) {
	if s.written+int64(len(p)) > s.n {
		return 0, fmt.Errorf("%w: %s: range %d+%d is longer than its %d bytes", ErrCorrupt, s.w.ref, s.off, s.n, s.n)
	}
	n, err := s.w.f.WriteAt(p, s.off+s.written)
	s.written += int64(n)
	if s.written == s.n {
		s.complete()
	}
	if err != nil {
		return n, diskErr(err)
	}
	return n, nil
}

// complete marks the section full and hashes every complete range from
// where the hash stands.
func (s *Section) complete() {
	w := s.w
	w.smu.Lock()
	defer w.smu.Unlock()
	s.done = true
	if w.md5 == nil || w.hashErr != nil {
		return
	}
	for _, next := range w.sections {
		if next.off < w.hashed {
			continue
		}
		if next.off > w.hashed || !next.done {
			return
		}
		if _, err := io.Copy(w.md5, io.NewSectionReader(w.f, next.off, next.n)); err != nil {
			w.hashErr = fmt.Errorf("store: read back %s: %w", w.ref, err)
			return
		}
		w.hashed += next.n
	}
}

// sectioned reports whether w is written by sections.
func (w *Writer) sectioned() bool {
	w.smu.Lock()
	defer w.smu.Unlock()
	return len(w.sections) > 0
}

// finishSections counts the sections' bytes into w.written for Commit's
// checks; the MD5 has then read every byte when they cover the object.
func (w *Writer) finishSections() error {
	w.smu.Lock()
	defer w.smu.Unlock()
	if w.hashErr != nil {
		return w.hashErr
	}
	w.written = 0
	for _, s := range w.sections {
		w.written += s.written
	}
	if w.md5 != nil && w.written == w.size && w.hashed != w.size {
		return fmt.Errorf("%w: %s: %d of %d bytes hashed", ErrCorrupt, w.ref, w.hashed, w.size)
	}
	return nil
}
