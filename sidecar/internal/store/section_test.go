package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestSections(t *testing.T) {
	data := strings.Repeat("0123456789abcdef", 1000) // 16,000 bytes
	sum := md5.Sum([]byte(data))
	good := hex.EncodeToString(sum[:])
	type rng struct{ off, n int64 }
	thirds := []rng{{0, 5000}, {5000, 5000}, {10000, 6000}}
	tests := []struct {
		name   string
		etag   string
		ranges []rng
		order  []int // sections written in this order, one after the other
		mangle bool  // flip a byte of the last section written
		want   error // from Commit
	}{
		{name: "in order", etag: good, ranges: thirds, order: []int{0, 1, 2}},
		{name: "last first", etag: good, ranges: thirds, order: []int{2, 1, 0}},
		{name: "middle last", etag: good, ranges: thirds, order: []int{0, 2, 1}},
		{name: "multipart etag not hashed", etag: "0123456789abcdef0123456789abcdef-3", ranges: thirds, order: []int{1, 0, 2}},
		{name: "wrong bytes", etag: good, ranges: thirds, order: []int{2, 0, 1}, mangle: true, want: ErrCorrupt},
		{name: "missing range", etag: good, ranges: thirds, order: []int{0, 2}, want: ErrCorrupt},
		{name: "one section", etag: good, ranges: []rng{{0, 16000}}, order: []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, 0)
			r := Ref{Pack, "serde", key('a')}
			w, err := s.Create(r, int64(len(data)), Meta{ETag: tt.etag})
			if err != nil {
				t.Fatal(err)
			}
			secs := make([]*Section, len(tt.ranges))
			for i, g := range tt.ranges {
				if secs[i], err = w.Section(g.off, g.n); err != nil {
					t.Fatal(err)
				}
			}
			for k, i := range tt.order {
				b := []byte(data[tt.ranges[i].off : tt.ranges[i].off+tt.ranges[i].n])
				if tt.mangle && k == len(tt.order)-1 {
					b[len(b)/2] ^= 1
				}
				// In pieces, as a body arrives.
				for len(b) > 0 {
					n := min(len(b), 777)
					if _, err := secs[i].Write(b[:n]); err != nil {
						t.Fatal(err)
					}
					b = b[n:]
				}
			}
			err = w.Commit()
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("commit: %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				if s.Has(r) || tempFiles(t, dir) != 0 {
					t.Fatal("refused object left behind")
				}
				return
			}
			if got := read(t, s, r); got != data {
				t.Fatal("stored bytes differ")
			}
		})
	}
}

func TestSectionsConcurrently(t *testing.T) {
	data := strings.Repeat("kache", 50_000)
	sum := md5.Sum([]byte(data))
	s := open(t, t.TempDir(), 0)
	r := Ref{Pack, "syn", key('b')}
	w, err := s.Create(r, int64(len(data)), Meta{ETag: hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	const parts = 7
	size := int64(len(data))
	var wg sync.WaitGroup
	for i := range int64(parts) {
		off, end := size*i/parts, size*(i+1)/parts
		sec, err := w.Section(off, end-off)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for p := off; p < end; p += 1000 {
				if _, err := sec.Write([]byte(data[p:min(p+1000, end)])); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if read(t, s, r) != data {
		t.Fatal("stored bytes differ")
	}
}

func TestSectionMisuse(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	w, err := s.Create(Ref{Pack, "serde", key('c')}, 100, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	sec, err := w.Section(10, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][2]int64{{0, 11}, {59, 5}, {20, 10}, {90, 11}, {-1, 5}, {70, 0}} {
		if _, err := w.Section(g[0], g[1]); err == nil {
			t.Errorf("section %d+%d accepted", g[0], g[1])
		}
	}
	if _, err := w.Section(60, 40); err != nil {
		t.Errorf("adjacent section: %v", err)
	}
	if _, err := sec.Write(make([]byte, 51)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("overlong section write: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write accepted on a sectioned writer")
	}
	w2, err := s.Create(Ref{Pack, "serde", key('d')}, 10, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Abort()
	if _, err := w2.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Section(5, 5); err == nil {
		t.Error("Section accepted after Write")
	}
}
