package s3source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func TestTranslate(t *testing.T) {
	refused := &url.Error{Op: "Put", URL: "http://127.0.0.1:1/b/k",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	tests := []struct {
		name        string
		err         error
		api         *APIError // nil: not an *APIError
		notFound    bool
		unavailable bool
		canceled    bool
	}{
		{name: "no such key", err: minio.ErrorResponse{StatusCode: 404, Code: "NoSuchKey", Message: "gone", Key: "k", RequestID: "r1"},
			api: &APIError{Status: 404, Code: "NoSuchKey", Message: "gone", Key: "k", RequestID: "r1"}, notFound: true},
		{name: "not found", err: minio.ErrorResponse{StatusCode: 404, Code: "NotFound"},
			api: &APIError{Status: 404, Code: "NotFound", Message: "Not Found", Key: "k"}, notFound: true},
		{name: "no such upload without status", err: minio.ErrorResponse{Code: "NoSuchUpload", Message: "The specified multipart upload does not exist."},
			api: &APIError{Status: 404, Code: "NoSuchUpload", Message: "The specified multipart upload does not exist.", Key: "k"}},
		{name: "slow down", err: minio.ErrorResponse{StatusCode: 503, Code: "SlowDown", Message: "Please reduce your request rate."},
			api: &APIError{Status: 503, Code: "SlowDown", Message: "Please reduce your request rate.", Key: "k"}},
		{name: "503 without a body", err: minio.ErrorResponse{StatusCode: 503, Code: "503 Service Unavailable", Message: "503 Service Unavailable"},
			api: &APIError{Status: 503, Code: "SlowDown", Message: "503 Service Unavailable", Key: "k"}},
		{name: "416 without a body", err: minio.ErrorResponse{StatusCode: 416, Code: "416 Requested Range Not Satisfiable"},
			api: &APIError{Status: 416, Code: "InvalidRange", Message: "The requested range is not satisfiable.", Key: "k"}},
		{name: "502 without a body", err: minio.ErrorResponse{StatusCode: 502, Code: "502 Bad Gateway", Message: "502 Bad Gateway"},
			api: &APIError{Status: 502, Code: "BadGateway", Message: "502 Bad Gateway", Key: "k"}},
		{name: "bad digest", err: minio.ErrorResponse{StatusCode: 400, Code: "BadDigest", Message: "md5"},
			api: &APIError{Status: 400, Code: "BadDigest", Message: "md5", Key: "k"}},
		{name: "minio argument check", err: minio.ErrorResponse{StatusCode: 400, Code: "InvalidArgument", Message: "bad", RequestID: "minio"},
			api: &APIError{Status: 400, Code: "InvalidArgument", Message: "bad", Key: "k"}},
		{name: "wrapped answer", err: fmt.Errorf("deep: %w", minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied", Message: "no"}),
			api: &APIError{Status: 403, Code: "AccessDenied", Message: "no", Key: "k"}},
		{name: "connection refused", err: refused, unavailable: true},
		{name: "connection closed", err: &url.Error{Op: "Get", URL: "u", Err: errors.New("Connection closed by foreign host u. Retry again.")}, unavailable: true},
		{name: "body cut short", err: io.ErrUnexpectedEOF, unavailable: true},
		{name: "reset mid-body", err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, unavailable: true},
		{name: "cancelled", err: context.Canceled, canceled: true},
		{name: "cancelled round trip", err: &url.Error{Op: "Get", URL: "u", Err: context.Canceled}, canceled: true},
		{name: "something else", err: errors.New("xml: syntax error")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := translate("get", "k", tt.err)
			var api *APIError
			if got := errors.As(err, &api); got != (tt.api != nil) {
				t.Fatalf("errors.As(%v, *APIError) = %v", err, got)
			}
			if tt.api != nil && *api != *tt.api {
				t.Errorf("APIError = %+v, want %+v", *api, *tt.api)
			}
			if got := errors.Is(err, ErrNotFound); got != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v", err, got)
			}
			if got := errors.Is(err, ErrUnavailable); got != tt.unavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable) = %v", err, got)
			}
			if got := errors.Is(err, context.Canceled); got != tt.canceled {
				t.Errorf("errors.Is(%v, context.Canceled) = %v", err, got)
			}
			if !strings.HasPrefix(err.Error(), "get k: ") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
	if translate("get", "k", nil) != nil {
		t.Error("translate(nil) != nil")
	}
}

func TestByteRange(t *testing.T) {
	tests := []struct {
		name  string
		r     ByteRange
		want  string
		valid bool
	}{
		{name: "first-last", r: ByteRange{Start: 10, End: 19}, want: "bytes=10-19", valid: true},
		{name: "one byte", r: ByteRange{Start: 0, End: 0}, want: "bytes=0-0", valid: true},
		{name: "open-ended", r: ByteRange{Start: 7, End: -1}, want: "bytes=7-", valid: true},
		{name: "from zero", r: ByteRange{End: -1}, want: "bytes=0-", valid: true},
		{name: "suffix", r: ByteRange{Suffix: 5}, want: "bytes=-5", valid: true},
		{name: "backwards", r: ByteRange{Start: 5, End: 3}, want: "bytes=5-3"},
		{name: "negative start", r: ByteRange{Start: -1, End: 3}, want: "bytes=-1-3"},
		{name: "negative suffix", r: ByteRange{Suffix: -2}, want: "bytes=0-0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if got := tt.r.valid(); got != tt.valid {
				t.Errorf("valid() = %v, want %v", got, tt.valid)
			}
		})
	}
}

func TestTotalOf(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"bytes 0-9/100", 100},
		{"bytes 0-0/1", 1},
		{"bytes */100", 100},
		{"bytes 0-9/*", -1},
		{"garbage", -1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := totalOf(tt.in); got != tt.want {
				t.Errorf("totalOf(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestPassedHeaders(t *testing.T) {
	h := http.Header{
		"X-Amz-Meta-Color":             {"blue"},
		"X-Amz-Checksum-Crc32c":        {"abc="},
		"Cache-Control":                {"max-age=60"},
		"Content-Encoding":             {"zstd"},
		"Content-Disposition":          {"attachment"},
		"X-Amz-Server-Side-Encryption": {"aws:kms"},
		"X-Amz-Version-Id":             {"v1"},
		"Content-Type":                 {"text/plain"},
		"Content-Length":               {"10"},
		"Content-Range":                {"bytes 0-9/100"},
		"Etag":                         {`"e"`},
		"Last-Modified":                {"Mon, 02 Jan 2006 15:04:05 GMT"},
		"X-Amz-Request-Id":             {"r"},
		"Server":                       {"MinIO"},
		"Date":                         {"now"},
		"Accept-Ranges":                {"bytes"},
	}
	got := passedHeaders(h)
	want := []string{"X-Amz-Meta-Color", "X-Amz-Checksum-Crc32c", "Cache-Control", "Content-Encoding",
		"Content-Disposition", "X-Amz-Server-Side-Encryption", "X-Amz-Version-Id"}
	if len(got) != len(want) {
		t.Errorf("passed %v, want the keys %v", got, want)
	}
	for _, k := range want {
		if got.Get(k) != h.Get(k) {
			t.Errorf("%s = %q, want %q", k, got.Get(k), h.Get(k))
		}
	}
}

func TestPutOptionsMetadata(t *testing.T) {
	o := PutOptions{ContentType: "text/plain", UserMetadata: map[string]string{
		"color": "blue", "X-Amz-Meta-Shape": "round", "x-amz-acl": "looks like a header"}}.minio()
	want := map[string]string{"x-amz-meta-color": "blue", "x-amz-meta-shape": "round", "x-amz-meta-x-amz-acl": "looks like a header"}
	h := o.Header()
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("header %s = %q, want %q (all: %v)", k, h.Get(k), v, h)
		}
	}
	if h.Get("x-amz-acl") != "" || h.Get("Content-Type") != "text/plain" {
		t.Errorf("headers %v", h)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestWatchedBody(t *testing.T) {
	boom := errors.New("client went away")
	tests := []struct {
		name string
		r    io.Reader
		size int64
		read int64 // bytes to read before asking
		want error
	}{
		{name: "whole body", r: strings.NewReader("hello"), size: 5, read: 6},
		{name: "not read yet", r: strings.NewReader("hello"), size: 5, read: 0},
		{name: "read in part", r: strings.NewReader("hello"), size: 5, read: 2},
		{name: "short body", r: strings.NewReader("hel"), size: 5, read: 6, want: io.ErrUnexpectedEOF},
		{name: "failing body", r: errReader{boom}, size: 5, read: 1, want: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, src := watch(tt.r)
			_, _ = io.CopyN(io.Discard, src, tt.read)
			if got := w.failure(tt.size); !errors.Is(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("failure() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWatchedBodyKeepsSeeker(t *testing.T) {
	w, src := watch(strings.NewReader("hel"))
	if _, ok := src.(io.Seeker); !ok {
		t.Fatal("a seekable body lost Seek")
	}
	_, _ = io.Copy(io.Discard, src)
	if w.failure(5) == nil {
		t.Fatal("short body not reported")
	}
	if _, err := src.(io.Seeker).Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := w.failure(5); err != nil {
		t.Errorf("after a rewind failure() = %v", err)
	}
	if _, ok := watchOnly(errReader{}).(io.Seeker); ok {
		t.Error("an unseekable body became seekable: minio-go would retry over a drained body")
	}
}

func watchOnly(r io.Reader) io.Reader { _, src := watch(r); return src }

// fakeBucket is an HTTP server standing in for the bucket, for the
// answers MinIO does not give on demand.
func fakeBucket(t *testing.T, h http.HandlerFunc) *Bucket {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	b, err := New(Config{Endpoint: srv.URL, Bucket: "kache", Region: "us-east-1", AccessKey: "k", SecretKey: "secret", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestSlowDownIsAnAPIError(t *testing.T) {
	b := fakeBucket(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		if r.Method != http.MethodHead {
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><Key>k</Key><RequestId>r1</RequestId></Error>`)
		}
	})
	ctx := context.Background()
	_, err := b.StatInfo(ctx, "k")
	checkAPIError(t, "HEAD", err, http.StatusServiceUnavailable, "SlowDown")
	_, _, err = b.GetRange(ctx, "k", nil)
	checkAPIError(t, "GET", err, http.StatusServiceUnavailable, "SlowDown")
	_, err = b.ListV2(ctx, ListParams{})
	checkAPIError(t, "list", err, http.StatusServiceUnavailable, "SlowDown")
}

func checkAPIError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var api *APIError
	if !errors.As(err, &api) {
		t.Fatalf("%s: %v is not an *APIError", what, err)
	}
	if api.Status != status || api.Code != code {
		t.Errorf("%s: got %d %s, want %d %s", what, api.Status, api.Code, status, code)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("%s: an answer from the bucket is not ErrUnavailable", what)
	}
}

// A listing's request ends when its context does, though minio-go's
// listing calls take no context.
func TestListCancelled(t *testing.T) {
	var seen atomic.Int32
	b := fakeBucket(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		<-r.Context().Done() // the client hung up
	})
	b.opts.MaxRetries = 3
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.ListV2(ctx, ListParams{Prefix: "p/"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ListV2 = %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a cancelled listing took %v", took)
	}
	_, err = b.ListV1(ctx, ListV1Params{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ListV1 = %v, want the context's deadline", err)
	}
	if seen.Load() != 1 {
		t.Errorf("the bucket saw %d requests, want 1 (none once the context ended)", seen.Load())
	}
}

func TestCtxTransportClosesBody(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	body := &closeCounter{}
	req, _ := http.NewRequest(http.MethodPut, "http://127.0.0.1:1/", body)
	_, err := ctxTransport{base: http.DefaultTransport, ctx: ctx}.RoundTrip(req)
	if !errors.Is(err, context.Canceled) || body.closed != 1 {
		t.Errorf("RoundTrip = %v, body closed %d times", err, body.closed)
	}
}

type closeCounter struct{ closed int }

func (c *closeCounter) Read([]byte) (int, error) { return 0, io.EOF }
func (c *closeCounter) Close() error             { c.closed++; return nil }

// An unseekable body of known size goes over http in one request, its
// payload unsigned (the surface verified it; Content-MD5, or else a CRC32C
// trailer, guards it), with the object's headers.
func TestPutRequest(t *testing.T) {
	var (
		got  http.Header
		n    int64
		reqs atomic.Int32
	)
	b := fakeBucket(t, func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		got = r.Header.Clone()
		n, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("ETag", `"0123"`)
		w.Header().Set("x-amz-version-id", "v7")
	})
	body := struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 200_000))}
	res, err := b.Put(context.Background(), "k", body, 200_000, PutOptions{ContentType: "text/plain", ContentMD5: "bWQ1",
		CacheControl: "no-cache", ContentEncoding: "zstd", ContentDisposition: "inline", UserMetadata: map[string]string{"color": "blue"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.ETag != "0123" || res.VersionID != "v7" || time.Since(res.LastModified) > time.Minute {
		t.Errorf("result %+v", res)
	}
	want := map[string]string{
		"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
		"Content-Md5":          "bWQ1",
		"Content-Type":         "text/plain",
		"Cache-Control":        "no-cache",
		"Content-Encoding":     "zstd",
		"Content-Disposition":  "inline",
		"X-Amz-Meta-Color":     "blue",
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, got.Get(k), v)
		}
	}
	if reqs.Load() != 1 || n != 200_000 {
		t.Errorf("%d requests, body of %d bytes, want 1 of 200000", reqs.Load(), n)
	}
	// Without Content-MD5 the body carries a CRC32C trailer.
	_, err = b.Put(context.Background(), "k", struct{ io.Reader }{strings.NewReader("abc")}, 3, PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Get("X-Amz-Content-Sha256") != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" || got.Get("X-Amz-Trailer") != "x-amz-checksum-crc32c" {
		t.Errorf("no-MD5 put: %q, trailer %q", got.Get("X-Amz-Content-Sha256"), got.Get("X-Amz-Trailer"))
	}
}
