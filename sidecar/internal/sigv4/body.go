package sigv4

import (
	"fmt"
	"io"
)

// Body wraps a verified request's raw body, as read from the connection, so
// that reading the result yields the object's bytes and verifies, as they
// stream, everything the request declared about them:
//   - the aws-chunked encoding of the streaming modes: chunk signatures,
//     x-amz-decoded-content-length, the x-amz-trailer checksum and its
//     signature (ErrMalformedChunk, ErrIncompleteBody, ErrSignatureMismatch,
//     ErrBadDigest);
//   - the hex x-amz-content-sha256 of PayloadSHA256 (ErrContentSHA256Mismatch);
//   - a Content-MD5 header (ErrBadDigest);
//   - an x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256} header (ErrBadDigest).
//
// h gives the request's headers (nil means none). Malformed declarations fail
// here: ErrMalformedChunk for a missing x-amz-decoded-content-length or an
// unsupported x-amz-trailer, ErrInvalidDigest for a malformed digest or more
// than one checksum. raw must end where the body ends (at Content-Length).
//
// The result holds a few KiB at most; it hands out data before the digests
// and signatures covering it are checked, so a consumer must read to io.EOF
// and commit nothing unless that read returned io.EOF and no other error.
// Content-Encoding's aws-chunked token is the caller's to strip before it
// stores the object's metadata.
func (a *Auth) Body(raw io.Reader, h Header) (io.Reader, error) {
	if h == nil {
		h = noHeader{}
	}
	var alg, value string
	checksums := 0
	for _, name := range checksumNames {
		if v := h.Get(checksumHeaderPrefix + name); v != "" {
			alg, value = name, v
			checksums++
		}
	}

	r := raw
	switch {
	case a.Payload == PayloadSHA256:
		r = newSHA256Reader(r, a.sha256[:])
	case a.Payload.Streaming():
		cr, err := newChunkedReader(r, a, h)
		if err != nil {
			return nil, err
		}
		if cr.trailerName != "" {
			checksums++
		}
		r = cr
	}
	if checksums > 1 {
		return nil, fmt.Errorf("expecting a single x-amz-checksum- header or trailer: %w", ErrInvalidDigest)
	}
	if v := h.Get("content-md5"); v != "" {
		var err error
		if r, err = NewMD5Reader(r, v); err != nil {
			return nil, err
		}
	}
	if alg != "" {
		var err error
		if r, err = NewChecksumReader(r, alg, value); err != nil {
			return nil, err
		}
	}
	return r, nil
}
