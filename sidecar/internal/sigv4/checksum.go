package sigv4

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"strings"
)

// checksumHeaderPrefix starts the headers and trailers that carry a checksum.
const checksumHeaderPrefix = "x-amz-checksum-"

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// nvme is CRC-64/NVME: polynomial 0xad93d23594c93659, reflected, which
	// hash/crc64 takes in its reversed form.
	nvme = crc64.MakeTable(0x9a6c9329ac4bc9b5)
)

// checksumAlgorithms maps the names S3 uses in x-amz-checksum-<name> to their
// hash constructors.
var checksumAlgorithms = map[string]func() hash.Hash{
	"crc32":     func() hash.Hash { return crc32.NewIEEE() },
	"crc32c":    func() hash.Hash { return crc32.New(castagnoli) },
	"crc64nvme": func() hash.Hash { return crc64.New(nvme) },
	"sha1":      sha1.New,
	"sha256":    sha256.New,
}

// checksumNames is checksumAlgorithms' keys in a fixed order.
var checksumNames = []string{"crc32", "crc32c", "crc64nvme", "sha1", "sha256"}

// digestReader hashes what it passes through and, when the underlying reader
// reports io.EOF, compares the sum with want and fails with mismatch if they
// differ.
type digestReader struct {
	r        io.Reader
	h        hash.Hash
	want     []byte
	mismatch func(got []byte) error
	err      error
}

func (d *digestReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF {
		if got := d.h.Sum(nil); subtle.ConstantTimeCompare(got, d.want) != 1 {
			err = d.mismatch(got)
		}
	}
	if err != nil {
		d.err = err
	}
	return n, err
}

// NewSHA256Reader returns a reader of r that fails with
// ErrContentSHA256Mismatch at EOF unless what it read hashes to hexSum, the
// value of x-amz-content-sha256. A malformed hexSum is ErrMalformedAuth.
func NewSHA256Reader(r io.Reader, hexSum string) (io.Reader, error) {
	want, err := hex.DecodeString(hexSum)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("x-amz-content-sha256 %q is not a hex sha256: %w", hexSum, ErrMalformedAuth)
	}
	return newSHA256Reader(r, want), nil
}

func newSHA256Reader(r io.Reader, want []byte) io.Reader {
	return &digestReader{r: r, h: sha256.New(), want: want, mismatch: func(got []byte) error {
		return fmt.Errorf("body sha256 %x: %w", got, ErrContentSHA256Mismatch)
	}}
}

// NewMD5Reader returns a reader of r that fails with ErrBadDigest at EOF
// unless what it read matches contentMD5, the base64 Content-MD5 header. A
// malformed contentMD5 is ErrInvalidDigest.
func NewMD5Reader(r io.Reader, contentMD5 string) (io.Reader, error) {
	want, err := base64.StdEncoding.DecodeString(contentMD5)
	if err != nil || len(want) != md5.Size {
		return nil, fmt.Errorf("content-md5 %q is not a base64 md5: %w", contentMD5, ErrInvalidDigest)
	}
	return &digestReader{r: r, h: md5.New(), want: want, mismatch: func(got []byte) error {
		return fmt.Errorf("the content-md5 you specified did not match what was received (got %s): %w",
			base64.StdEncoding.EncodeToString(got), ErrBadDigest)
	}}, nil
}

// NewChecksumReader returns a reader of r that fails with ErrBadDigest at EOF
// unless what it read matches value, the base64 checksum an
// x-amz-checksum-<algorithm> header carries. algorithm is one of crc32,
// crc32c, crc64nvme, sha1 or sha256; another algorithm or a malformed value
// is ErrInvalidDigest.
func NewChecksumReader(r io.Reader, algorithm, value string) (io.Reader, error) {
	h, want, err := parseChecksum(algorithm, value)
	if err != nil {
		return nil, err
	}
	return &digestReader{r: r, h: h, want: want, mismatch: checksumMismatch(algorithm)}, nil
}

// parseChecksum returns a fresh hash for algorithm and the decoded value.
func parseChecksum(algorithm, value string) (hash.Hash, []byte, error) {
	newHash, ok := checksumAlgorithms[algorithm]
	if !ok {
		return nil, nil, fmt.Errorf("checksum algorithm %q is not supported: %w", algorithm, ErrInvalidDigest)
	}
	h := newHash()
	want, err := decodeChecksum(algorithm, value, h.Size())
	if err != nil {
		return nil, nil, err
	}
	return h, want, nil
}

// decodeChecksum decodes the base64 value of a size-byte checksum.
func decodeChecksum(algorithm, value string, size int) ([]byte, error) {
	want, err := base64.StdEncoding.DecodeString(value)
	if err != nil || len(want) != size {
		return nil, fmt.Errorf("value for %s%s %q is invalid: %w", checksumHeaderPrefix, algorithm, value, ErrInvalidDigest)
	}
	return want, nil
}

func checksumMismatch(algorithm string) func(got []byte) error {
	return func(got []byte) error {
		return fmt.Errorf("the %s you specified did not match the calculated checksum (%s): %w",
			strings.ToUpper(algorithm), base64.StdEncoding.EncodeToString(got), ErrBadDigest)
	}
}
