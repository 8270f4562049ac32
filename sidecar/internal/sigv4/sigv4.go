package sigv4

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// MaxClockSkew is how far a header-signed request's date may be from the
	// verifier's clock, and how early a presigned URL may be used.
	MaxClockSkew = 15 * time.Minute
	// MaxPresignExpiry is the longest X-Amz-Expires a presigned URL may ask for.
	MaxPresignExpiry = 7 * 24 * time.Hour
)

// Header looks up a request header by its lowercase name and returns "" when
// it is absent. A repeated header's values are joined with "," in arrival
// order, as SigV4 canonicalises them. It must answer for every header a client
// may sign, content-length and content-type included.
type Header interface {
	Get(name string) string
}

// HeaderMap is a Header keyed by lowercase names.
type HeaderMap map[string]string

// Get returns the value stored under name.
func (h HeaderMap) Get(name string) string { return h[name] }

type noHeader struct{}

func (noHeader) Get(string) string { return "" }

// Request is what Verify needs of an HTTP request.
type Request struct {
	// Method is the HTTP method, e.g. "PUT".
	Method string
	// RawPath is the path as sent on the request line, still URI-encoded,
	// without the query, e.g. "/bucket/a%20b".
	RawPath string
	// RawQuery is the query string as sent, without '?'.
	RawQuery string
	// Host is the Host header as sent, with its port if it has one; ""
	// means Header's "host".
	Host string
	// Header gives the other headers; nil means none.
	Header Header
}

// Payload tells how a request's body is protected, from its
// x-amz-content-sha256 header.
type Payload int

// The payload modes of S3's SigV4.
const (
	// PayloadSHA256: x-amz-content-sha256 is the hex SHA-256 of the body.
	PayloadSHA256 Payload = iota + 1
	// PayloadUnsigned: UNSIGNED-PAYLOAD; presigned URLs default to it.
	PayloadUnsigned
	// PayloadStreamingSigned: STREAMING-AWS4-HMAC-SHA256-PAYLOAD, an
	// aws-chunked body whose chunks are signed.
	PayloadStreamingSigned
	// PayloadStreamingSignedTrailer: STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER,
	// signed chunks followed by signed trailers.
	PayloadStreamingSignedTrailer
	// PayloadStreamingUnsignedTrailer: STREAMING-UNSIGNED-PAYLOAD-TRAILER,
	// unsigned chunks followed by trailers, as the AWS SDKs send a checksum.
	PayloadStreamingUnsignedTrailer
)

var payloadNames = [...]string{
	PayloadSHA256:                   "sha256",
	PayloadUnsigned:                 "UNSIGNED-PAYLOAD",
	PayloadStreamingSigned:          "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
	PayloadStreamingSignedTrailer:   "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
	PayloadStreamingUnsignedTrailer: "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
}

// String returns the x-amz-content-sha256 token of the mode, or "sha256".
func (p Payload) String() string {
	if p > 0 && int(p) < len(payloadNames) {
		return payloadNames[p]
	}
	return "Payload(" + strconv.Itoa(int(p)) + ")"
}

// Streaming reports whether the body is aws-chunked encoded.
func (p Payload) Streaming() bool { return p >= PayloadStreamingSigned }

// parsePayload reads an x-amz-content-sha256 value.
func parsePayload(v string) (Payload, [32]byte, error) {
	var sum [32]byte
	for p := PayloadUnsigned; int(p) < len(payloadNames); p++ {
		if v == payloadNames[p] {
			return p, sum, nil
		}
	}
	if len(v) == 2*len(sum) {
		if _, err := hex.Decode(sum[:], []byte(v)); err == nil {
			return PayloadSHA256, sum, nil
		}
	}
	return 0, sum, fmt.Errorf("x-amz-content-sha256 %q is neither a sha256 nor a supported mode: %w", v, ErrMalformedAuth)
}

// Config is the one key pair a Verifier accepts.
type Config struct {
	AccessKey string
	SecretKey string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks SigV4 signatures made with one key pair. It is safe for
// concurrent use.
type Verifier struct {
	accessKey string
	secretKey string
	now       func() time.Time
}

// New returns a Verifier for cfg's key pair.
func New(cfg Config) (*Verifier, error) {
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("new sigv4 verifier: access key and secret key are required")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{accessKey: cfg.AccessKey, secretKey: cfg.SecretKey, now: now}, nil
}

// Auth is a verified request's signature context.
type Auth struct {
	// AccessKey is the access key that signed the request.
	AccessKey string
	// Region is the region of the credential scope.
	Region string
	// Time is the signing time (X-Amz-Date, or Date).
	Time time.Time
	// Presigned is set for a presigned URL.
	Presigned bool
	// Payload tells how the body is protected; Body enforces it.
	Payload Payload

	sha256    [32]byte // the declared digest, for PayloadSHA256
	amzDate   string   // the date line of the string to sign
	scope     string   // date/region/s3/aws4_request
	key       []byte   // the signing key, for chunk and trailer signatures
	signature string   // the verified request signature: the chunk chain's seed
}

// Verify authenticates r. It returns ErrAccessDenied for a request without
// SigV4 auth (or with a kind it does not support), and otherwise one of the
// package's errors for a request whose auth does not hold.
func (v *Verifier) Verify(r Request) (*Auth, error) {
	if r.Header == nil {
		r.Header = noHeader{}
	}
	if r.Host == "" {
		r.Host = r.Header.Get("host")
	}
	authz := r.Header.Get("authorization")
	params, qerr := parseQuery(r.RawQuery)
	presigned := false
	for _, p := range params {
		if p.key == "X-Amz-Algorithm" || p.key == "X-Amz-Credential" || p.key == "X-Amz-Signature" {
			presigned = true
			break
		}
	}
	switch {
	case qerr != nil && (authz != "" || strings.Contains(r.RawQuery, "X-Amz-")):
		return nil, fmt.Errorf("parse query string: %w: %w", ErrMalformedAuth, qerr)
	case authz != "" && presigned:
		return nil, fmt.Errorf("both an Authorization header and query authentication: %w", ErrMalformedAuth)
	case authz != "":
		return v.verifyHeader(r, authz, params)
	case presigned:
		return v.verifyPresigned(r, params)
	default:
		return nil, fmt.Errorf("request is not signed: %w", ErrAccessDenied)
	}
}

// credential is a parsed Credential=AK/date/region/s3/aws4_request.
type credential struct {
	accessKey, date, region string
}

func (c credential) scope() string {
	return c.date + "/" + c.region + "/" + scopeService + "/" + scopeTerm
}

// parseCredential splits a credential from the right, so that an access key
// containing '/' still parses.
func parseCredential(s string) (credential, error) {
	parts := strings.Split(s, "/")
	n := len(parts)
	if n < 5 {
		return credential{}, fmt.Errorf("credential %q: want AK/date/region/s3/aws4_request: %w", s, ErrMalformedAuth)
	}
	c := credential{accessKey: strings.Join(parts[:n-4], "/"), date: parts[n-4], region: parts[n-3]}
	switch {
	case c.accessKey == "":
		return c, fmt.Errorf("credential %q: empty access key: %w", s, ErrMalformedAuth)
	case c.region == "":
		return c, fmt.Errorf("credential %q: empty region: %w", s, ErrMalformedAuth)
	case parts[n-2] != scopeService:
		return c, fmt.Errorf("credential %q: service must be s3: %w", s, ErrMalformedAuth)
	case parts[n-1] != scopeTerm:
		return c, fmt.Errorf("credential %q: must end in aws4_request: %w", s, ErrMalformedAuth)
	}
	if _, err := time.Parse(scopeDate, c.date); err != nil {
		return c, fmt.Errorf("credential %q: bad date: %w", s, ErrMalformedAuth)
	}
	return c, nil
}

// parseSignedHeaders splits "host;x-amz-date" and requires host.
func parseSignedHeaders(s string) ([]string, error) {
	if s == "" {
		return nil, fmt.Errorf("no signed headers: %w", ErrMalformedAuth)
	}
	names := strings.Split(s, ";")
	host := false
	for _, n := range names {
		if n == "" || n != strings.ToLower(n) {
			return nil, fmt.Errorf("signed headers %q: names must be lowercase and non-empty: %w", s, ErrMalformedAuth)
		}
		host = host || n == "host"
	}
	if !host {
		return nil, fmt.Errorf("signed headers %q: host must be signed: %w", s, ErrMalformedAuth)
	}
	return names, nil
}

// parseAuthorization reads "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(authz string) (cred, signedHeaders, signature string, err error) {
	rest, ok := strings.CutPrefix(authz, algorithm)
	if ok && strings.TrimSpace(rest) == "" {
		return "", "", "", fmt.Errorf("authorization header has no fields: %w", ErrMalformedAuth)
	}
	if !ok || rest[0] != ' ' {
		alg, _, _ := strings.Cut(authz, " ")
		return "", "", "", fmt.Errorf("authorization type %q is not supported: %w", alg, ErrAccessDenied)
	}
	seen := map[string]*string{"Credential": &cred, "SignedHeaders": &signedHeaders, "Signature": &signature}
	for field := range strings.SplitSeq(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(field), "=")
		dst := seen[k]
		if !ok || dst == nil {
			return "", "", "", fmt.Errorf("authorization field %q: %w", field, ErrMalformedAuth)
		}
		*dst = val
		delete(seen, k)
	}
	if len(seen) > 0 {
		return "", "", "", fmt.Errorf("authorization header lacks a field (want Credential, SignedHeaders, Signature): %w", ErrMalformedAuth)
	}
	return cred, signedHeaders, signature, nil
}

func (v *Verifier) verifyHeader(r Request, authz string, params []queryParam) (*Auth, error) {
	credStr, signedStr, sig, err := parseAuthorization(authz)
	if err != nil {
		return nil, err
	}
	cred, err := parseCredential(credStr)
	if err != nil {
		return nil, err
	}
	if cred.accessKey != v.accessKey {
		return nil, fmt.Errorf("access key %q: %w", cred.accessKey, ErrInvalidAccessKey)
	}
	signed, err := parseSignedHeaders(signedStr)
	if err != nil {
		return nil, err
	}

	var t time.Time
	amzDate := r.Header.Get("x-amz-date")
	if amzDate != "" {
		if t, err = time.Parse(iso8601Basic, amzDate); err != nil {
			return nil, fmt.Errorf("x-amz-date %q: %w", amzDate, ErrAccessDenied)
		}
	} else {
		d := r.Header.Get("date")
		if d == "" {
			return nil, fmt.Errorf("neither x-amz-date nor date is set: %w", ErrAccessDenied)
		}
		if t, err = http.ParseTime(d); err != nil {
			return nil, fmt.Errorf("date %q: %w", d, ErrAccessDenied)
		}
		amzDate = t.UTC().Format(iso8601Basic)
	}
	if cred.date != t.UTC().Format(scopeDate) {
		return nil, fmt.Errorf("credential date %s is not the request date %s: %w", cred.date, amzDate, ErrMalformedAuth)
	}
	if d := v.now().Sub(t); d > MaxClockSkew || d < -MaxClockSkew {
		return nil, fmt.Errorf("request date %s is %s from now: %w", amzDate, d.Round(time.Second), ErrRequestTimeTooSkewed)
	}

	contentSHA := r.Header.Get("x-amz-content-sha256")
	if contentSHA == "" {
		return nil, fmt.Errorf("x-amz-content-sha256 is required: %w", ErrMalformedAuth)
	}
	payload, sum, err := parsePayload(contentSHA)
	if err != nil {
		return nil, err
	}

	a := &Auth{
		AccessKey: cred.accessKey, Region: cred.region, Time: t, Payload: payload,
		sha256: sum, amzDate: amzDate, scope: cred.scope(),
		key: signingKey(v.secretKey, cred.date, cred.region),
	}
	if err := a.check(r, signed, signedStr, canonicalQueries(params, ""), []string{contentSHA}, sig); err != nil {
		return nil, err
	}
	return a, nil
}

// queryValue returns the first value of the parameter named key.
func queryValue(params []queryParam, key string) (string, bool) {
	for _, p := range params {
		if p.key == key {
			return p.value, true
		}
	}
	return "", false
}

func (v *Verifier) verifyPresigned(r Request, params []queryParam) (*Auth, error) {
	get := func(k string) (string, error) {
		val, ok := queryValue(params, k)
		if !ok || val == "" {
			return "", fmt.Errorf("query parameter %s is required: %w", k, ErrMalformedAuth)
		}
		return val, nil
	}
	alg, err := get("X-Amz-Algorithm")
	if err != nil {
		return nil, err
	}
	if alg != algorithm {
		return nil, fmt.Errorf("X-Amz-Algorithm %q is not supported: %w", alg, ErrAccessDenied)
	}
	credStr, err := get("X-Amz-Credential")
	if err != nil {
		return nil, err
	}
	amzDate, err := get("X-Amz-Date")
	if err != nil {
		return nil, err
	}
	expiresStr, err := get("X-Amz-Expires")
	if err != nil {
		return nil, err
	}
	signedStr, err := get("X-Amz-SignedHeaders")
	if err != nil {
		return nil, err
	}
	sig, err := get("X-Amz-Signature")
	if err != nil {
		return nil, err
	}

	cred, err := parseCredential(credStr)
	if err != nil {
		return nil, err
	}
	if cred.accessKey != v.accessKey {
		return nil, fmt.Errorf("access key %q: %w", cred.accessKey, ErrInvalidAccessKey)
	}
	t, err := time.Parse(iso8601Basic, amzDate)
	if err != nil {
		return nil, fmt.Errorf("X-Amz-Date %q: %w", amzDate, ErrMalformedAuth)
	}
	secs, err := strconv.ParseInt(expiresStr, 10, 64)
	if err != nil || secs < 0 {
		return nil, fmt.Errorf("X-Amz-Expires %q must be a non-negative number of seconds: %w", expiresStr, ErrMalformedAuth)
	}
	if secs > int64(MaxPresignExpiry/time.Second) {
		return nil, fmt.Errorf("X-Amz-Expires %d must be at most 604800 (7 days): %w", secs, ErrMalformedAuth)
	}
	if cred.date != t.Format(scopeDate) {
		return nil, fmt.Errorf("credential date %s is not X-Amz-Date %s: %w", cred.date, amzDate, ErrMalformedAuth)
	}
	signed, err := parseSignedHeaders(signedStr)
	if err != nil {
		return nil, err
	}
	now := v.now()
	if now.Before(t.Add(-MaxClockSkew)) {
		return nil, fmt.Errorf("request is not valid yet (X-Amz-Date %s): %w", amzDate, ErrAccessDenied)
	}
	if now.After(t.Add(time.Duration(secs) * time.Second)) {
		return nil, fmt.Errorf("X-Amz-Date %s + X-Amz-Expires %d: %w", amzDate, secs, ErrExpired)
	}

	// The payload line is UNSIGNED-PAYLOAD unless the URL or a header
	// declares another. A declared one may not have been signed (the URL was
	// presigned with UNSIGNED-PAYLOAD), so UNSIGNED-PAYLOAD is tried too; the
	// body is still held to what is declared, which only adds checks.
	unsigned := payloadNames[PayloadUnsigned]
	contentSHA, ok := queryValue(params, "X-Amz-Content-Sha256")
	if !ok {
		contentSHA = r.Header.Get("x-amz-content-sha256")
	}
	payloads := []string{unsigned}
	if contentSHA == "" {
		contentSHA = unsigned
	} else if contentSHA != unsigned {
		payloads = []string{contentSHA, unsigned}
	}
	payload, sum, err := parsePayload(contentSHA)
	if err != nil {
		return nil, err
	}

	a := &Auth{
		AccessKey: cred.accessKey, Region: cred.region, Time: t, Presigned: true, Payload: payload,
		sha256: sum, amzDate: amzDate, scope: cred.scope(),
		key: signingKey(v.secretKey, cred.date, cred.region),
	}
	if err := a.check(r, signed, signedStr, canonicalQueries(params, "X-Amz-Signature"), payloads, sig); err != nil {
		return nil, err
	}
	return a, nil
}

// check computes the signature over each canonical form the client may have
// signed and compares it with sig in constant time. On success it keeps the
// signature as the seed of the chunk chain.
func (a *Auth) check(r Request, signed []string, signedStr string, queries, payloads []string, sig string) error {
	headers := canonicalHeaders(signed, r.Host, r.Header)
	for _, uri := range canonicalURIs(r.RawPath) {
		for _, q := range queries {
			for _, payload := range payloads {
				cr := canonicalRequest(r.Method, uri, q, headers, signedStr, payload)
				want := requestSignature(a.key, a.amzDate, a.scope, cr)
				if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1 {
					a.signature = want
					return nil
				}
			}
		}
	}
	return ErrSignatureMismatch
}
