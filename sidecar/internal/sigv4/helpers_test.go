package sigv4_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/kache-planner/kache-planner/sidecar/internal/sigv4"
)

// The test key pair. The secret has '/', '+' and '=' like real ones.
const (
	testAccessKey = "AKIDKACHETEST0001"
	testSecretKey = "kAcHe/TeSt+SeCrEt=KeY0123456789abcdefghij"
	testRegion    = "us-east-1"
	testHost      = "127.0.0.1:7071"

	emptySHA256     = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	streamSigned    = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamSignedTr  = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamUnsTr     = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
)

var (
	testCreds = aws.Credentials{AccessKeyID: testAccessKey, SecretAccessKey: testSecretKey}
	signTime  = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
)

func newVerifier(t testing.TB, accessKey, secretKey string, now time.Time) *sigv4.Verifier {
	t.Helper()
	v, err := sigv4.New(sigv4.Config{AccessKey: accessKey, SecretKey: secretKey, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sdkSigner is the AWS SDK for Go v2 signer set up as its S3 client uses it:
// S3 paths are signed as sent, not escaped a second time.
func sdkSigner() *v4.Signer {
	return v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
}

func newHTTPRequest(t testing.TB, method, rawURL string, headers ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// signHeader signs req in its Authorization header with the SDK, declaring
// payload in x-amz-content-sha256 first as the SDK's S3 client does.
func signHeader(t testing.TB, req *http.Request, creds aws.Credentials, payload, region string, at time.Time) {
	t.Helper()
	req.Header.Set("X-Amz-Content-Sha256", payload)
	if err := sdkSigner().SignHTTP(context.Background(), creds, req, payload, "s3", region, at); err != nil {
		t.Fatal(err)
	}
}

// toRequest is what a server receives for req: the path and query as sent,
// the Host and the headers by lowercase name.
func toRequest(req *http.Request) sigv4.Request {
	h := sigv4.HeaderMap{}
	for k, vs := range req.Header {
		h[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	if req.ContentLength > 0 {
		h["content-length"] = strconv.FormatInt(req.ContentLength, 10)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	return sigv4.Request{Method: req.Method, RawPath: req.URL.EscapedPath(), RawQuery: req.URL.RawQuery, Host: host, Header: h}
}

// seedSignature returns the Signature= of a signed request.
func seedSignature(t testing.TB, r sigv4.Request) string {
	t.Helper()
	_, sig, ok := strings.Cut(r.Header.Get("authorization"), "Signature=")
	if !ok {
		t.Fatal("no signature in authorization header")
	}
	return sig
}

func hmacHex(key []byte, s string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

func hmacRaw(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// testSigningKey derives the SigV4 s3 key, written here independently of the package.
func testSigningKey(secret string, at time.Time, region string) []byte {
	k := hmacRaw([]byte("AWS4"+secret), at.Format("20060102"))
	k = hmacRaw(k, region)
	k = hmacRaw(k, "s3")
	return hmacRaw(k, "aws4_request")
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checksumOf is the base64 x-amz-checksum-<alg> value of data.
func checksumOf(t testing.TB, alg string, data []byte) string {
	t.Helper()
	var sum []byte
	switch alg {
	case "crc32":
		sum = binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(data))
	case "crc32c":
		sum = binary.BigEndian.AppendUint32(nil, crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	case "crc64nvme":
		sum = binary.BigEndian.AppendUint64(nil, crc64.Checksum(data, crc64.MakeTable(0x9a6c9329ac4bc9b5)))
	case "sha1":
		s := sha1.Sum(data)
		sum = s[:]
	case "sha256":
		s := sha256.Sum256(data)
		sum = s[:]
	default:
		t.Fatalf("checksum %q", alg)
	}
	return base64.StdEncoding.EncodeToString(sum)
}

// chunkEncoder writes aws-chunked bodies, independently of the package's
// decoder: signed chunks chain from prev, the seed signature.
type chunkEncoder struct {
	signed  bool
	key     []byte
	amzDate string
	scope   string
	prev    string
}

// encodeForm varies the wire form and injects faults.
type encodeForm struct {
	blankBeforeTrailers bool     // a blank line after the final chunk, as the AWS docs show it
	noFinalCRLF         bool     // no blank line at the very end
	extraTrailers       []string // more "name:value" trailers, signed like the others
	omitTrailerSig      bool
}

func (e *chunkEncoder) writeChunk(b *bytes.Buffer, data []byte) {
	if !e.signed {
		fmt.Fprintf(b, "%x\r\n", len(data))
	} else {
		e.prev = hmacHex(e.key, strings.Join([]string{
			"AWS4-HMAC-SHA256-PAYLOAD", e.amzDate, e.scope, e.prev, emptySHA256, sha256Hex(data)}, "\n"))
		fmt.Fprintf(b, "%x;chunk-signature=%s\r\n", len(data), e.prev)
	}
	if len(data) > 0 {
		b.Write(data)
		b.WriteString("\r\n")
	}
}

// encode writes data in chunks of chunkSize, the final chunk, then the
// trailers ("name:value"), signed when signTrailer is set.
func (e *chunkEncoder) encode(data []byte, chunkSize int, trailers []string, signTrailer bool, form encodeForm) []byte {
	var b bytes.Buffer
	for off := 0; off < len(data); off += chunkSize {
		e.writeChunk(&b, data[off:min(off+chunkSize, len(data))])
	}
	e.writeChunk(&b, nil)
	if form.blankBeforeTrailers {
		b.WriteString("\r\n")
	}
	var canonical strings.Builder
	for _, tr := range append(append([]string(nil), trailers...), form.extraTrailers...) {
		b.WriteString(tr + "\r\n")
		canonical.WriteString(tr + "\n")
	}
	if signTrailer && !form.omitTrailerSig {
		sig := hmacHex(e.key, strings.Join([]string{
			"AWS4-HMAC-SHA256-TRAILER", e.amzDate, e.scope, e.prev, sha256Hex([]byte(canonical.String()))}, "\n"))
		b.WriteString("x-amz-trailer-signature:" + sig + "\r\n")
	}
	if !form.noFinalCRLF {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// streamingPut signs, with the SDK, a PUT of an aws-chunked body in mode and
// verifies it. It returns the Auth, the request's headers and an encoder
// whose chain starts at the request's signature.
func streamingPut(t testing.TB, mode string, decodedLen int, trailerAlg string) (*sigv4.Auth, sigv4.HeaderMap, *chunkEncoder) {
	t.Helper()
	req := newHTTPRequest(t, http.MethodPut, "http://"+testHost+"/kache/objects/ab/cdef.rlib",
		"Content-Encoding", "aws-chunked",
		"X-Amz-Decoded-Content-Length", strconv.Itoa(decodedLen))
	if trailerAlg != "" {
		req.Header.Set("X-Amz-Trailer", "x-amz-checksum-"+trailerAlg)
	}
	signHeader(t, req, testCreds, mode, testRegion, signTime)
	r := toRequest(req)
	a, err := newVerifier(t, testAccessKey, testSecretKey, signTime).Verify(r)
	if err != nil {
		t.Fatalf("verify %s upload: %v", mode, err)
	}
	enc := &chunkEncoder{
		signed:  mode != streamUnsTr,
		key:     testSigningKey(testSecretKey, signTime, testRegion),
		amzDate: signTime.Format("20060102T150405Z"),
		scope:   signTime.Format("20060102") + "/" + testRegion + "/s3/aws4_request",
		prev:    seedSignature(t, r),
	}
	return a, r.Header.(sigv4.HeaderMap), enc
}
