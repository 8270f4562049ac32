// Package reqbody checks and decodes request bodies the way kache-service
// (axum) does, so central and the sidecar refuse the same requests with the
// same errors: a wrong content type or encoding, a body over its limit, JSON
// that does not parse, and JSON that parses but has the wrong shape. Each API
// maps these sentinels to 415, 413, 400 and 422 in its own statusOf.
package reqbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by this package, wrapped with detail.
var (
	// ErrUnsupportedMedia: the content type or encoding is not accepted (415).
	ErrUnsupportedMedia = errors.New("unsupported media type")
	// ErrTooLarge: the body is over its limit (413).
	ErrTooLarge = errors.New("request body too large")
	// ErrMalformed: the body is empty or not JSON (400).
	ErrMalformed = errors.New("malformed JSON")
	// ErrWrongShape: the body is JSON of the wrong shape (422).
	ErrWrongShape = errors.New("JSON does not match the expected shape")
)

// IsJSON accepts application/json and application/*+json, with parameters.
func IsJSON(contentType []byte) bool {
	ct := contentType
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	mt := strings.ToLower(string(bytes.TrimSpace(ct)))
	sub, ok := strings.CutPrefix(mt, "application/")
	return ok && (sub == "json" || (len(sub) > len("+json") && strings.HasSuffix(sub, "+json")))
}

// CheckJSON checks a JSON request's content type, then its size against
// limit.
func CheckJSON(contentType, body []byte, limit int) error {
	if !IsJSON(contentType) {
		return fmt.Errorf("%w: want Content-Type application/json", ErrUnsupportedMedia)
	}
	if len(body) > limit {
		return fmt.Errorf("%w: %d bytes over the %d-byte limit", ErrTooLarge, len(body), limit)
	}
	return nil
}

// Unmarshal decodes body into v. An empty body or a syntax error is
// ErrMalformed; JSON that does not fit v is ErrWrongShape.
func Unmarshal(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || len(body) == 0 {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return fmt.Errorf("%w: %w", ErrWrongShape, err)
	}
	return nil
}

// DecodeJSON is CheckJSON then Unmarshal.
func DecodeJSON(contentType, body []byte, limit int, v any) error {
	if err := CheckJSON(contentType, body, limit); err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// CheckZstd checks a build-timeline envelope (kache-protocol.md 7): the
// Content-Encoding must be zstd (any case, surrounding space ignored) and the
// compressed body at most limit bytes.
func CheckZstd(contentEncoding, body []byte, limit int) error {
	if strings.ToLower(string(bytes.TrimSpace(contentEncoding))) != "zstd" {
		return fmt.Errorf("%w: build timelines must be sent with Content-Encoding: zstd", ErrUnsupportedMedia)
	}
	if len(body) > limit {
		return fmt.Errorf("%w: %d compressed bytes over the %d-byte limit", ErrTooLarge, len(body), limit)
	}
	return nil
}
