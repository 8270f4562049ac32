package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
)

const (
	algorithm    = "AWS4-HMAC-SHA256"
	iso8601Basic = "20060102T150405Z"
	scopeDate    = "20060102"
	scopeService = "s3"
	scopeTerm    = "aws4_request"
	emptySHA256  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

const upperhex = "0123456789ABCDEF"

// unreserved reports whether SigV4's URI encoding leaves c as is
// (RFC 3986 unreserved: A-Z a-z 0-9 - . _ ~).
func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// uriEncode percent-encodes every byte of s outside the unreserved set, with
// uppercase hex, keeping '/' when keepSlash is set (paths) and encoding it
// otherwise (query names and values).
func uriEncode(s string, keepSlash bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; !unreserved(c) && (c != '/' || !keepSlash) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) || c == '/' && keepSlash {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperhex[c>>4])
		b.WriteByte(upperhex[c&15])
	}
	return b.String()
}

var errBadEscape = errors.New("invalid percent-encoding")

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// percentDecode undoes percent-encoding; with plusIsSpace (query strings, as
// net/url, the AWS SDKs and fasthttp read them) a '+' is a space.
func percentDecode(s string, plusIsSpace bool) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%':
			if i+2 >= len(s) {
				return "", errBadEscape
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", errBadEscape
			}
			b = append(b, hi<<4|lo)
			i += 2
		case c == '+' && plusIsSpace:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

// canonicalURIs returns the canonical URIs a client may have signed for the
// raw path, best first. S3 signs the path URI-encoded once, so the first is
// the decoded path re-encoded with SigV4's rules, which accepts clients that
// send a character raw and sign it encoded (or the reverse). The second, when
// different, is the path exactly as sent, for clients that sign what they
// send with another encoding (e.g. '+' or '=' left raw); both decode to the
// same object key, so accepting either signs the same request.
func canonicalURIs(rawPath string) []string {
	if rawPath == "" {
		return []string{"/"}
	}
	decoded, err := percentDecode(rawPath, false)
	if err != nil {
		return []string{rawPath}
	}
	norm := uriEncode(decoded, true)
	if norm == rawPath {
		return []string{norm}
	}
	return []string{norm, rawPath}
}

// queryParam is one decoded query parameter.
type queryParam struct {
	key, value string
}

// parseQuery splits a raw query string into decoded parameters in order.
func parseQuery(rawQuery string) ([]queryParam, error) {
	var params []queryParam
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := percentDecode(k, true)
		if err != nil {
			return nil, err
		}
		dv, err := percentDecode(v, true)
		if err != nil {
			return nil, err
		}
		params = append(params, queryParam{key: dk, value: dv})
	}
	return params, nil
}

// canonicalQueries returns the canonical query strings a client may have
// signed, best first, leaving out the parameter named skip. SigV4 sorts the
// encoded names, then the encoded values; older signers (net/url's
// Values.Encode, as minio-go and older AWS SDKs use) sort the decoded names
// and keep repeated values in arrival order. The two differ only for unusual
// names or repeated keys, and order never changes a request's meaning, so the
// second is offered when it differs.
func canonicalQueries(params []queryParam, skip string) []string {
	enc := make([]queryParam, 0, len(params))
	dec := make([]queryParam, 0, len(params))
	for _, p := range params {
		if p.key == skip {
			continue
		}
		dec = append(dec, p)
		enc = append(enc, queryParam{key: uriEncode(p.key, false), value: uriEncode(p.value, false)})
	}
	slices.SortFunc(enc, func(a, b queryParam) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return strings.Compare(a.value, b.value)
	})
	first := joinQuery(enc)
	slices.SortStableFunc(dec, func(a, b queryParam) int { return strings.Compare(a.key, b.key) })
	for i := range dec {
		dec[i] = queryParam{key: uriEncode(dec[i].key, false), value: uriEncode(dec[i].value, false)}
	}
	if second := joinQuery(dec); second != first {
		return []string{first, second}
	}
	return []string{first}
}

func joinQuery(params []queryParam) string {
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.key)
		b.WriteByte('=')
		b.WriteString(p.value)
	}
	return b.String()
}

// canonicalHeaderValue trims spaces and tabs at both ends and collapses runs
// of spaces inside, as SigV4 (and the AWS SDKs) do.
func canonicalHeaderValue(v string) string {
	v = strings.Trim(v, " \t")
	if !strings.Contains(v, "  ") {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	space := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(c)
	}
	return b.String()
}

// canonicalHeaders renders the "name:value\n" lines for the signed headers,
// in the order the client listed them.
func canonicalHeaders(signed []string, host string, h Header) string {
	var b strings.Builder
	for _, name := range signed {
		v := host
		if name != "host" {
			v = h.Get(name)
		}
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(v))
		b.WriteByte('\n')
	}
	return b.String()
}

// canonicalRequest joins the parts of a SigV4 canonical request.
func canonicalRequest(method, uri, query, headers, signedHeaders, payload string) string {
	var b strings.Builder
	b.Grow(len(method) + len(uri) + len(query) + len(headers) + len(signedHeaders) + len(payload) + 5)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(uri)
	b.WriteByte('\n')
	b.WriteString(query)
	b.WriteByte('\n')
	b.WriteString(headers)
	b.WriteByte('\n')
	b.WriteString(signedHeaders)
	b.WriteByte('\n')
	b.WriteString(payload)
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signingKey derives the SigV4 key for one date and region of the s3 service.
func signingKey(secret, date, region string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, scopeService)
	return hmacSHA256(k, scopeTerm)
}

// requestSignature signs a canonical request: the hex HMAC of the string to
// sign "AWS4-HMAC-SHA256\n<date>\n<scope>\n<hex sha256 of the request>".
func requestSignature(key []byte, amzDate, scope, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	sts := algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	return hex.EncodeToString(hmacSHA256(key, sts))
}
