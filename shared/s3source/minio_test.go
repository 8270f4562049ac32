//go:build e2e

// The Bucket against a real MinIO server (internal/testenv):
// `go test -race -tags e2e ./shared/s3source/`. MinIO comes from
// e2e/tools.sh; without it these tests fail under CI=true and skip
// elsewhere.

package s3source

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// upstream is the surface's view of the bucket (sidecar/internal/s3api's
// Upstream, which cannot be imported from here): the Bucket must keep
// satisfying it.
var _ interface {
	GetRange(ctx context.Context, key string, r *ByteRange) (io.ReadCloser, ObjectInfo, error)
	StatInfo(ctx context.Context, key string) (ObjectInfo, error)
	Put(ctx context.Context, key string, body io.Reader, size int64, opt PutOptions) (PutResult, error)
	Delete(ctx context.Context, key string) error
	ListV2(ctx context.Context, p ListParams) (ListResult, error)
	ListV1(ctx context.Context, p ListV1Params) (ListV1Result, error)
	CreateMultipart(ctx context.Context, key string, opt PutOptions) (string, error)
	UploadPart(ctx context.Context, key, uploadID string, part int, body io.Reader, size int64, md5b64 string) (string, error)
	CompleteMultipart(ctx context.Context, key, uploadID string, parts []CompletedPart) (PutResult, error)
	AbortMultipart(ctx context.Context, key, uploadID string) error
	ListParts(ctx context.Context, key, uploadID string, marker, max int) (PartsResult, error)
} = (*Bucket)(nil)

const mib = 1 << 20

func newBucket(t *testing.T, m *testenv.Minio, retries int) *Bucket {
	t.Helper()
	b, err := New(Config{Endpoint: m.Endpoint, Bucket: m.Bucket, Region: testenv.MinioRegion,
		AccessKey: testenv.MinioUser, SecretKey: testenv.MinioSecret, MaxRetries: retries})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pattern is size deterministic bytes, unseekable (as a request body the
// surface streams), allocating nothing while read. It hashes what it
// hands out.
type pattern struct {
	left  int64
	state uint64
	sum   interface {
		io.Writer
		Sum([]byte) []byte
	}
	// sample, when set, is called about every 4 MiB read.
	sample  func()
	sampled int64
}

func newPattern(size int64, seed uint64) *pattern {
	return &pattern{left: size, state: seed | 1, sum: md5.New()}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	for i := range n {
		p.state ^= p.state << 13
		p.state ^= p.state >> 7
		p.state ^= p.state << 17
		b[i] = byte(p.state)
	}
	p.sum.Write(b[:n])
	p.left -= int64(n)
	if p.sample != nil {
		if p.sampled += int64(n); p.sampled >= 4*mib {
			p.sampled = 0
			p.sample()
		}
	}
	return n, nil
}

func (p *pattern) md5hex() string { return hex.EncodeToString(p.sum.Sum(nil)) }

func bytesOf(t *testing.T, size int64, seed uint64) []byte {
	t.Helper()
	data, err := io.ReadAll(newPattern(size, seed))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func md5b64(data []byte) string {
	s := md5.Sum(data)
	return base64.StdEncoding.EncodeToString(s[:])
}

func md5hex(data []byte) string {
	s := md5.Sum(data)
	return hex.EncodeToString(s[:])
}

func wantAPIError(t *testing.T, what string, err error, status int, code string) *APIError {
	t.Helper()
	var api *APIError
	if !errors.As(err, &api) {
		t.Fatalf("%s: %v, want an *APIError %s", what, err, code)
	}
	if api.Status != status || api.Code != code {
		t.Errorf("%s: %d %s (%s), want %d %s", what, api.Status, api.Code, api.Message, status, code)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("%s: an answer is not ErrUnavailable", what)
	}
	return api
}

// countingTransport counts the requests the listings send.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = 0
	return n
}

// TestMinio runs every operation against one MinIO server.
func TestMinio(t *testing.T) {
	m := testenv.StartMinio(t)
	b := newBucket(t, m, 3)
	t.Run("GetRange", func(t *testing.T) { testGetRange(t, b) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, b) })
	t.Run("PutDelete", func(t *testing.T) { testPutDelete(t, b) })
	t.Run("BadDigest", func(t *testing.T) { testBadDigest(t, b) })
	t.Run("Multipart", func(t *testing.T) { testMultipart(t, b) })
	t.Run("MultipartErrors", func(t *testing.T) { testMultipartErrors(t, b) })
	t.Run("ListV2", func(t *testing.T) { testListV2(t, b) })
	t.Run("ListV1", func(t *testing.T) { testListV1(t, b) })
	t.Run("PutStreams", func(t *testing.T) { testPutStreams(t, b) })
}

func testGetRange(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	const key = "range/object.bin"
	data := bytesOf(t, 1000, 1)
	res, err := b.Put(ctx, key, bytes.NewReader(data), int64(len(data)), PutOptions{
		ContentType: "application/x-test", ContentMD5: md5b64(data), CacheControl: "max-age=60",
		ContentEncoding: "zstd", ContentDisposition: `attachment; filename="o.bin"`,
		UserMetadata: map[string]string{"color": "blue", "x-amz-meta-shape": "round"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ETag != md5hex(data) || res.LastModified.IsZero() {
		t.Errorf("put = %+v, want the ETag %s and a time", res, md5hex(data))
	}
	tests := []struct {
		name         string
		r            *ByteRange
		first, last  int64 // bytes of data expected, inclusive
		contentRange string
	}{
		{name: "whole", r: nil, first: 0, last: 999},
		{name: "first-last", r: &ByteRange{Start: 10, End: 19}, first: 10, last: 19, contentRange: "bytes 10-19/1000"},
		{name: "one byte", r: &ByteRange{Start: 0, End: 0}, first: 0, last: 0, contentRange: "bytes 0-0/1000"},
		{name: "open-ended", r: &ByteRange{Start: 990, End: -1}, first: 990, last: 999, contentRange: "bytes 990-999/1000"},
		{name: "open from zero", r: &ByteRange{Start: 0, End: -1}, first: 0, last: 999, contentRange: "bytes 0-999/1000"},
		{name: "suffix", r: &ByteRange{Suffix: 5}, first: 995, last: 999, contentRange: "bytes 995-999/1000"},
		{name: "suffix over the size", r: &ByteRange{Suffix: 5000}, first: 0, last: 999, contentRange: "bytes 0-999/1000"},
		{name: "last past the end", r: &ByteRange{Start: 995, End: 5000}, first: 995, last: 999, contentRange: "bytes 995-999/1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, info, err := b.GetRange(ctx, key, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(body)
			body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := data[tt.first : tt.last+1]; !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want bytes %d-%d", len(got), tt.first, tt.last)
			}
			if info.ContentRange != tt.contentRange {
				t.Errorf("ContentRange = %q, want %q", info.ContentRange, tt.contentRange)
			}
			if info.ContentLength != tt.last-tt.first+1 || info.Size != 1000 {
				t.Errorf("ContentLength %d, Size %d; want %d, 1000", info.ContentLength, info.Size, tt.last-tt.first+1)
			}
			checkInfo(t, info, key, md5hex(data))
		})
	}
	for _, r := range []ByteRange{{Start: 1000, End: -1}, {Start: 5000, End: 6000}} {
		t.Run("unsatisfiable "+r.String(), func(t *testing.T) {
			body, info, err := b.GetRange(ctx, key, &r)
			if body != nil {
				body.Close()
				t.Error("a body came with the error")
			}
			wantAPIError(t, "GetRange", err, http.StatusRequestedRangeNotSatisfiable, "InvalidRange")
			if info.Size != 1000 {
				t.Errorf("Size = %d with InvalidRange, want 1000 (for Content-Range: bytes */1000)", info.Size)
			}
		})
	}
	t.Run("invalid range", func(t *testing.T) {
		if _, _, err := b.GetRange(ctx, key, &ByteRange{Start: 5, End: 3}); err == nil {
			t.Error("a backwards range was sent")
		}
	})
	t.Run("StatInfo", func(t *testing.T) {
		info, err := b.StatInfo(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != 1000 || info.ContentLength != 1000 || info.ContentRange != "" {
			t.Errorf("Size %d, ContentLength %d, ContentRange %q", info.Size, info.ContentLength, info.ContentRange)
		}
		checkInfo(t, info, key, md5hex(data))
	})
}

func checkInfo(t *testing.T, info ObjectInfo, key, etag string) {
	t.Helper()
	if info.Key != key || info.ETag != etag || info.LastModified.IsZero() || info.Encrypted {
		t.Errorf("object %+v, want key %s ETag %s", info.Object, key, etag)
	}
	if info.ContentType != "application/x-test" {
		t.Errorf("ContentType = %q", info.ContentType)
	}
	want := http.Header{
		"X-Amz-Meta-Color":    {"blue"},
		"X-Amz-Meta-Shape":    {"round"},
		"Cache-Control":       {"max-age=60"},
		"Content-Encoding":    {"zstd"},
		"Content-Disposition": {`attachment; filename="o.bin"`},
	}
	for k, v := range want {
		if !slices.Equal(info.Header[k], v) {
			t.Errorf("Header[%s] = %q, want %q", k, info.Header[k], v)
		}
	}
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Etag", "Last-Modified", "X-Amz-Request-Id", "Server"} {
		if _, ok := info.Header[k]; ok {
			t.Errorf("Header has %s, which describes the response", k)
		}
	}
}

func testNotFound(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	const key = "missing/object"
	_, _, err := b.GetRange(ctx, key, nil)
	api := wantAPIError(t, "GetRange", err, http.StatusNotFound, "NoSuchKey")
	if api.Key != key || !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRange: key %q, errors.Is(ErrNotFound) %v", api.Key, errors.Is(err, ErrNotFound))
	}
	_, _, err = b.GetRange(ctx, key, &ByteRange{Start: 1, End: 2})
	wantAPIError(t, "GetRange with a range", err, http.StatusNotFound, "NoSuchKey")
	_, err = b.StatInfo(ctx, key)
	wantAPIError(t, "StatInfo", err, http.StatusNotFound, "NoSuchKey")
	// The older calls' callers check ErrNotFound.
	_, err = b.ReadAll(ctx, key, 10)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadAll = %v", err)
	}
	_, _, err = b.Open(ctx, key)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Open = %v", err)
	}
	_, err = b.Stat(ctx, key)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat = %v", err)
	}
}

func testPutDelete(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	const key = "put/object"
	data := []byte("hello, bucket")
	before := time.Now().Add(-time.Second)
	res, err := b.Put(ctx, key, struct{ io.Reader }{bytes.NewReader(data)}, int64(len(data)), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ETag != md5hex(data) || res.LastModified.Before(before) {
		t.Errorf("put = %+v", res)
	}
	got, err := b.ReadAll(ctx, key, 100)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	info, err := b.StatInfo(ctx, key)
	if err != nil || info.ContentType != "application/octet-stream" {
		t.Errorf("StatInfo = %+v, %v; want the default content type", info, err)
	}
	// An empty object.
	if _, err := b.Put(ctx, "put/empty", bytes.NewReader(nil), 0, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if info, err := b.StatInfo(ctx, "put/empty"); err != nil || info.Size != 0 {
		t.Errorf("empty object: %+v, %v", info, err)
	}
	// A body shorter than its size fails as the body's failure.
	_, err = b.Put(ctx, "put/short", struct{ io.Reader }{strings.NewReader("abc")}, 10, PutOptions{})
	if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrUnavailable) {
		t.Errorf("short body: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := b.Put(ctx, "put/unknown", strings.NewReader("abc"), -1, PutOptions{}); err == nil {
		t.Error("a put of unknown size went ahead")
	}

	if err := b.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.StatInfo(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("after Delete StatInfo = %v", err)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Errorf("deleting an absent key: %v", err)
	}
}

func testBadDigest(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	data := bytesOf(t, 100*1024, 2)
	_, err := b.Put(ctx, "digest/object", struct{ io.Reader }{bytes.NewReader(data)}, int64(len(data)),
		PutOptions{ContentMD5: md5b64([]byte("something else"))})
	wantAPIError(t, "Put", err, http.StatusBadRequest, "BadDigest")
	if _, err := b.StatInfo(ctx, "digest/object"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the object was stored anyway: %v", err)
	}
}

func testMultipart(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	const key = "multipart/object"
	id, err := b.CreateMultipart(ctx, key, PutOptions{ContentType: "application/x-test", UserMetadata: map[string]string{"color": "green"}})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int64{5 * mib, 5 * mib, mib + 7}
	var all []byte
	var parts []CompletedPart
	for i, size := range sizes {
		data := bytesOf(t, size, uint64(10+i))
		all = append(all, data...)
		md5 := ""
		if i == 1 {
			md5 = md5b64(data)
		}
		etag, err := b.UploadPart(ctx, key, id, i+1, struct{ io.Reader }{bytes.NewReader(data)}, size, md5)
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		if etag != md5hex(data) {
			t.Errorf("part %d ETag %s, want %s", i+1, etag, md5hex(data))
		}
		parts = append(parts, CompletedPart{Number: i + 1, ETag: etag})
	}

	// Two pages of parts.
	page, err := b.ListParts(ctx, key, id, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !page.IsTruncated || page.NextMarker != 2 || page.MaxParts != 2 || len(page.Parts) != 2 {
		t.Fatalf("first page %+v", page)
	}
	rest, err := b.ListParts(ctx, key, id, page.NextMarker, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rest.IsTruncated || len(rest.Parts) != 1 {
		t.Fatalf("second page %+v", rest)
	}
	for i, p := range append(page.Parts, rest.Parts...) {
		if p.Number != i+1 || p.ETag != parts[i].ETag || p.Size != sizes[i] || p.LastModified.IsZero() {
			t.Errorf("part %d = %+v, want %+v of %d bytes", i+1, p, parts[i], sizes[i])
		}
	}

	res, err := b.CompleteMultipart(ctx, key, id, parts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(res.ETag, "-3") || res.LastModified.IsZero() {
		t.Errorf("complete = %+v, want a multipart ETag of 3 parts", res)
	}
	body, info, err := b.GetRange(ctx, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || !bytes.Equal(got, all) {
		t.Fatalf("read back %d bytes (%v), want the %d uploaded", len(got), err, len(all))
	}
	if info.ETag != res.ETag || info.Size != int64(len(all)) || info.ContentType != "application/x-test" ||
		info.Header.Get("X-Amz-Meta-Color") != "green" {
		t.Errorf("info %+v", info)
	}
	// The upload is gone once complete.
	_, err = b.ListParts(ctx, key, id, 0, 0)
	wantAPIError(t, "ListParts after complete", err, http.StatusNotFound, "NoSuchUpload")
}

func testMultipartErrors(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	const key = "multipart/errors"
	const bogus = "bm90LWFuLXVwbG9hZA"
	t.Run("NoSuchUpload", func(t *testing.T) {
		_, err := b.UploadPart(ctx, key, bogus, 1, strings.NewReader("abc"), 3, "")
		wantAPIError(t, "UploadPart", err, http.StatusNotFound, "NoSuchUpload")
		_, err = b.ListParts(ctx, key, bogus, 0, 0)
		wantAPIError(t, "ListParts", err, http.StatusNotFound, "NoSuchUpload")
		_, err = b.CompleteMultipart(ctx, key, bogus, []CompletedPart{{Number: 1, ETag: "x"}})
		wantAPIError(t, "CompleteMultipart", err, http.StatusNotFound, "NoSuchUpload")
		if err := b.AbortMultipart(ctx, key, bogus); err != nil { // MinIO: success (see Abort)
			wantAPIError(t, "AbortMultipart", err, http.StatusNotFound, "NoSuchUpload")
		}
	})

	upload := func(t *testing.T, sizes ...int64) (string, []CompletedPart) {
		t.Helper()
		id, err := b.CreateMultipart(ctx, key, PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.AbortMultipart(context.Background(), key, id) })
		var parts []CompletedPart
		for i, size := range sizes {
			data := bytesOf(t, size, uint64(20+i))
			etag, err := b.UploadPart(ctx, key, id, i+1, bytes.NewReader(data), size, "")
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, CompletedPart{Number: i + 1, ETag: etag})
		}
		return id, parts
	}
	t.Run("InvalidPart", func(t *testing.T) {
		id, parts := upload(t, 5*mib, 1024)
		parts[1].ETag = md5hex([]byte("not the part"))
		_, err := b.CompleteMultipart(ctx, key, id, parts)
		wantAPIError(t, "CompleteMultipart", err, http.StatusBadRequest, "InvalidPart")
	})
	t.Run("InvalidPartOrder", func(t *testing.T) {
		id, parts := upload(t, 5*mib, 1024)
		parts[0], parts[1] = parts[1], parts[0]
		_, err := b.CompleteMultipart(ctx, key, id, parts)
		wantAPIError(t, "CompleteMultipart", err, http.StatusBadRequest, "InvalidPartOrder")
	})
	t.Run("EntityTooSmall", func(t *testing.T) {
		id, parts := upload(t, 1024, 1024)
		_, err := b.CompleteMultipart(ctx, key, id, parts)
		wantAPIError(t, "CompleteMultipart", err, http.StatusBadRequest, "EntityTooSmall")
	})
	t.Run("BadDigest", func(t *testing.T) {
		id, _ := upload(t)
		_, err := b.UploadPart(ctx, key, id, 1, strings.NewReader("abc"), 3, md5b64([]byte("abd")))
		wantAPIError(t, "UploadPart", err, http.StatusBadRequest, "BadDigest")
	})
	t.Run("Abort", func(t *testing.T) {
		id, _ := upload(t, 1024)
		if err := b.AbortMultipart(ctx, key, id); err != nil {
			t.Fatal(err)
		}
		_, err := b.ListParts(ctx, key, id, 0, 0)
		wantAPIError(t, "ListParts after abort", err, http.StatusNotFound, "NoSuchUpload")
		// MinIO answers a second abort with success, AWS with NoSuchUpload:
		// either passes through.
		if err := b.AbortMultipart(ctx, key, id); err != nil {
			wantAPIError(t, "AbortMultipart again", err, http.StatusNotFound, "NoSuchUpload")
		}
	})
}

var listKeys = []string{"list/a/1", "list/a/2", "list/a/3", "list/b/1", "list/c", "list/d/x/y", "list/e/sp ace+plus%25é"}

func seedList(t *testing.T, b *Bucket) {
	t.Helper()
	ctx := testCtx(t)
	for _, k := range listKeys {
		if _, err := b.Put(ctx, k, strings.NewReader(k), int64(len(k)), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

var seedOnce sync.Once

func testListV2(t *testing.T, b *Bucket) {
	seedOnce.Do(func() { seedList(t, b) })
	ctx := testCtx(t)
	count := &countingTransport{base: b.opts.Transport}
	b.opts.Transport = count
	t.Cleanup(func() { b.opts.Transport = count.base })

	// page lists p page by page, checking that each call is one request
	// and that the bucket's token goes back unchanged.
	page := func(t *testing.T, p ListParams) (keys, prefixes []string, pages int) {
		t.Helper()
		for {
			res, err := b.ListV2(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if n := count.take(); n != 1 {
				t.Fatalf("ListV2 sent %d requests, want 1", n)
			}
			pages++
			if res.KeyCount != len(res.Objects)+len(res.CommonPrefixes) || res.KeyCount > p.MaxKeys {
				t.Errorf("KeyCount %d for %d objects, %d prefixes (max %d)", res.KeyCount, len(res.Objects), len(res.CommonPrefixes), p.MaxKeys)
			}
			for _, o := range res.Objects {
				keys = append(keys, o.Key)
				if o.ETag != md5hex([]byte(o.Key)) || o.Size != int64(len(o.Key)) || o.LastModified.IsZero() {
					t.Errorf("listed %+v", o)
				}
				if (o.Owner != Owner{}) != p.FetchOwner {
					t.Errorf("owner %+v with FetchOwner %v", o.Owner, p.FetchOwner)
				}
			}
			prefixes = append(prefixes, res.CommonPrefixes...)
			if !res.IsTruncated {
				return keys, prefixes, pages
			}
			if res.NextContinuationToken == "" {
				t.Fatal("truncated without a token")
			}
			p.ContinuationToken = res.NextContinuationToken
		}
	}
	tests := []struct {
		name         string
		p            ListParams
		keys         []string
		prefixes     []string
		atLeastPages int
	}{
		{name: "all, two at a time", p: ListParams{Prefix: "list/", MaxKeys: 2}, keys: listKeys, atLeastPages: 4},
		{name: "with the owner", p: ListParams{Prefix: "list/", MaxKeys: 3, FetchOwner: true}, keys: listKeys, atLeastPages: 3},
		{name: "delimiter", p: ListParams{Prefix: "list/", Delimiter: "/", MaxKeys: 2},
			keys: []string{"list/c"}, prefixes: []string{"list/a/", "list/b/", "list/d/", "list/e/"}, atLeastPages: 3},
		{name: "delimiter under a prefix", p: ListParams{Prefix: "list/d/", Delimiter: "/", MaxKeys: 10},
			prefixes: []string{"list/d/x/"}, atLeastPages: 1},
		{name: "start after", p: ListParams{Prefix: "list/", StartAfter: "list/a/2", MaxKeys: 2}, keys: listKeys[2:], atLeastPages: 3},
		{name: "raw keys", p: ListParams{Prefix: "list/e/", MaxKeys: 10}, keys: listKeys[6:], atLeastPages: 1},
		{name: "nothing", p: ListParams{Prefix: "nothing/", MaxKeys: 10}, atLeastPages: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, prefixes, pages := page(t, tt.p)
			if !slices.Equal(keys, tt.keys) || !slices.Equal(prefixes, tt.prefixes) {
				t.Errorf("listed %q and prefixes %q, want %q and %q", keys, prefixes, tt.keys, tt.prefixes)
			}
			if pages < tt.atLeastPages {
				t.Errorf("%d pages, want at least %d", pages, tt.atLeastPages)
			}
		})
	}
	t.Run("bad token", func(t *testing.T) {
		_, err := b.ListV2(ctx, ListParams{Prefix: "list/", ContinuationToken: "not-a-token"})
		var api *APIError
		if !errors.As(err, &api) || api.Status != http.StatusBadRequest {
			t.Errorf("ListV2 with a made-up token = %v, want the bucket's 400", err)
		}
	})
}

func testListV1(t *testing.T, b *Bucket) {
	seedOnce.Do(func() { seedList(t, b) })
	ctx := testCtx(t)
	tests := []struct {
		name     string
		p        ListV1Params
		keys     []string
		prefixes []string
	}{
		{name: "all, two at a time", p: ListV1Params{Prefix: "list/", MaxKeys: 2}, keys: listKeys},
		{name: "delimiter", p: ListV1Params{Prefix: "list/", Delimiter: "/", MaxKeys: 2},
			keys: []string{"list/c"}, prefixes: []string{"list/a/", "list/b/", "list/d/", "list/e/"}},
		{name: "marker", p: ListV1Params{Prefix: "list/", Marker: "list/b/1", MaxKeys: 10}, keys: listKeys[4:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var keys, prefixes []string
			p := tt.p
			for range 20 {
				res, err := b.ListV1(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range res.Objects {
					keys = append(keys, o.Key)
				}
				prefixes = append(prefixes, res.CommonPrefixes...)
				if !res.IsTruncated {
					break
				}
				// As a V1 client does: NextMarker, else the last key.
				p.Marker = res.NextMarker
				if p.Marker == "" {
					p.Marker = res.Objects[len(res.Objects)-1].Key
				}
			}
			if !slices.Equal(keys, tt.keys) || !slices.Equal(prefixes, tt.prefixes) {
				t.Errorf("listed %q and prefixes %q, want %q and %q", keys, prefixes, tt.keys, tt.prefixes)
			}
		})
	}
}

// testPutStreams checks that a put of 64 MiB from an unseekable reader is
// streamed: the heap never grows by anything near the object's size.
func testPutStreams(t *testing.T, b *Bucket) {
	ctx := testCtx(t)
	const size = 64 * mib
	var (
		ms   runtime.MemStats
		peak uint64
	)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	src := newPattern(size, 3)
	src.sample = func() {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
	}
	res, err := b.Put(ctx, "big/object", src, size, PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapAlloc)
	growth := int64(peak) - int64(base)
	t.Logf("64 MiB put: heap %d MiB before, peak %d MiB, growth %.1f MiB", base/mib, peak/mib, float64(growth)/mib)
	if growth >= 16*mib {
		t.Errorf("the heap grew by %.1f MiB during a 64 MiB put: the body was buffered", float64(growth)/mib)
	}
	if src.left != 0 || res.ETag != src.md5hex() {
		t.Errorf("put ETag %s with %d bytes unread, want %s", res.ETag, src.left, src.md5hex())
	}
	info, err := b.StatInfo(ctx, "big/object")
	if err != nil || info.Size != size {
		t.Errorf("StatInfo = %+v, %v", info, err)
	}
}

// TestMinioUnavailable stops MinIO under the Bucket: every call is
// ErrUnavailable, never an *APIError, and so is a body cut off mid-read.
func TestMinioUnavailable(t *testing.T) {
	m := testenv.StartMinio(t)
	b := newBucket(t, m, 1)
	ctx := testCtx(t)
	const size = 32 * mib
	if _, err := b.Put(ctx, "big/object", newPattern(size, 4), size, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	body, _, err := b.GetRange(ctx, "big/object", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if _, err := io.CopyN(io.Discard, body, 1024); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	n, err := io.Copy(io.Discard, body)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("reading on after the bucket died: %d bytes, %v; want ErrUnavailable", n, err)
	}

	calls := map[string]func() error{
		"GetRange": func() error { _, _, err := b.GetRange(ctx, "big/object", &ByteRange{Start: 0, End: 9}); return err },
		"StatInfo": func() error { _, err := b.StatInfo(ctx, "big/object"); return err },
		"Put": func() error {
			_, err := b.Put(ctx, "put/object", newPattern(1024, 5), 1024, PutOptions{})
			return err
		},
		"Delete":          func() error { return b.Delete(ctx, "big/object") },
		"ListV2":          func() error { _, err := b.ListV2(ctx, ListParams{Prefix: "big/"}); return err },
		"ListV1":          func() error { _, err := b.ListV1(ctx, ListV1Params{Prefix: "big/"}); return err },
		"CreateMultipart": func() error { _, err := b.CreateMultipart(ctx, "mp/object", PutOptions{}); return err },
		"UploadPart": func() error {
			_, err := b.UploadPart(ctx, "mp/object", "id", 1, newPattern(1024, 6), 1024, "")
			return err
		},
		"CompleteMultipart": func() error {
			_, err := b.CompleteMultipart(ctx, "mp/object", "id", []CompletedPart{{Number: 1, ETag: "e"}})
			return err
		},
		"AbortMultipart": func() error { return b.AbortMultipart(ctx, "mp/object", "id") },
		"ListParts":      func() error { _, err := b.ListParts(ctx, "mp/object", "id", 0, 0); return err },
		"ReadAll":        func() error { _, err := b.ReadAll(ctx, "big/object", size); return err },
		"Stat":           func() error { _, err := b.Stat(ctx, "big/object"); return err },
		"List":           func() error { return b.List(ctx, "big/", func(Object) error { return nil }) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			var api *APIError
			if !errors.Is(err, ErrUnavailable) || errors.As(err, &api) {
				t.Errorf("%s = %v, want ErrUnavailable", name, err)
			}
		})
	}
}
