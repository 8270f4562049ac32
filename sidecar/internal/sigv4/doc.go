// Package sigv4 authenticates S3 requests signed with AWS Signature Version 4
// against one access key/secret key pair, and decodes and verifies their
// bodies. It is transport-free: callers pass the method, the raw path and
// query as sent, the Host and a header accessor, and wrap the raw body reader.
//
// What it does:
//   - Verifier.Verify checks header-signed requests (Authorization:
//     AWS4-HMAC-SHA256 ...) and presigned URLs (X-Amz-Signature in the query)
//     the way S3 builds the canonical request: the path is not double-encoded,
//     the query is sorted and re-encoded with SigV4's rules, header values are
//     trimmed with inner spaces collapsed, and host must be signed. It checks
//     the clock (15 minutes of skew; presigned URLs until X-Amz-Date +
//     X-Amz-Expires, at most 7 days) and tells how the body is protected
//     (Auth.Payload, from x-amz-content-sha256).
//   - Auth.Body wraps the raw body so that reading it yields the object's bytes
//     and fails if the body is not what was signed or declared: aws-chunked
//     decoding (signed chunks, signed or unsigned trailers), chunk and trailer
//     signature chains, x-amz-decoded-content-length, the x-amz-content-sha256
//     digest, Content-MD5, and x-amz-checksum-* values sent as a header or a
//     trailer (crc32, crc32c, crc64nvme, sha1, sha256).
//
// What it is not: an HTTP server or router (no fasthttp here), a credential
// store (one key pair, no STS session tokens, no IAM policies), nor SigV2,
// SigV4a (ECDSA), browser POST policies or the ECDSA streaming modes, which
// fail as unsupported with ErrAccessDenied.
//
// Body readers verify as they stream and never hold more than a few KiB: a
// chunk's data is handed to the caller before its signature can be checked
// (that needs the whole chunk), and digests are only known at the end. A
// consumer must therefore read until io.EOF and must not commit anything it
// read (rename a temp file, answer 200) unless that read returned io.EOF
// without another error.
//
// Errors are sentinels to test with errors.Is; the returned errors wrap them
// with detail. The S3 error code each one stands for:
//
//	ErrAccessDenied          403 AccessDenied (no or unsupported auth, bad date, not yet valid)
//	ErrInvalidAccessKey      403 InvalidAccessKeyId
//	ErrSignatureMismatch     403 SignatureDoesNotMatch (request, chunk or trailer signature)
//	ErrRequestTimeTooSkewed  403 RequestTimeTooSkewed
//	ErrExpired               403 AccessDenied, "Request has expired"
//	ErrMalformedAuth         400 AuthorizationHeaderMalformed, or AuthorizationQueryParametersError for presigned URLs
//	                             (also a missing or invalid x-amz-content-sha256: S3's InvalidRequest/InvalidArgument)
//	ErrContentSHA256Mismatch 400 XAmzContentSHA256Mismatch
//	ErrIncompleteBody        400 IncompleteBody
//	ErrMalformedChunk        400 InvalidRequest (S3 has no closer code for a broken aws-chunked body)
//	ErrBadDigest             400 BadDigest (Content-MD5 or x-amz-checksum-* did not match)
//	ErrInvalidDigest         400 InvalidDigest (Content-MD5 or x-amz-checksum-* value malformed)
//
// ErrBadDigest covers checksum mismatches too, as AWS S3 answers them ("The
// CRC32 you specified did not match the calculated checksum"); the error text
// names the algorithm.
package sigv4

import "errors"

// Errors returned by Verify and by the body readers; see the package doc for
// the S3 error code of each.
var (
	ErrAccessDenied          = errors.New("access denied")
	ErrInvalidAccessKey      = errors.New("access key id does not exist")
	ErrSignatureMismatch     = errors.New("signature does not match")
	ErrRequestTimeTooSkewed  = errors.New("request time too skewed")
	ErrExpired               = errors.New("request has expired")
	ErrMalformedAuth         = errors.New("malformed authorization")
	ErrContentSHA256Mismatch = errors.New("x-amz-content-sha256 does not match the body")
	ErrIncompleteBody        = errors.New("incomplete body")
	ErrMalformedChunk        = errors.New("malformed aws-chunked body")
	ErrBadDigest             = errors.New("digest does not match the body")
	ErrInvalidDigest         = errors.New("invalid digest")
)
