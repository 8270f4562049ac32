package api

import (
	"bytes"
	"crypto/subtle"
	"strings"
)

// bearer checks `Authorization: Bearer <token>` as central does
// (kache-protocol.md 2.3): the prefix is case-sensitive with exactly one
// space, the presented token is not trimmed, the configured one is, and the
// comparison is constant time.
type bearer struct {
	token []byte
}

func newBearer(token string) bearer {
	t := strings.TrimSpace(token)
	if t == "" {
		return bearer{}
	}
	return bearer{token: []byte(t)}
}

func (b bearer) enabled() bool { return b.token != nil }

type authResult int

const (
	authOK authResult = iota
	authMissing
	authWrong
)

var bearerPrefix = []byte("Bearer ")

func (b bearer) check(header []byte) authResult {
	if !b.enabled() {
		return authOK
	}
	if !bytes.HasPrefix(header, bearerPrefix) {
		return authMissing
	}
	if subtle.ConstantTimeCompare(header[len(bearerPrefix):], b.token) != 1 {
		return authWrong
	}
	return authOK
}
