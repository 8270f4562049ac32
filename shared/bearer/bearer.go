// Package bearer checks `Authorization: Bearer <token>` headers as
// kache-protocol.md 2.3 defines them: the prefix is case-sensitive with
// exactly one space, the configured token is trimmed, the presented one is
// not, and the comparison is constant time. Central and the sidecar check
// their plan (and ingest) routes with it.
package bearer

import (
	"bytes"
	"crypto/subtle"
	"strings"
)

// Result is the outcome of checking one Authorization header.
type Result int

const (
	// OK: auth is disabled, or the header carries the configured token.
	OK Result = iota
	// Missing: no header, or one without the exact `Bearer ` prefix.
	Missing
	// Wrong: a bearer token that is not the configured one.
	Wrong
)

var prefix = []byte("Bearer ")

// Checker holds the configured token. The zero Checker accepts everything.
type Checker struct {
	token []byte
}

// New returns a Checker for token. A blank token disables auth.
func New(token string) Checker {
	t := strings.TrimSpace(token)
	if t == "" {
		return Checker{}
	}
	return Checker{token: []byte(t)}
}

// Enabled reports whether a token is required.
func (c Checker) Enabled() bool { return c.token != nil }

// Check classifies the raw value of an Authorization header (nil when
// absent).
func (c Checker) Check(header []byte) Result {
	if !c.Enabled() {
		return OK
	}
	if !bytes.HasPrefix(header, prefix) {
		return Missing
	}
	if subtle.ConstantTimeCompare(header[len(prefix):], c.token) != 1 {
		return Wrong
	}
	return OK
}
