// Package packmeta reads a kache pack's meta.json from the pack's bytes as
// they stream past (an upload teed into a Sniffer), without a second read of
// the object and without holding it in memory.
//
// A pack (kache-protocol.md 4.2) is one zstd frame wrapping a tar whose first
// entry is meta.json, so the meta is in the first bytes of the object. A
// Sniffer decodes just enough of them, then stops consuming: the rest of a
// 2 GiB pack costs one length check per Write.
package packmeta

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Limits of a Sniffer.
const (
	// DefaultLimit is how many compressed bytes a Sniffer reads before it
	// gives up on finding the meta.
	DefaultLimit = 4 << 20
	// MaxMetaBytes bounds meta.json. kache's meta holds the compiler's
	// stdout and stderr, usually a few KiB.
	MaxMetaBytes = 1 << 20
	// MaxWindowLog is the largest zstd window kache restores (window-log
	// <= 27); a frame declaring more is not a kache pack.
	MaxWindowLog = 27
)

// Why a Sniffer found no meta (Err).
var (
	// ErrNotPack: the bytes are not zstd, not a tar, the tar's first entry
	// is not a meta.json within MaxMetaBytes, or the meta is not JSON.
	ErrNotPack = errors.New("not a kache pack")
	// ErrLimit: the meta did not end within the Sniffer's limit.
	ErrLimit = errors.New("pack meta not within the sniff limit")
	// ErrTruncated: the stream ended (Close) before the meta did, or
	// before the zstd frame did (a pack cut after its meta.json).
	ErrTruncated = errors.New("pack ended before its meta")
)

// Meta is what central learns from a pack's meta.json (EntryMeta).
type Meta struct {
	CacheKey      string
	CrateName     string
	Target        string
	Profile       string
	Features      []string
	CompileTimeMs uint64
	// OriginalBytes is the sum of files[].size, the pack's uncompressed
	// artifact bytes; FileCount the number of files.
	OriginalBytes uint64
	FileCount     int
}

// entryMeta is meta.json as far as Meta needs it.
type entryMeta struct {
	CacheKey      string   `json:"cache_key"`
	CrateName     string   `json:"crate_name"`
	Target        string   `json:"target"`
	Profile       string   `json:"profile"`
	Features      []string `json:"features"`
	CompileTimeMs uint64   `json:"compile_time_ms"`
	Files         []struct {
		Size uint64 `json:"size"`
	} `json:"files"`
}

// errSniffed closes the pipe once the decoding goroutine is done with it.
var errSniffed = errors.New("pack meta sniffed")

// Sniffer is an io.Writer fed with a pack's bytes in order. Write never
// fails and never holds on to p. Decoding runs in a goroutine owned by the
// Sniffer, started by the first Write; it ends when the meta is read, when
// the bytes are not a pack, when the limit is passed, or on Close, whichever
// comes first. After that Write only counts, and follows the zstd frame's
// block headers to its end (frameWalker): a meta is reported only from a
// stream that is exactly one whole frame.
//
// A Sniffer is used by one goroutine at a time; Close must be called once
// the stream ends (or is abandoned) and before Meta and Err.
type Sniffer struct {
	limit int64
	seen  int64 // bytes given to Write, up to limit
	fed   int64 // bytes handed to the decoder

	hdr     []byte // the frame header, until complete
	walk    frameWalker
	started bool
	stopped bool
	closed  bool
	gaveUp  error // why Write stopped feeding, if it did

	pw   *io.PipeWriter
	done chan struct{}

	// Written by the goroutine before done is closed.
	meta Meta
	err  error

	// result after Close.
	ok     bool
	reason error
}

// NewSniffer returns a Sniffer that reads at most limit compressed bytes
// (DefaultLimit when limit <= 0).
func NewSniffer(limit int64) *Sniffer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Sniffer{limit: limit}
}

// Write feeds the decoder until it has what it needs; it always returns
// len(p), nil.
func (s *Sniffer) Write(p []byte) (int, error) {
	n := len(p)
	if !s.closed {
		s.walk.write(p)
	}
	if s.stopped {
		return n, nil
	}
	over := false
	if rem := s.limit - s.seen; int64(len(p)) > rem {
		p, over = p[:rem], true
	}
	s.seen += int64(len(p))
	if !s.started {
		p = s.header(p)
	}
	if s.started && len(p) > 0 {
		s.feed(p)
	}
	if over && !s.stopped {
		s.giveUp(ErrLimit)
	}
	return n, nil
}

// header collects the zstd frame header, checks it, lowers its window (see
// clampWindow) and starts the decoder on it. It returns what of p follows
// the header.
func (s *Sniffer) header(p []byte) []byte {
	need := 5
	for {
		if len(s.hdr) >= 5 {
			hl, err := frameHeaderLen(s.hdr)
			if err != nil {
				s.giveUp(err)
				return nil
			}
			need = hl
		}
		if len(s.hdr) >= need {
			break
		}
		if len(p) == 0 {
			return nil
		}
		k := min(need-len(s.hdr), len(p))
		s.hdr = append(s.hdr, p[:k]...)
		p = p[k:]
	}
	if err := clampWindow(s.hdr); err != nil {
		s.giveUp(err)
		return nil
	}
	s.start()
	s.feed(s.hdr)
	s.hdr = nil
	return p
}

// start launches the decoding goroutine.
func (s *Sniffer) start() {
	pr, pw := io.Pipe()
	s.pw, s.done, s.started = pw, make(chan struct{}), true
	go func() {
		defer close(s.done)
		s.meta, s.err = readMeta(pr)
		// Unblocks a Write in progress; later ones fail at once.
		pr.CloseWithError(errSniffed)
	}()
}

// feed hands p to the decoder and returns once the decoder took all of it
// or stopped reading.
func (s *Sniffer) feed(p []byte) {
	if s.stopped {
		return
	}
	n, err := s.pw.Write(p)
	s.fed += int64(n)
	if err != nil {
		s.stopped = true
	}
}

func (s *Sniffer) giveUp(err error) {
	s.gaveUp, s.stopped = err, true
	if s.started {
		s.pw.CloseWithError(err)
	}
}

// Close ends the stream and waits for the decoding goroutine. It always
// returns nil; calling it again does nothing.
func (s *Sniffer) Close() error {
	if s.closed {
		return nil
	}
	s.closed, s.stopped = true, true
	if !s.started {
		s.reason = s.gaveUp
		if s.reason == nil {
			s.reason = fmt.Errorf("%w: %d bytes, no complete zstd frame header", ErrTruncated, s.seen)
		}
		return nil
	}
	s.pw.Close()
	<-s.done
	switch {
	case s.err == nil:
		// The meta counts only in a whole pack: one zstd frame that ends
		// where the stream does. A pack cut after its meta.json is not one.
		if err := s.walk.result(); err != nil {
			s.reason = err
			return nil
		}
		s.ok = true
	case s.gaveUp != nil && !errors.Is(s.err, ErrNotPack):
		s.reason = s.gaveUp
	default:
		s.reason = s.err
	}
	return nil
}

// Meta returns the pack's meta after Close, or false when none was found
// (Err says why).
func (s *Sniffer) Meta() (Meta, bool) {
	if !s.ok {
		return Meta{}, false
	}
	return s.meta, true
}

// Err is why no meta was found after Close: wraps ErrNotPack, ErrLimit or
// ErrTruncated. It is nil when Meta succeeded or before Close.
func (s *Sniffer) Err() error { return s.reason }

// Consumed is how many compressed bytes went to the decoder.
func (s *Sniffer) Consumed() int64 { return s.fed }

// readMeta decodes the pack's first tar entry.
func readMeta(r io.Reader) (Meta, error) {
	dec, err := getDecoder(r)
	if err != nil {
		return Meta{}, err
	}
	defer putDecoder(dec)
	tr := tar.NewReader(dec)
	h, err := tr.Next()
	if err != nil {
		return Meta{}, classify("read first tar entry", err)
	}
	if path.Clean(h.Name) != "meta.json" || h.Typeflag != tar.TypeReg {
		return Meta{}, fmt.Errorf("%w: first tar entry is %q, not meta.json", ErrNotPack, h.Name)
	}
	if h.Size > MaxMetaBytes {
		return Meta{}, fmt.Errorf("%w: meta.json of %d bytes, over %d", ErrNotPack, h.Size, MaxMetaBytes)
	}
	buf := make([]byte, h.Size)
	if _, err := io.ReadFull(tr, buf); err != nil {
		return Meta{}, classify("read meta.json", err)
	}
	var em entryMeta
	if err := json.Unmarshal(buf, &em); err != nil {
		return Meta{}, fmt.Errorf("%w: decode meta.json: %w", ErrNotPack, err)
	}
	if em.CacheKey == "" || em.CrateName == "" {
		return Meta{}, fmt.Errorf("%w: meta.json lacks cache_key or crate_name", ErrNotPack)
	}
	m := Meta{
		CacheKey:      em.CacheKey,
		CrateName:     em.CrateName,
		Target:        em.Target,
		Profile:       em.Profile,
		Features:      em.Features,
		CompileTimeMs: em.CompileTimeMs,
		FileCount:     len(em.Files),
	}
	for _, f := range em.Files {
		if m.OriginalBytes+f.Size < m.OriginalBytes {
			m.OriginalBytes = ^uint64(0) // saturate; kache caps a pack at 8 GiB
			break
		}
		m.OriginalBytes += f.Size
	}
	return m, nil
}

// decoders keeps decoders between packs: a decoder's window buffer (about
// 2.3 MiB, see decodeWindow) is most of what sniffing a pack allocates.
// With concurrency 1 a decoder runs in its caller's goroutine and owns none,
// so a pooled one holds only memory.
var decoders sync.Pool

func getDecoder(r io.Reader) (*zstd.Decoder, error) {
	if d, ok := decoders.Get().(*zstd.Decoder); ok {
		if err := d.Reset(r); err == nil {
			return d, nil
		}
		d.Close()
	}
	d, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(decodeWindow),
		zstd.IgnoreChecksum(true), // the frame's end is never read
	)
	if err != nil {
		return nil, fmt.Errorf("create zstd decoder: %w", err)
	}
	return d, nil
}

// putDecoder drops the decoder's reference to its input and pools it.
func putDecoder(d *zstd.Decoder) {
	if err := d.Reset(nil); err != nil {
		d.Close()
		return
	}
	decoders.Put(d)
}

// classify maps a decoding error: the stream's end is truncation (or the
// limit, which Close tells apart), anything else means these are not the
// bytes of a pack.
func classify(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrLimit) {
		return fmt.Errorf("%w: %s: %w", ErrTruncated, what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrNotPack, what, err)
}
