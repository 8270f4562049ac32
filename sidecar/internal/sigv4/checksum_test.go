package sigv4_test

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kache-planner/kache-planner/sidecar/internal/sigv4"
)

// TestChecksumReader checks each algorithm against published check values
// (the CRC catalogue's "123456789" vectors, FIPS 180 "abc") and the failures.
func TestChecksumReader(t *testing.T) {
	tests := []struct {
		name, alg, data, value string
		want, wantNew          error
	}{
		{name: "crc32", alg: "crc32", data: "123456789", value: b64(0xcb, 0xf4, 0x39, 0x26)},
		{name: "crc32c", alg: "crc32c", data: "123456789", value: b64(0xe3, 0x06, 0x92, 0x83)},
		{name: "crc64nvme", alg: "crc64nvme", data: "123456789", value: b64(0xae, 0x8b, 0x14, 0x86, 0x0a, 0x79, 0x98, 0x88)},
		{name: "sha1", alg: "sha1", data: "abc", value: "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="},
		{name: "sha256", alg: "sha256", data: "abc", value: "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="},
		{name: "crc32 of nothing", alg: "crc32", data: "", value: "AAAAAA=="},
		{name: "mismatch", alg: "crc32", data: "123456780", value: b64(0xcb, 0xf4, 0x39, 0x26), want: sigv4.ErrBadDigest},
		{name: "truncated body", alg: "sha256", data: "ab", value: "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", want: sigv4.ErrBadDigest},
		{name: "not base64", alg: "crc32", data: "x", value: "####", wantNew: sigv4.ErrInvalidDigest},
		{name: "wrong length", alg: "crc32c", data: "x", value: "AAAAAAAA", wantNew: sigv4.ErrInvalidDigest},
		{name: "unknown algorithm", alg: "md5", data: "x", value: "AAAAAA==", wantNew: sigv4.ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := sigv4.NewChecksumReader(strings.NewReader(tt.data), tt.alg, tt.value)
			if !errors.Is(err, tt.wantNew) {
				t.Fatalf("NewChecksumReader = %v, want %v", err, tt.wantNew)
			}
			if err != nil {
				return
			}
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("read = %v, want %v", err, tt.want)
			}
			if string(got) != tt.data {
				t.Errorf("read %q, want %q", got, tt.data)
			}
		})
	}
}

func b64(b ...byte) string { return base64.StdEncoding.EncodeToString(b) }

func md5b64(s string) string {
	sum := md5.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestMD5Reader(t *testing.T) {
	tests := []struct {
		name, data, header string
		want, wantNew      error
	}{
		{name: "matches", data: "hello", header: md5b64("hello")},
		{name: "rfc 1321 abc", data: "abc", header: "kAFQmDzST7DWlj99KOF/cg=="},
		{name: "mismatch", data: "hellO", header: md5b64("hello"), want: sigv4.ErrBadDigest},
		{name: "hex instead of base64", data: "hello", header: "5d41402abc4b2a76b9719d911017c592", wantNew: sigv4.ErrInvalidDigest},
		{name: "short", data: "hello", header: "AAAA", wantNew: sigv4.ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := sigv4.NewMD5Reader(strings.NewReader(tt.data), tt.header)
			if !errors.Is(err, tt.wantNew) {
				t.Fatalf("NewMD5Reader = %v, want %v", err, tt.wantNew)
			}
			if err != nil {
				return
			}
			if _, err := io.ReadAll(r); !errors.Is(err, tt.want) {
				t.Fatalf("read = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSHA256Reader(t *testing.T) {
	tests := []struct {
		name, data, sum string
		want, wantNew   error
	}{
		{name: "matches", data: "abc", sum: sha256Hex([]byte("abc"))},
		{name: "uppercase hex", data: "abc", sum: strings.ToUpper(sha256Hex([]byte("abc")))},
		{name: "empty", data: "", sum: emptySHA256},
		{name: "mismatch", data: "abd", sum: sha256Hex([]byte("abc")), want: sigv4.ErrContentSHA256Mismatch},
		{name: "not hex", data: "abc", sum: strings.Repeat("z", 64), wantNew: sigv4.ErrMalformedAuth},
		{name: "short", data: "abc", sum: "abcd", wantNew: sigv4.ErrMalformedAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := sigv4.NewSHA256Reader(strings.NewReader(tt.data), tt.sum)
			if !errors.Is(err, tt.wantNew) {
				t.Fatalf("NewSHA256Reader = %v, want %v", err, tt.wantNew)
			}
			if err != nil {
				return
			}
			if _, err := io.ReadAll(r); !errors.Is(err, tt.want) {
				t.Fatalf("read = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestBodyDeclaredDigests checks Body with Content-MD5 and x-amz-checksum-*
// headers on plain (not aws-chunked) bodies of SDK-signed requests.
func TestBodyDeclaredDigests(t *testing.T) {
	const object = "a crate's rlib"
	tests := []struct {
		name    string
		payload string
		headers []string
		sent    string
		wantNew error
		want    error
	}{
		{name: "unsigned with crc32c header", payload: unsignedPayload, headers: []string{"X-Amz-Checksum-Crc32c", "crc32c:" + object}, sent: object},
		{name: "unsigned with sha1 header", payload: unsignedPayload, headers: []string{"X-Amz-Checksum-Sha1", "sha1:" + object}, sent: object},
		{name: "unsigned with content-md5", payload: unsignedPayload, headers: []string{"Content-Md5", md5b64(object)}, sent: object},
		{name: "sha256 payload with md5 and crc64nvme", payload: sha256Hex([]byte(object)), headers: []string{"Content-Md5", md5b64(object), "X-Amz-Checksum-Crc64nvme", "crc64nvme:" + object}, sent: object},
		{name: "unsigned plain", payload: unsignedPayload, sent: object},
		{name: "checksum header mismatch", payload: unsignedPayload, headers: []string{"X-Amz-Checksum-Crc32", "crc32:" + object}, sent: object + "!", want: sigv4.ErrBadDigest},
		{name: "content-md5 mismatch", payload: unsignedPayload, headers: []string{"Content-Md5", md5b64(object)}, sent: "other", want: sigv4.ErrBadDigest},
		{name: "sha256 mismatch first", payload: sha256Hex([]byte(object)), headers: []string{"Content-Md5", md5b64(object)}, sent: "other", want: sigv4.ErrContentSHA256Mismatch},
		{name: "two checksum headers", payload: unsignedPayload, headers: []string{"X-Amz-Checksum-Crc32", "crc32:" + object, "X-Amz-Checksum-Sha256", "sha256:" + object}, sent: object, wantNew: sigv4.ErrInvalidDigest},
		{name: "malformed content-md5", payload: unsignedPayload, headers: []string{"Content-Md5", "nope"}, sent: object, wantNew: sigv4.ErrInvalidDigest},
		{name: "malformed checksum header", payload: unsignedPayload, headers: []string{"X-Amz-Checksum-Crc32", "nope"}, sent: object, wantNew: sigv4.ErrInvalidDigest},
		{name: "checksum type is not a checksum", payload: unsignedPayload, headers: []string{"X-Amz-Checksum-Type", "FULL_OBJECT", "X-Amz-Checksum-Algorithm", "CRC32"}, sent: object},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := append([]string(nil), tt.headers...)
			for i := 1; i < len(headers); i += 2 {
				if alg, ok := strings.CutSuffix(headers[i], ":"+object); ok {
					headers[i] = checksumOf(t, alg, []byte(object))
				}
			}
			req := newHTTPRequest(t, http.MethodPut, "http://"+testHost+"/kache/k", headers...)
			req.ContentLength = int64(len(object))
			signHeader(t, req, testCreds, tt.payload, testRegion, signTime)
			r := toRequest(req)
			a, err := newVerifier(t, testAccessKey, testSecretKey, signTime).Verify(r)
			if err != nil {
				t.Fatal(err)
			}
			body, err := a.Body(strings.NewReader(tt.sent), r.Header)
			if !errors.Is(err, tt.wantNew) {
				t.Fatalf("Body = %v, want %v", err, tt.wantNew)
			}
			if err != nil {
				return
			}
			got, err := io.ReadAll(body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("read = %v, want %v", err, tt.want)
			}
			if err == nil && !bytes.Equal(got, []byte(object)) {
				t.Errorf("read %q", got)
			}
		})
	}
}
