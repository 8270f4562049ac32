package s3api

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("time.Sleep")) }

const (
	testBucket = "cache"
	testPrefix = "artifacts"
	accessKey  = "kache-local"
	secretKey  = "kache-local-secret"
)

type harness struct {
	t      *testing.T
	fb     *fakeBucket
	st     *store.Store
	eng    *prefetch.Engine
	srv    *Server
	ln     *fasthttputil.InmemoryListener
	client *s3.Client
	http   *http.Client
	rep    *fakeReporter
	dir    string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, fb: newFakeBucket(), dir: t.TempDir(), rep: &fakeReporter{}}
	st, err := store.Open(store.Config{Dir: h.dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	h.eng = prefetch.New(prefetch.Config{Prefix: testPrefix, DemandObserved: true, SessionIdle: time.Hour}, h.fb, st, nil, nil, nil)
	if err := h.eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Bucket: testBucket, Prefix: testPrefix, AccessKey: accessKey, SecretKey: secretKey},
		Deps{Upstream: h.fb, Store: st, Engine: h.eng, Reporter: h.rep, Registerer: prometheus.NewRegistry(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.ln = fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(h.ln) }()
	h.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return h.ln.Dial() },
	}}
	h.client = h.newClient(accessKey, secretKey)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.http.CloseIdleConnections()
		if err := srv.Stop(ctx); err != nil {
			t.Error(err)
		}
		<-done
		if err := h.eng.Stop(ctx); err != nil {
			t.Error(err)
		}
		st.Close()
	})
	return h
}

func (h *harness) newClient(ak, sk string) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://sidecar.test"),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, nil
		}),
		HTTPClient:       h.http,
		RetryMaxAttempts: 1,
	})
}

type fakeReporter struct {
	mu        sync.Mutex
	manifests map[string][]byte
	packs     []int64
	aborted   int
}

func (r *fakeReporter) ManifestPut(rel string, body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.manifests == nil {
		r.manifests = map[string][]byte{}
	}
	r.manifests[rel] = bytes.Clone(body)
}

func (r *fakeReporter) Pack() PackObserver { return &fakePack{r: r} }

type fakePack struct {
	r *fakeReporter
	n int64
}

func (p *fakePack) Write(b []byte) (int, error) { p.n += int64(len(b)); return len(b), nil }
func (p *fakePack) Done(size int64, _, _ string) {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if p.n == size {
		p.r.packs = append(p.r.packs, size)
	}
}
func (p *fakePack) Abort() { p.r.mu.Lock(); p.r.aborted++; p.r.mu.Unlock() }

// key is a valid cache key (64 hex digits) distinct for each c.
func key(c byte) string { return strings.Repeat(fmt.Sprintf("%02x", c), 32) }

func packKey(crate string, c byte) string {
	return testPrefix + "/v3/packs/" + crate + "/" + key(c) + ".tar.zst"
}

func manifestKey(crate string, c byte) string {
	return testPrefix + "/v3/manifests/" + crate + "/" + key(c) + ".json"
}

// packBytes makes a body the engine accepts as a pack (a zstd magic first).
func packBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	copy(b, []byte{0x28, 0xb5, 0x2f, 0xfd})
	return b
}

func (h *harness) get(k string, rng string) ([]byte, *s3.GetObjectOutput, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(k)}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	out, err := h.client.GetObject(context.Background(), in)
	if err != nil {
		return nil, nil, err
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	return data, out, err
}

func (h *harness) put(k string, data []byte) error {
	_, err := h.client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(k), Body: bytes.NewReader(data)})
	return err
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestPutThenGetIsALocalHit(t *testing.T) {
	h := newHarness(t)
	k := packKey("serde", 'a')
	data := packBytes(300<<10, 1)
	if err := h.put(k, data); err != nil {
		t.Fatal(err)
	}
	if up, _ := h.fb.object(k); !bytes.Equal(up, data) {
		t.Fatal("the bucket does not hold what was put")
	}
	if !h.st.Has(store.Ref{Kind: store.Pack, Crate: "serde", CacheKey: key('a')}) {
		t.Fatal("an uploaded pack is not kept locally")
	}
	got, out, err := h.get(k, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || aws.ToInt64(out.ContentLength) != int64(len(data)) || aws.ToString(out.ETag) != `"`+md5hex(data)+`"` {
		t.Fatalf("GET: %d bytes, length %d, etag %s", len(got), aws.ToInt64(out.ContentLength), aws.ToString(out.ETag))
	}
	if n := h.fb.getCount(k); n != 0 {
		t.Fatalf("a local object cost %d upstream GETs", n)
	}
	if len(h.rep.packs) != 1 || h.rep.packs[0] != int64(len(data)) {
		t.Fatalf("pack observer saw %v", h.rep.packs)
	}
}

// A miss is fetched upstream once, whatever the number of readers, and
// kept; one reader giving up does not fail the others (issue 14, item 7).
func TestConcurrentMissesShareOneDownload(t *testing.T) {
	h := newHarness(t)
	k := packKey("tokio", 'b')
	data := packBytes(1<<20, 2)
	h.fb.put(k, data)
	gate := make(chan struct{})
	h.fb.gate[k] = gate
	quitter, quit := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	wg.Go(func() {
		_, err := h.client.GetObject(quitter, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(k)})
		if err == nil {
			errs <- errors.New("the cancelled reader got an answer")
		}
	})
	for range 8 {
		wg.Go(func() {
			got, _, err := h.get(k, "")
			if err != nil {
				errs <- err
			} else if !bytes.Equal(got, data) {
				errs <- errors.New("a reader got other bytes")
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	quit()
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := h.fb.getCount(k); n != 1 {
		t.Fatalf("%d upstream GETs for one object", n)
	}
	if _, _, err := h.get(k, ""); err != nil || h.fb.getCount(k) != 1 {
		t.Fatalf("the object was not kept: %v, %d GETs", err, h.fb.getCount(k))
	}
}

func TestRanges(t *testing.T) {
	h := newHarness(t)
	local := packKey("rand", 'c')
	proxied := testPrefix + "/_manifests/x86_64-unknown-linux-gnu.json"
	data := packBytes(1000, 3)
	h.fb.put(local, data)
	h.fb.put(proxied, data)
	cases := []struct {
		rng        string
		start, end int
	}{
		{"bytes=0-9", 0, 10},
		{"bytes=990-", 990, 1000},
		{"bytes=-5", 995, 1000},
		{"bytes=100-5000", 100, 1000},
		{"bytes=999-999", 999, 1000},
	}
	for _, k := range []string{local, proxied} {
		for _, tc := range cases {
			t.Run(filepath.Base(k)+"/"+tc.rng, func(t *testing.T) {
				got, out, err := h.get(k, tc.rng)
				if err != nil {
					t.Fatal(err)
				}
				want := data[tc.start:tc.end]
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes, want %d", len(got), len(want))
				}
				wantCR := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, len(data))
				if aws.ToString(out.ContentRange) != wantCR {
					t.Fatalf("Content-Range %q, want %q", aws.ToString(out.ContentRange), wantCR)
				}
			})
		}
		t.Run(filepath.Base(k)+"/unsatisfiable", func(t *testing.T) {
			_, _, err := h.get(k, "bytes=5000-")
			if apiCode(err) != "InvalidRange" {
				t.Fatalf("got %v, want InvalidRange", err)
			}
		})
	}
}

func TestHeadAndMissing(t *testing.T) {
	h := newHarness(t)
	man := manifestKey("serde", 'd')
	body := []byte(`{"version":3}`)
	h.fb.put(man, body)
	out, err := h.client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(man)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt64(out.ContentLength) != int64(len(body)) || aws.ToString(out.ETag) != `"`+md5hex(body)+`"` {
		t.Fatalf("HEAD length %d etag %s", aws.ToInt64(out.ContentLength), aws.ToString(out.ETag))
	}
	if !h.st.Has(store.Ref{Kind: store.EntryManifest, Crate: "serde", CacheKey: key('d')}) {
		t.Fatal("a HEAD of an entry manifest should keep it locally")
	}
	_, err = h.client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(manifestKey("serde", 'e'))})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("HEAD of a missing key: %v", err)
	}
	_, _, err = h.get(packKey("serde", 'e'), "")
	if apiCode(err) != "NoSuchKey" {
		t.Fatalf("GET of a missing pack: %v", err)
	}
	_, _, err = h.get(testPrefix+"/_manifests/none.json", "")
	if apiCode(err) != "NoSuchKey" {
		t.Fatalf("GET of a missing object: %v", err)
	}
}

func TestListPagination(t *testing.T) {
	h := newHarness(t)
	want := map[string]bool{}
	for i := range 25 {
		k := fmt.Sprintf("%s/v3/manifests/crate%02d/%s.json", testPrefix, i%5, key(byte('a'+i%6)))
		k = strings.Replace(k, key(byte('a'+i%6)), fmt.Sprintf("%063x%d", i, i%10), 1)
		h.fb.put(k, []byte("x"))
		want[k] = true
	}
	got := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(h.client, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(testPrefix + "/v3/manifests/"), MaxKeys: aws.Int32(10)})
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range out.Contents {
			if got[aws.ToString(o.Key)] {
				t.Fatalf("%s listed twice", aws.ToString(o.Key))
			}
			got[aws.ToString(o.Key)] = true
		}
	}
	if len(got) != len(want) || pages != 3 {
		t.Fatalf("listed %d keys in %d pages, want %d in 3", len(got), pages, len(want))
	}
	out, err := h.client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(testPrefix + "/v3/manifests/"), Delimiter: aws.String("/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.CommonPrefixes) != 5 || len(out.Contents) != 0 {
		t.Fatalf("delimiter: %d prefixes, %d objects", len(out.CommonPrefixes), len(out.Contents))
	}
	v1, err := h.client.ListObjects(context.Background(), &s3.ListObjectsInput{Bucket: aws.String(testBucket), Prefix: aws.String(testPrefix), MaxKeys: aws.Int32(7)})
	if err != nil {
		t.Fatal(err)
	}
	if len(v1.Contents) != 7 || !aws.ToBool(v1.IsTruncated) {
		t.Fatalf("ListObjects v1: %d objects, truncated %v", len(v1.Contents), aws.ToBool(v1.IsTruncated))
	}
}

func TestDeleteDropsLocalCopy(t *testing.T) {
	h := newHarness(t)
	k := packKey("serde", 'f')
	if err := h.put(k, packBytes(100, 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(testBucket), Key: aws.String(k)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.fb.object(k); ok || h.st.Has(store.Ref{Kind: store.Pack, Crate: "serde", CacheKey: key('f')}) {
		t.Fatal("deleted object still upstream or local")
	}
	if _, _, err := h.get(k, ""); apiCode(err) != "NoSuchKey" {
		t.Fatalf("GET after delete: %v", err)
	}
}

func TestMultipartPassThrough(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	k := testPrefix + "/big/object.bin"
	up, err := h.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(k)})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	var all []byte
	for i := int32(1); i <= 3; i++ {
		data := bytes.Repeat([]byte{byte(i)}, 100<<10)
		all = append(all, data...)
		out, err := h.client.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(testBucket), Key: aws.String(k), UploadId: up.UploadId,
			PartNumber: aws.Int32(i), Body: bytes.NewReader(data)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(i), ETag: out.ETag})
	}
	lp, err := h.client.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(testBucket), Key: aws.String(k), UploadId: up.UploadId})
	if err != nil || len(lp.Parts) != 3 {
		t.Fatalf("ListParts: %v, %d parts", err, len(lp.Parts))
	}
	if _, err := h.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(k),
		UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.fb.object(k); !bytes.Equal(got, all) {
		t.Fatal("completed object differs")
	}
	up2, err := h.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(k)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(k), UploadId: up2.UploadId}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(k), UploadId: up2.UploadId})
	if apiCode(err) != "NoSuchUpload" {
		t.Fatalf("abort twice: %v", err)
	}
}

func TestPresignedGet(t *testing.T) {
	h := newHarness(t)
	k := manifestKey("serde", 'g')
	h.fb.put(k, []byte(`{"version":3}`))
	ps := s3.NewPresignClient(h.client)
	req, err := ps.PresignGetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(k)},
		s3.WithPresignExpires(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.http.Get(req.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != `{"version":3}` {
		t.Fatalf("presigned GET: %d %q", resp.StatusCode, body)
	}
	tampered := strings.Replace(req.URL, "X-Amz-Expires=300", "X-Amz-Expires=600", 1)
	resp2, err := h.http.Get(tampered)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered presigned URL: %d", resp2.StatusCode)
	}
}

func TestAuthAndBucketErrors(t *testing.T) {
	h := newHarness(t)
	k := manifestKey("serde", 'h')
	h.fb.put(k, []byte("{}"))
	cases := []struct {
		name   string
		client *s3.Client
		bucket string
		code   string
	}{
		{"wrong access key", h.newClient("someone-else", secretKey), testBucket, "InvalidAccessKeyId"},
		{"wrong secret", h.newClient(accessKey, "wrong"), testBucket, "SignatureDoesNotMatch"},
		{"wrong bucket", h.client, "other-bucket", "NoSuchBucket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.fb.callCount()
			_, err := tc.client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(tc.bucket), Key: aws.String(k)})
			if apiCode(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
			if h.fb.callCount() != before {
				t.Fatal("a refused request reached the bucket")
			}
		})
	}
}

// rawRequest sends a signed request with a body written by hand.
func (h *harness) rawRequest(method, path string, hdr map[string]string, payloadHash string, body io.Reader, length int64) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://sidecar.test"+path, body)
	if err != nil {
		return nil, err
	}
	req.URL.RawPath = path
	req.ContentLength = length
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	signer := v4.NewSigner()
	if err := signer.SignHTTP(context.Background(), aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey},
		req, payloadHash, "s3", "us-east-1", time.Now()); err != nil {
		return nil, err
	}
	return h.http.Do(req)
}

func TestBadInputWritesNothing(t *testing.T) {
	h := newHarness(t)
	data := packBytes(4096, 5)
	wrongMD5 := md5.Sum([]byte("something else"))
	sum := sha256.Sum256(data)
	hexSum := fmt.Sprintf("%x", sum)
	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		hash   string
		body   []byte
		length int64
		status int
	}{
		{"dot-dot key", "/" + testBucket + "/" + testPrefix + "/v3/packs/../../../etc/passwd", nil, hexSum, data, int64(len(data)), 400},
		{"encoded slashes", "/" + testBucket + "/" + testPrefix + "%2F..%2F..%2Fetc%2Fpasswd", nil, hexSum, data, int64(len(data)), 400},
		{"absolute key", "/" + testBucket + "//etc/passwd", nil, hexSum, data, int64(len(data)), 400},
		{"wrong Content-MD5", "/" + testBucket + "/" + packKey("serde", 'i'),
			map[string]string{"Content-MD5": base64.StdEncoding.EncodeToString(wrongMD5[:])}, "UNSIGNED-PAYLOAD", data, int64(len(data)), 400},
		{"wrong sha256", "/" + testBucket + "/" + packKey("serde", 'j'), nil, strings.Repeat("0", 64), data, int64(len(data)), 400},
		{"wrong bucket", "/elsewhere/" + packKey("serde", 'k'), nil, hexSum, data, int64(len(data)), 404},
		// The bucket reads no byte of an empty object: the body is verified
		// before it is asked to store one.
		{"empty body, wrong sha256", "/" + testBucket + "/plain/empty", nil, hexSum, nil, 0, 400},
		{"empty body, wrong Content-MD5", "/" + testBucket + "/plain/empty",
			map[string]string{"Content-MD5": base64.StdEncoding.EncodeToString(wrongMD5[:])}, "UNSIGNED-PAYLOAD", nil, 0, 400},
		{"empty pack, wrong sha256", "/" + testBucket + "/" + packKey("serde", 'l'), nil, hexSum, nil, 0, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.fb.callCount()
			resp, err := h.rawRequest(http.MethodPut, tc.path, tc.hdr, tc.hash, bytes.NewReader(tc.body), tc.length)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !bytes.Contains(b, []byte("<Error>")) || resp.Header.Get("x-amz-request-id") == "" {
				t.Fatalf("status %d body %s", resp.StatusCode, b)
			}
			h.fb.mu.Lock()
			n := len(h.fb.objs)
			h.fb.mu.Unlock()
			if n != 0 || h.st.Stats().Objects != 0 {
				t.Fatalf("objects written: %d upstream, %d local", n, h.st.Stats().Objects)
			}
			if tc.status == 400 && strings.Contains(tc.name, "key") && h.fb.callCount() != before {
				t.Fatal("a refused key reached the bucket")
			}
		})
	}
	checkNoStrayFiles(t, h.dir)
}

// A chunked body cut short never reaches the bucket whole.
func TestTruncatedChunkedBody(t *testing.T) {
	h := newHarness(t)
	data := packBytes(64<<10, 6)
	body := fmt.Sprintf("%x\r\n", len(data)) + string(data[:30000]) // cut mid-chunk
	resp, err := h.rawRequest(http.MethodPut, "/"+testBucket+"/"+packKey("serde", 'l'), map[string]string{
		"Content-Encoding":             "aws-chunked",
		"X-Amz-Decoded-Content-Length": fmt.Sprint(len(data)),
		"X-Amz-Trailer":                "x-amz-checksum-crc32",
	}, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", strings.NewReader(body), int64(len(body)))
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("truncated body answered %d %s", resp.StatusCode, b)
		}
	}
	if _, ok := h.fb.object(packKey("serde", 'l')); ok || h.st.Stats().Objects != 0 {
		t.Fatal("a truncated upload was kept")
	}
	checkNoStrayFiles(t, h.dir)
}

func checkNoStrayFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), store.TempPrefix) {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
}

func TestUpstreamDown(t *testing.T) {
	h := newHarness(t)
	local := packKey("serde", 'm')
	data := packBytes(2048, 7)
	if err := h.put(local, data); err != nil {
		t.Fatal(err)
	}
	h.fb.mu.Lock()
	h.fb.down = true
	h.fb.mu.Unlock()
	if got, _, err := h.get(local, ""); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("local object with the bucket down: %v", err)
	}
	_, _, err := h.get(packKey("serde", 'n'), "")
	if apiCode(err) != "ServiceUnavailable" {
		t.Fatalf("miss with the bucket down: %v", err)
	}
	if err := h.put(packKey("serde", 'o'), data); apiCode(err) != "ServiceUnavailable" {
		t.Fatalf("put with the bucket down: %v", err)
	}
	if h.st.Has(store.Ref{Kind: store.Pack, Crate: "serde", CacheKey: key('o')}) {
		t.Fatal("an unacknowledged upload was kept locally")
	}
}

// Concurrent writers and readers of one key (issue 14, items 3 and 4):
// every read is one whole version with the length it announced.
func TestConcurrentPutsAndGetsOfOneKey(t *testing.T) {
	h := newHarness(t)
	k := packKey("serde", 'p')
	versions := map[[32]byte]bool{}
	var bodies [][]byte
	for i := range 4 {
		b := packBytes(10000+i*7919, byte(i))
		bodies = append(bodies, b)
		versions[sha256.Sum256(b)] = true
	}
	if err := h.put(k, bodies[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 4 {
		wg.Go(func() {
			for range 5 {
				if err := h.put(k, bodies[i]); err != nil {
					errs <- err
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 10 {
				got, out, err := h.get(k, "")
				if err != nil {
					errs <- err
					continue
				}
				if int64(len(got)) != aws.ToInt64(out.ContentLength) || !versions[sha256.Sum256(got)] {
					errs <- fmt.Errorf("read %d bytes (Content-Length %d) matching no version", len(got), aws.ToInt64(out.ContentLength))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, _, err := h.get(k, "")
	up, _ := h.fb.object(k)
	if err != nil || !versions[sha256.Sum256(got)] {
		t.Fatalf("final read: %v", err)
	}
	_ = up
}

func TestManifestPutIsReported(t *testing.T) {
	h := newHarness(t)
	body := []byte(`{"version":3,"manifest_key":"x","entries":[]}`)
	if err := h.put(testPrefix+"/_manifests/x86_64-unknown-linux-gnu.json", body); err != nil {
		t.Fatal(err)
	}
	if got := h.rep.manifests["x86_64-unknown-linux-gnu.json"]; !bytes.Equal(got, body) {
		t.Fatalf("reported %q", got)
	}
}

func TestUnsupportedOperations(t *testing.T) {
	h := newHarness(t)
	_, err := h.client.CopyObject(context.Background(), &s3.CopyObjectInput{Bucket: aws.String(testBucket), Key: aws.String("a/b"), CopySource: aws.String(testBucket + "/c/d")})
	if apiCode(err) != "NotImplemented" {
		t.Fatalf("CopyObject: %v", err)
	}
	_, err = h.client.GetObjectTagging(context.Background(), &s3.GetObjectTaggingInput{Bucket: aws.String(testBucket), Key: aws.String("a/b")})
	if apiCode(err) != "NotImplemented" {
		t.Fatalf("GetObjectTagging: %v", err)
	}
}

// testLogger logs to the test at debug level when KACHE_TEST_LOG is set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KACHE_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestConditionalGetOfLocalObject(t *testing.T) {
	h := newHarness(t)
	k := packKey("serde", 0x31)
	data := packBytes(4096, 9)
	if err := h.put(k, data); err != nil {
		t.Fatal(err)
	}
	etag := `"` + md5hex(data) + `"`
	future := time.Now().Add(time.Hour)
	past := time.Now().Add(-time.Hour)
	cases := []struct {
		name string
		in   s3.GetObjectInput
		code int
	}{
		{"if-match hit", s3.GetObjectInput{IfMatch: aws.String(etag)}, 200},
		{"if-match miss", s3.GetObjectInput{IfMatch: aws.String(`"0123"`)}, 412},
		{"if-match miss with range", s3.GetObjectInput{IfMatch: aws.String(`"0123"`), Range: aws.String("bytes=0-9")}, 412},
		{"if-none-match hit", s3.GetObjectInput{IfNoneMatch: aws.String(etag)}, 304},
		{"if-modified-since later", s3.GetObjectInput{IfModifiedSince: aws.Time(future)}, 304},
		{"if-modified-since earlier", s3.GetObjectInput{IfModifiedSince: aws.Time(past)}, 200},
		{"if-unmodified-since earlier", s3.GetObjectInput{IfUnmodifiedSince: aws.Time(past)}, 412},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Bucket, in.Key = aws.String(testBucket), aws.String(k)
			out, err := h.client.GetObject(context.Background(), &in)
			code := 200
			var re interface{ HTTPStatusCode() int }
			if err != nil {
				if !errors.As(err, &re) {
					t.Fatal(err)
				}
				code = re.HTTPStatusCode()
			} else {
				out.Body.Close()
			}
			if code != tc.code {
				t.Fatalf("status %d, want %d (%v)", code, tc.code, err)
			}
		})
	}
	if n := h.fb.getCount(k); n != 0 {
		t.Fatalf("conditions on a local object cost %d upstream GETs", n)
	}
}

func TestResponseOverridesOfLocalObject(t *testing.T) {
	h := newHarness(t)
	k := packKey("serde", 0x32)
	if err := h.put(k, packBytes(100, 1)); err != nil {
		t.Fatal(err)
	}
	out, err := h.client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(k),
		ResponseContentType: aws.String("text/plain"), ResponseContentDisposition: aws.String(`attachment; filename="p"`)})
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	if aws.ToString(out.ContentType) != "text/plain" || aws.ToString(out.ContentDisposition) != `attachment; filename="p"` {
		t.Fatalf("overrides not applied: %q %q", aws.ToString(out.ContentType), aws.ToString(out.ContentDisposition))
	}
}

func TestDeleteObjects(t *testing.T) {
	h := newHarness(t)
	keys := []string{packKey("serde", 0x33), testPrefix + "/_manifests/a.json", testPrefix + "/other/b"}
	for _, k := range keys {
		if err := h.put(k, packBytes(64, 2)); err != nil {
			t.Fatal(err)
		}
	}
	var ids []types.ObjectIdentifier
	for _, k := range append(keys, "bad/../key") {
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
	}
	out, err := h.client.DeleteObjects(context.Background(), &s3.DeleteObjectsInput{Bucket: aws.String(testBucket),
		Delete: &types.Delete{Objects: ids}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Deleted) != 3 || len(out.Errors) != 1 || aws.ToString(out.Errors[0].Key) != "bad/../key" {
		t.Fatalf("deleted %d, errors %+v", len(out.Deleted), out.Errors)
	}
	for _, k := range keys {
		if _, ok := h.fb.object(k); ok {
			t.Errorf("%s still in the bucket", k)
		}
	}
	if h.st.Stats().Objects != 0 {
		t.Fatal("local copy kept after DeleteObjects")
	}
}
