package s3source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/minio/minio-go/v7"
)

// ErrUnavailable wraps a failure to talk to the bucket at all: connection
// refused or reset, DNS, TLS, a timeout, a response cut short. The bucket's
// own answers, errors included, are *APIError instead.
var ErrUnavailable = errors.New("bucket unavailable")

// APIError is an error the bucket answered with, as S3 names it, so that a
// surface in front of the bucket can pass it on (NoSuchKey, NoSuchUpload,
// InvalidPart, InvalidRange, BadDigest, SlowDown, AccessDenied, ...).
type APIError struct {
	// Status is the HTTP status of the bucket's answer.
	Status int
	// Code is S3's error code. For an answer without a body (a HEAD) it is
	// named after the status: 404 NoSuchKey, 503 SlowDown, ...
	Code    string
	Message string
	// Key is the object the request was about; empty for a listing.
	Key string
	// RequestID is the bucket's x-amz-request-id, for its logs.
	RequestID string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("s3 %s (%d): %s", e.Code, e.Status, e.Message)
}

// Is makes a missing object errors.Is(err, ErrNotFound), as callers of
// ReadAll, Open and Stat check.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && (e.Code == "NoSuchKey" || e.Code == "NotFound")
}

// translate turns what minio-go returned for op on key into this package's
// errors: *APIError for the bucket's answers, ErrUnavailable for a bucket
// that cannot be reached, the context's error as it is.
func translate(op, key string, err error) error {
	if err == nil {
		return nil
	}
	what := op
	if key != "" {
		what += " " + key
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return fmt.Errorf("%s: %w", what, apiErrorOf(key, er))
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func apiErrorOf(key string, er minio.ErrorResponse) *APIError {
	e := &APIError{Status: er.StatusCode, Code: er.Code, Message: er.Message, Key: er.Key, RequestID: er.RequestID}
	if e.Key == "" {
		e.Key = key
	}
	// minio-go names an error without an XML body after the status line
	// ("503 Service Unavailable"); S3 clients switch on codes.
	if e.Code == "" || strings.HasPrefix(e.Code, fmt.Sprint(e.Status)+" ") {
		e.Code = codeForStatus(e.Status)
	}
	if e.Status == 0 {
		e.Status = statusForCode(e.Code)
	}
	if e.Message == "" {
		// minio-go's text for the code when it has one, else the status's.
		e.Message = minio.ErrorResponse{Code: e.Code}.Error()
		if strings.HasPrefix(e.Message, "Error response code ") {
			e.Message = http.StatusText(e.Status)
		}
	}
	// minio-go's own argument checks carry this marker, not a request id.
	if e.RequestID == "minio" {
		e.RequestID = ""
	}
	return e
}

// codeForStatus names a status as S3 does when it answers with that status
// and no body.
func codeForStatus(status int) string {
	switch status {
	case http.StatusNotModified:
		return "NotModified"
	case http.StatusBadRequest:
		return "BadRequest"
	case http.StatusForbidden:
		return "AccessDenied"
	case http.StatusNotFound:
		return "NotFound"
	case http.StatusMethodNotAllowed:
		return "MethodNotAllowed"
	case http.StatusPreconditionFailed:
		return "PreconditionFailed"
	case http.StatusRequestedRangeNotSatisfiable:
		return "InvalidRange"
	case http.StatusInternalServerError:
		return "InternalError"
	case http.StatusNotImplemented:
		return "NotImplemented"
	case http.StatusServiceUnavailable:
		return "SlowDown"
	}
	if text := http.StatusText(status); text != "" {
		return strings.ReplaceAll(text, " ", "")
	}
	return "InternalError"
}

// statusForCode is the status S3 answers a code with, for the few errors
// minio-go makes without a status.
func statusForCode(code string) int {
	switch code {
	case "NoSuchKey", "NoSuchUpload", "NoSuchBucket", "NotFound":
		return http.StatusNotFound
	case "AccessDenied":
		return http.StatusForbidden
	case "InvalidRange":
		return http.StatusRequestedRangeNotSatisfiable
	case "PreconditionFailed":
		return http.StatusPreconditionFailed
	case "NotImplemented", "APINotSupported":
		return http.StatusNotImplemented
	case "SlowDown":
		return http.StatusServiceUnavailable
	case "InvalidArgument", "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "EntityTooLarge",
		"BadDigest", "InvalidDigest", "MalformedXML", "InvalidBucketName", "XMinioInvalidObjectName":
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// isUnavailable tells a failure to reach the bucket from everything else.
// Cancellation is the caller's, not the bucket's.
func isUnavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var (
		ue *url.Error
		oe *net.OpError
		ne net.Error
	)
	switch {
	case errors.As(err, &ue):
		// Whatever made the round trip fail: dial, DNS, TLS, a connection
		// closed before the answer (minio-go rewrites that EOF into text).
		return true
	case errors.As(err, &oe):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	case errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}
