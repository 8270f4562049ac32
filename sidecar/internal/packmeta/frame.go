package packmeta

import "fmt"

// maxBlockSize is zstd's Block_Maximum_Size (RFC 8878 3.1.1.2.3).
const maxBlockSize = 128 << 10

// walkState is where a frameWalker is in the frame.
type walkState uint8

const (
	walkHeader      walkState = iota // collecting the frame header
	walkBlockHeader                  // collecting a 3-byte block header
	walkBlockBody                    // skipping a block's content
	walkChecksum                     // skipping the 4-byte content checksum
	walkDone                         // past the frame's end
)

// frameWalker follows a zstd frame's structure (header, block headers, the
// optional checksum) in the bytes as they pass, without decoding any block:
// it knows where the frame ends, so a pack cut short, or with bytes after
// its frame, is told from a whole one for a few operations per 128 KiB
// block. A kache pack is a single frame (kache-protocol.md 4.2).
type frameWalker struct {
	buf      [maxFrameHeader]byte
	n        int // bytes collected in buf
	state    walkState
	skip     uint64 // bytes of the block or checksum still to skip
	last     bool   // the current block is the frame's last
	checksum bool   // the frame ends with a content checksum
	extra    int64  // bytes after the frame
	err      error
}

// maxFrameHeader is the longest zstd frame header: magic, descriptor,
// window, a 4-byte dictionary id and an 8-byte content size.
const maxFrameHeader = 4 + 1 + 1 + 4 + 8

func (w *frameWalker) write(p []byte) {
	for len(p) > 0 && w.err == nil {
		switch w.state {
		case walkHeader:
			need := 5
			if w.n >= 5 {
				hl, err := frameHeaderLen(w.buf[:w.n])
				if err != nil {
					w.err = err
					return
				}
				need = hl
			}
			k := copy(w.buf[w.n:need], p)
			w.n += k
			p = p[k:]
			// A frame header is at least 6 bytes (a window descriptor or
			// a content size follows the descriptor).
			if w.n > 5 && w.n == need {
				w.checksum = w.buf[4]&0x04 != 0
				w.state, w.n = walkBlockHeader, 0
			}
		case walkBlockHeader:
			k := copy(w.buf[w.n:3], p)
			w.n += k
			p = p[k:]
			if w.n < 3 {
				continue
			}
			h := uint32(w.buf[0]) | uint32(w.buf[1])<<8 | uint32(w.buf[2])<<16
			w.last, w.n = h&1 == 1, 0
			size := uint64(h >> 3)
			switch (h >> 1) & 3 {
			case 0, 2: // raw, compressed: size bytes follow
				w.skip = size
			case 1: // RLE: one byte, repeated size times
				w.skip = 1
			default:
				w.err = fmt.Errorf("%w: reserved zstd block type", ErrNotPack)
				return
			}
			if size > maxBlockSize {
				w.err = fmt.Errorf("%w: zstd block of %d bytes, over %d", ErrNotPack, size, maxBlockSize)
				return
			}
			w.state = walkBlockBody
			if w.skip == 0 {
				w.endBlock()
			}
		case walkBlockBody, walkChecksum:
			k := min(uint64(len(p)), w.skip)
			w.skip -= k
			p = p[k:]
			if w.skip > 0 {
				continue
			}
			if w.state == walkChecksum {
				w.state = walkDone
			} else {
				w.endBlock()
			}
		case walkDone:
			w.extra += int64(len(p))
			p = nil
		}
	}
}

// endBlock moves past a block whose content was skipped.
func (w *frameWalker) endBlock() {
	switch {
	case !w.last:
		w.state = walkBlockHeader
	case w.checksum:
		w.state, w.skip = walkChecksum, 4
	default:
		w.state = walkDone
	}
}

// result says whether the bytes were exactly one whole frame: nil, or an
// error wrapping ErrTruncated (the frame does not end) or ErrNotPack.
func (w *frameWalker) result() error {
	switch {
	case w.err != nil:
		return w.err
	case w.state != walkDone:
		return fmt.Errorf("%w: the zstd frame does not end", ErrTruncated)
	case w.extra > 0:
		return fmt.Errorf("%w: %d bytes after the zstd frame", ErrNotPack, w.extra)
	}
	return nil
}
