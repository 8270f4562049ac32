package sigv4

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
)

const (
	// maxLineLen bounds a chunk header or trailer line, CRLF included. It is
	// also the size of the reader's only buffer.
	maxLineLen = 4 << 10
	// maxTrailerLines bounds the lines after the final chunk.
	maxTrailerLines = 8
	// maxTrailingCRLF bounds the stray CR/LF bytes tolerated after the end.
	maxTrailingCRLF = 8

	chunkSignaturePrefix = "chunk-signature="
	trailerSignatureName = "x-amz-trailer-signature"
)

// chunkedReader decodes an aws-chunked body:
//
//	hex-size[;chunk-signature=sig]\r\n data \r\n ... 0[;chunk-signature=sig]\r\n
//	[trailer-name:value\r\n ... [x-amz-trailer-signature:sig\r\n]] \r\n
//
// It verifies the chunk signature chain (signed modes), the trailer signature
// (signed trailer mode), the trailing checksum and the decoded length as it
// goes. A chunk's data is returned before its signature can be checked; the
// failure comes at the chunk's end. The read that returns the last decoded
// byte also reads the final chunk and the trailers, so it already returns
// io.EOF or the error.
type chunkedReader struct {
	br     *bufio.Reader
	signed bool // chunks carry signatures
	// trailers is set for the trailer modes; signedTrailer when they carry a signature.
	trailers, signedTrailer bool

	mac     hash.Hash             // HMAC-SHA256 keyed with the signing key, reused
	stsTail []byte                // "\n<date>\n<scope>\n" of every string to sign
	prevSig [2 * sha256.Size]byte // hex signature of the previous chunk, the seed at first

	trailerName string    // the checksum trailer x-amz-trailer declared, or ""
	trailerAlg  string    // its algorithm, e.g. "crc32"
	sum         hash.Hash // the checksum of the decoded data, when trailerAlg is set

	remaining int64 // decoded bytes still to come, from x-amz-decoded-content-length
	chunkLeft int64 // bytes of the current chunk not yet returned
	inChunk   bool
	chunkSig  [sha256.Size]byte // the current chunk's announced signature
	chunkHash hash.Hash         // sha256 of the current chunk's data
	scratch   [sha256.Size]byte // chunkHash's sum, and the next signature
	hexBuf    [2 * sha256.Size]byte

	err error // sticky: io.EOF once done, or the first failure
}

func newChunkedReader(body io.Reader, a *Auth, h Header) (*chunkedReader, error) {
	dl := h.Get("x-amz-decoded-content-length")
	decoded, err := strconv.ParseInt(dl, 10, 64)
	if err != nil || decoded < 0 {
		return nil, fmt.Errorf("x-amz-decoded-content-length %q must be a byte count: %w", dl, ErrMalformedChunk)
	}
	c := &chunkedReader{
		br:            bufio.NewReaderSize(body, maxLineLen),
		signed:        a.Payload == PayloadStreamingSigned || a.Payload == PayloadStreamingSignedTrailer,
		trailers:      a.Payload == PayloadStreamingSignedTrailer || a.Payload == PayloadStreamingUnsignedTrailer,
		signedTrailer: a.Payload == PayloadStreamingSignedTrailer,
		stsTail:       []byte("\n" + a.amzDate + "\n" + a.scope + "\n"),
		remaining:     decoded,
	}
	if c.signed {
		if len(a.signature) != len(c.prevSig) {
			return nil, fmt.Errorf("no seed signature for a signed aws-chunked body: %w", ErrSignatureMismatch)
		}
		copy(c.prevSig[:], a.signature)
		c.mac = hmac.New(sha256.New, a.key)
		c.chunkHash = sha256.New()
	}
	if !c.trailers {
		return c, nil
	}
	name := strings.ToLower(strings.TrimSpace(h.Get("x-amz-trailer")))
	if name == "" {
		return c, nil
	}
	alg, ok := strings.CutPrefix(name, checksumHeaderPrefix)
	newHash := checksumAlgorithms[alg]
	if !ok || newHash == nil {
		return nil, fmt.Errorf("x-amz-trailer %q: only one x-amz-checksum-{%s} trailer is supported: %w",
			name, strings.Join(checksumNames, ","), ErrMalformedChunk)
	}
	c.trailerName, c.trailerAlg, c.sum = name, alg, newHash()
	return c, nil
}

// Read returns decoded data; see chunkedReader.
func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if !c.inChunk {
		if err := c.nextChunk(); err != nil {
			return 0, c.fail(err)
		}
		if !c.inChunk { // the final chunk
			return 0, c.fail(io.EOF)
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > c.chunkLeft {
		p = p[:c.chunkLeft]
	}
	n, err := c.br.Read(p)
	c.chunkLeft -= int64(n)
	c.remaining -= int64(n)
	if c.signed {
		c.chunkHash.Write(p[:n])
	}
	if c.sum != nil {
		c.sum.Write(p[:n])
	}
	if c.chunkLeft > 0 {
		switch {
		case err == io.EOF:
			return n, c.fail(fmt.Errorf("body ended inside a chunk: %w", ErrIncompleteBody))
		case err != nil:
			return n, c.fail(fmt.Errorf("read aws-chunked body: %w", err))
		}
		return n, nil
	}
	if err := c.endChunk(); err != nil {
		return n, c.fail(err)
	}
	if c.remaining > 0 {
		return n, nil
	}
	// That was the last byte: settle the final chunk and trailers now.
	if err := c.nextChunk(); err != nil {
		return n, c.fail(err)
	}
	if c.inChunk {
		return n, c.fail(fmt.Errorf("a chunk follows the declared length: %w", ErrMalformedChunk))
	}
	return n, c.fail(io.EOF)
}

func (c *chunkedReader) fail(err error) error {
	c.err = err
	return err
}

// readLine reads one line and strips its "\n" or "\r\n". A line cut off by
// the end of the body comes back without terminated and with a nil error;
// io.EOF means the body had ended before the line began.
func (c *chunkedReader) readLine() (line []byte, terminated bool, err error) {
	line, err = c.br.ReadSlice('\n')
	switch {
	case len(line) > maxLineLen || errors.Is(err, bufio.ErrBufferFull):
		// A caller's own *bufio.Reader may have a larger buffer than ours.
		return nil, false, fmt.Errorf("line longer than %d bytes: %w", maxLineLen, ErrMalformedChunk)
	case err == nil:
		line = line[:len(line)-1]
		return bytes.TrimSuffix(line, []byte{'\r'}), true, nil
	case err == io.EOF && len(line) > 0:
		return line, false, nil
	case err == io.EOF:
		return nil, false, io.EOF
	default:
		return nil, false, fmt.Errorf("read aws-chunked body: %w", err)
	}
}

// nextChunk reads a chunk header. For the final, zero-size chunk it also
// checks the decoded length and reads and verifies the trailers, leaving
// inChunk unset.
func (c *chunkedReader) nextChunk() error {
	line, terminated, err := c.readLine()
	if err == io.EOF || err == nil && !terminated {
		return fmt.Errorf("body ended before the final chunk: %w", ErrIncompleteBody)
	}
	if err != nil {
		return err
	}
	size, err := c.parseChunkHeader(line)
	if err != nil {
		return err
	}
	if size > uint64(c.remaining) {
		return fmt.Errorf("chunk of %d bytes exceeds x-amz-decoded-content-length (%d left): %w", size, c.remaining, ErrMalformedChunk)
	}
	if c.signed {
		c.chunkHash.Reset()
	}
	if size > 0 {
		c.chunkLeft, c.inChunk = int64(size), true
		return nil
	}
	if c.signed {
		if err := c.verifyChunk(); err != nil {
			return err
		}
	}
	if c.remaining != 0 {
		return fmt.Errorf("body ended %d bytes short of x-amz-decoded-content-length: %w", c.remaining, ErrIncompleteBody)
	}
	return c.readTrailers()
}

// parseChunkHeader reads "hex-size" or "hex-size;chunk-signature=sig".
func (c *chunkedReader) parseChunkHeader(line []byte) (uint64, error) {
	line = bytes.TrimRight(line, " \t")
	sizeHex, ext, hasExt := bytes.Cut(line, []byte{';'})
	if len(sizeHex) == 0 || len(sizeHex) > 16 {
		return 0, fmt.Errorf("chunk header %.80q: bad size: %w", line, ErrMalformedChunk)
	}
	var size uint64
	for _, b := range sizeHex {
		d, ok := unhex(b)
		if !ok {
			return 0, fmt.Errorf("chunk header %.80q: bad size: %w", line, ErrMalformedChunk)
		}
		size = size<<4 | uint64(d)
	}
	if !c.signed {
		return size, nil // unsigned chunks: extensions, if any, carry nothing we check
	}
	sig, ok := bytes.CutPrefix(ext, []byte(chunkSignaturePrefix))
	if !hasExt || !ok || len(sig) != 2*sha256.Size {
		return 0, fmt.Errorf("chunk header %.80q: want size;chunk-signature=<64 hex>: %w", line, ErrMalformedChunk)
	}
	if _, err := hex.Decode(c.chunkSig[:], sig); err != nil {
		return 0, fmt.Errorf("chunk header %.80q: signature is not hex: %w", line, ErrMalformedChunk)
	}
	return size, nil
}

// endChunk reads the CRLF after a chunk's data and verifies its signature.
func (c *chunkedReader) endChunk() error {
	c.inChunk = false
	for _, want := range [2]byte{'\r', '\n'} {
		b, err := c.br.ReadByte()
		if err == io.EOF {
			return fmt.Errorf("body ended after a chunk's data: %w", ErrIncompleteBody)
		}
		if err != nil {
			return fmt.Errorf("read aws-chunked body: %w", err)
		}
		if b != want {
			return fmt.Errorf("chunk data not followed by CRLF: %w", ErrMalformedChunk)
		}
	}
	if c.signed {
		return c.verifyChunk()
	}
	return nil
}

var (
	payloadKind    = []byte("AWS4-HMAC-SHA256-PAYLOAD")
	trailerKind    = []byte("AWS4-HMAC-SHA256-TRAILER")
	emptySHA256Hex = []byte(emptySHA256)
	newline        = []byte{'\n'}
)

// chainSignature signs "<kind>\n<date>\n<scope>\n<previous signature>"
// followed by "\n<hex>" for each of hashes, the string to sign of chunks and
// trailers.
func (c *chunkedReader) chainSignature(kind []byte, hashes ...[]byte) []byte {
	c.mac.Reset()
	c.mac.Write(kind)
	c.mac.Write(c.stsTail)
	c.mac.Write(c.prevSig[:])
	for _, h := range hashes {
		c.mac.Write(newline)
		c.mac.Write(h)
	}
	return c.mac.Sum(c.scratch[:0])
}

// verifyChunk checks the current chunk's signature and advances the chain.
func (c *chunkedReader) verifyChunk() error {
	hex.Encode(c.hexBuf[:], c.chunkHash.Sum(c.scratch[:0]))
	got := c.chainSignature(payloadKind, emptySHA256Hex, c.hexBuf[:])
	if !hmac.Equal(got, c.chunkSig[:]) {
		return fmt.Errorf("chunk signature: %w", ErrSignatureMismatch)
	}
	hex.Encode(c.prevSig[:], got)
	return nil
}

// readTrailers reads what follows the final chunk header: in the trailer
// modes, optionally a blank line (as the AWS documentation's example has it),
// the declared trailers and, when signed, x-amz-trailer-signature; then a
// blank line, which may be missing at the very end of the body. It verifies
// the trailer signature and the trailing checksum. A body that ends before
// the trailers are complete, or inside a trailer line that then does not
// verify, is ErrIncompleteBody.
func (c *chunkedReader) readTrailers() (err error) {
	ended, cut := false, false
	defer func() {
		if err != nil && cut && !errors.Is(err, ErrIncompleteBody) {
			err = fmt.Errorf("body ended inside the trailers (%v): %w", err, ErrIncompleteBody)
		}
	}()
	var canonical []byte // "name:value\n" per trailer, as signed
	var value, sig string
	haveValue, haveSig := false, false
	for i := 0; !ended; i++ {
		if i >= maxTrailerLines {
			return fmt.Errorf("more than %d trailer lines: %w", maxTrailerLines, ErrMalformedChunk)
		}
		line, terminated, err := c.readLine()
		if err == io.EOF {
			ended = true
			break
		}
		if err != nil {
			return err
		}
		if len(line) == 0 {
			if i == 0 && c.trailers {
				continue
			}
			break
		}
		ended, cut = !terminated, !terminated
		if !c.trailers {
			return fmt.Errorf("trailer %.80q without a trailer mode: %w", line, ErrMalformedChunk)
		}
		n, v, ok := bytes.Cut(line, []byte{':'})
		name := strings.ToLower(string(bytes.TrimSpace(n)))
		val := string(bytes.TrimSpace(v))
		switch {
		case !ok:
			return fmt.Errorf("trailer line %.80q: %w", line, ErrMalformedChunk)
		case haveSig:
			return fmt.Errorf("trailer %q after %s: %w", name, trailerSignatureName, ErrMalformedChunk)
		case name == trailerSignatureName:
			sig, haveSig = val, true
		case name != c.trailerName || haveValue:
			return fmt.Errorf("trailer %q was not declared in x-amz-trailer: %w", name, ErrMalformedChunk)
		default:
			value, haveValue = val, true
			canonical = append(canonical, name...)
			canonical = append(canonical, ':')
			canonical = append(canonical, val...)
			canonical = append(canonical, '\n')
		}
	}
	missing := func(what string) error {
		if ended {
			return fmt.Errorf("body ended before %s: %w", what, ErrIncompleteBody)
		}
		return fmt.Errorf("%s is missing: %w", what, ErrMalformedChunk)
	}
	if c.trailerName != "" && !haveValue {
		return missing("the declared trailer " + c.trailerName)
	}
	if c.signedTrailer {
		if !haveSig {
			return missing(trailerSignatureName)
		}
		if err := c.verifyTrailer(canonical, sig); err != nil {
			return err
		}
	}
	if c.sum != nil {
		want, err := decodeChecksum(c.trailerAlg, value, c.sum.Size())
		if err != nil {
			return err
		}
		if got := c.sum.Sum(nil); !hmac.Equal(got, want) {
			return checksumMismatch(c.trailerAlg)(got)
		}
	}
	if ended {
		return nil
	}
	return c.checkEnd()
}

// verifyTrailer checks x-amz-trailer-signature against the canonical trailers.
func (c *chunkedReader) verifyTrailer(canonical []byte, sig string) error {
	var want [sha256.Size]byte
	if len(sig) != 2*sha256.Size {
		return fmt.Errorf("trailer signature: %w", ErrSignatureMismatch)
	}
	if _, err := hex.Decode(want[:], []byte(sig)); err != nil {
		return fmt.Errorf("trailer signature: %w", ErrSignatureMismatch)
	}
	sum := sha256.Sum256(canonical)
	hex.Encode(c.hexBuf[:], sum[:])
	if got := c.chainSignature(trailerKind, c.hexBuf[:]); !hmac.Equal(got, want[:]) {
		return fmt.Errorf("trailer signature: %w", ErrSignatureMismatch)
	}
	return nil
}

// checkEnd requires the body to end here, give or take a few stray CR/LF.
func (c *chunkedReader) checkEnd() error {
	for range maxTrailingCRLF + 1 {
		b, err := c.br.ReadByte()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read aws-chunked body: %w", err)
		}
		if b != '\r' && b != '\n' {
			break
		}
	}
	return fmt.Errorf("data after the final chunk: %w", ErrMalformedChunk)
}
