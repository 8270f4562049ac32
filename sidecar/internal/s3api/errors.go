package s3api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
	"github.com/kache-planner/kache-planner/sidecar/internal/sigv4"
)

// s3Error is an error as S3 answers it: an HTTP status, a code clients
// switch on and a message for people.
type s3Error struct {
	Status  int
	Code    string
	Message string
}

func (e *s3Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *s3Error {
	return &s3Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// The errors this surface makes itself.
var (
	errNoSuchKey       = &s3Error{http.StatusNotFound, "NoSuchKey", "The specified key does not exist."}
	errNoSuchBucket    = &s3Error{http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist."}
	errNotImplemented  = &s3Error{http.StatusNotImplemented, "NotImplemented", "A header or query you provided implies functionality that is not implemented."}
	errInvalidRange    = &s3Error{http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable."}
	errEntityTooLarge  = &s3Error{http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size."}
	errMissingLength   = &s3Error{http.StatusLengthRequired, "MissingContentLength", "You must provide the Content-Length HTTP header."}
	errUnavailable     = &s3Error{http.StatusServiceUnavailable, "ServiceUnavailable", "The upstream bucket cannot be reached; please retry."}
	errSlowDown        = &s3Error{http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate."}
	errInternal        = &s3Error{http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again."}
	errInvalidKey      = &s3Error{http.StatusBadRequest, "InvalidArgument", "The object key is not allowed by this endpoint."}
	errMethodNotAllowd = &s3Error{http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource."}
	errMalformedXML    = &s3Error{http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema."}
)

// s3ErrorOf maps every error a handler can meet to the S3 error it answers,
// the one place where errors become statuses.
func s3ErrorOf(err error) *s3Error {
	var se *s3Error
	if errors.As(err, &se) {
		return se
	}
	var api *s3source.APIError
	if errors.As(err, &api) {
		// The bucket's own answer, passed through (NoSuchUpload,
		// InvalidPart, SlowDown, ...).
		status := api.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		return &s3Error{Status: status, Code: api.Code, Message: api.Message}
	}
	switch {
	case errors.Is(err, sigv4.ErrInvalidAccessKey):
		return &s3Error{http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."}
	case errors.Is(err, sigv4.ErrSignatureMismatch):
		return &s3Error{http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."}
	case errors.Is(err, sigv4.ErrRequestTimeTooSkewed):
		return &s3Error{http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large."}
	case errors.Is(err, sigv4.ErrExpired):
		return &s3Error{http.StatusForbidden, "AccessDenied", "Request has expired"}
	case errors.Is(err, sigv4.ErrAccessDenied):
		return &s3Error{http.StatusForbidden, "AccessDenied", "Access Denied"}
	case errors.Is(err, sigv4.ErrMalformedAuth):
		return &s3Error{http.StatusBadRequest, "AuthorizationHeaderMalformed", "The authorization header is malformed: " + err.Error()}
	case errors.Is(err, sigv4.ErrContentSHA256Mismatch):
		return &s3Error{http.StatusBadRequest, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed."}
	case errors.Is(err, sigv4.ErrIncompleteBody):
		return &s3Error{http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header."}
	case errors.Is(err, sigv4.ErrMalformedChunk):
		return &s3Error{http.StatusBadRequest, "InvalidRequest", "The aws-chunked body is malformed: " + err.Error()}
	case errors.Is(err, sigv4.ErrBadDigest):
		return &s3Error{http.StatusBadRequest, "BadDigest", "The Content-MD5 or checksum you specified did not match what we received."}
	case errors.Is(err, sigv4.ErrInvalidDigest):
		return &s3Error{http.StatusBadRequest, "InvalidDigest", "The Content-MD5 or checksum you specified is not valid."}
	case errors.Is(err, httpserve.ErrTimeout):
		return &s3Error{http.StatusBadRequest, "RequestTimeout", "Your socket connection to the server was not read from or written to within the timeout period."}
	case errors.Is(err, httpserve.ErrIncomplete):
		return &s3Error{http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header."}
	case errors.Is(err, reqbody.ErrTooLarge):
		return errEntityTooLarge
	case errors.Is(err, httpserve.ErrOverloaded):
		return errSlowDown
	case errors.Is(err, s3source.ErrNotFound), errors.Is(err, prefetch.ErrNotFound):
		return errNoSuchKey
	case errors.Is(err, s3source.ErrUnavailable):
		return errUnavailable
	case errors.Is(err, prefetch.ErrStopped):
		return errUnavailable
	}
	return errInternal
}
