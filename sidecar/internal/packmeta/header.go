package packmeta

import (
	"encoding/binary"
	"fmt"
)

// The zstd frame header (RFC 8878 3.1.1): magic, descriptor, then an
// optional window descriptor, dictionary id and content size.
const (
	zstdMagic = 0xFD2FB528
	// decodeWindow is the window the decoder is told about. A streaming
	// zstd decoder allocates the frame's whole window up front (128 MiB
	// for window-log 27), but a match can only reach back into what was
	// decoded so far, and a Sniffer decodes less than this: a tar header,
	// at most MaxMetaBytes of meta and the rest of the last block (at most
	// 128 KiB). So the declared window is lowered to this before the
	// decoder sees it, and decoding the pack's start is unchanged.
	decodeWindow    = 1 << decodeWindowLog
	decodeWindowLog = 21
	maxWindow       = 1 << MaxWindowLog
)

// frameHeaderLen is the length of the frame header that h (at least 5
// bytes) starts.
func frameHeaderLen(h []byte) (int, error) {
	if binary.LittleEndian.Uint32(h) != zstdMagic {
		return 0, fmt.Errorf("%w: no zstd frame magic", ErrNotPack)
	}
	fhd := h[4]
	if fhd&0x08 != 0 {
		return 0, fmt.Errorf("%w: reserved bit set in zstd frame header", ErrNotPack)
	}
	n := 5
	single := fhd&0x20 != 0
	if !single {
		n++ // window descriptor
	}
	n += [4]int{0, 1, 2, 4}[fhd&3] // dictionary id
	n += fcsLen(fhd)
	return n, nil
}

func fcsLen(fhd byte) int {
	switch fhd >> 6 {
	case 0:
		if fhd&0x20 != 0 {
			return 1
		}
		return 0
	case 1:
		return 2
	case 2:
		return 4
	default:
		return 8
	}
}

// clampWindow checks the window a complete frame header declares against
// kache's bound and lowers it in place to decodeWindow (see there). A
// single-segment frame's window is its content size, which is lowered the
// same way: the decoder only checks it against what it decoded, and stops
// far before.
func clampWindow(h []byte) error {
	fhd := h[4]
	if fhd&0x20 == 0 {
		wd := h[5]
		base := uint64(1) << (10 + wd>>3)
		window := base + base/8*uint64(wd&7)
		if window > maxWindow {
			return fmt.Errorf("%w: zstd window of %d bytes, over kache's %d", ErrNotPack, window, maxWindow)
		}
		if window > decodeWindow {
			h[5] = (decodeWindowLog - 10) << 3
		}
		return nil
	}
	off := 5 + [4]int{0, 1, 2, 4}[fhd&3]
	var size uint64
	switch fcsLen(fhd) {
	case 1:
		size = uint64(h[off])
	case 2:
		size = uint64(binary.LittleEndian.Uint16(h[off:])) + 256
	case 4:
		size = uint64(binary.LittleEndian.Uint32(h[off:]))
	default:
		size = binary.LittleEndian.Uint64(h[off:])
	}
	if size > maxWindow {
		return fmt.Errorf("%w: single-segment zstd frame of %d bytes, over kache's window of %d", ErrNotPack, size, maxWindow)
	}
	if size > decodeWindow {
		// Only 4- and 8-byte fields can hold more than decodeWindow.
		if fcsLen(fhd) == 4 {
			binary.LittleEndian.PutUint32(h[off:], decodeWindow)
		} else {
			binary.LittleEndian.PutUint64(h[off:], decodeWindow)
		}
	}
	return nil
}
