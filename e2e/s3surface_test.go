//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// The credentials clients sign with against the sidecar's S3 surface (the
// sidecar alone holds MinIO's).
const (
	localAccessKey = "kache-local-e2e"
	localSecretKey = "kache-local-e2e-secret"
)

// s3Sidecar is a `kache-sidecar serve` with its S3 surface on.
type s3Sidecar struct {
	sidecar
	s3       string // host:port of the S3 surface
	endpoint string // http://s3
	// parent holds the store directory and nothing else.
	parent string
}

// startS3Sidecar starts the sidecar in front of o's bucket, asking central
// for plans when centralURL is set, and waits until both of its surfaces
// answer. extraEnv (NAME=value) is added to the sidecar's environment.
func startS3Sidecar(t testing.TB, o *objectStore, centralURL string, extraEnv ...string) *s3Sidecar {
	t.Helper()
	parent := t.TempDir()
	sc := &s3Sidecar{
		sidecar: sidecar{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), store: filepath.Join(parent, "store")},
		s3:      fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		parent:  parent,
	}
	sc.endpoint = "http://" + sc.s3
	env := []string{
		"KACHE_SIDECAR_PLANNER_LISTEN=" + sc.addr,
		"KACHE_SIDECAR_S3_LISTEN=" + sc.s3,
		"KACHE_SIDECAR_STORE_DIR=" + sc.store,
		"KACHE_SIDECAR_STORE_FSYNC=false",
		"KACHE_SIDECAR_S3_ENDPOINT=" + o.endpoint,
		"KACHE_SIDECAR_S3_BUCKET=" + testBucket,
		"KACHE_SIDECAR_REPOSITORY=acme/app",
		"KACHE_SIDECAR_LOG_LEVEL=debug",
		"AWS_ACCESS_KEY_ID=" + testenv.MinioUser,
		"AWS_SECRET_ACCESS_KEY=" + testenv.MinioSecret,
		"KACHE_SIDECAR_LOCAL_ACCESS_KEY=" + localAccessKey,
		"KACHE_SIDECAR_LOCAL_SECRET_KEY=" + localSecretKey,
	}
	if centralURL != "" {
		env = append(env, "KACHE_SIDECAR_CENTRAL_ENDPOINT="+centralURL)
	}
	env = append(env, extraEnv...)
	sc.p = testenv.Start(t, "kache-sidecar", env, sidecarBin(t), "serve")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool {
		if sc.p.Exited() {
			return true
		}
		resp, err := httpc.Get("http://" + sc.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false
		}
		// Any S3 answer (an unsigned request is refused) means it serves.
		resp, err = httpc.Get(sc.endpoint + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("x-amz-request-id") != ""
	}) || sc.p.Exited() {
		t.Fatalf("kache-sidecar S3 surface not serving on %s:\n%s", sc.s3, sc.p.Tail(30))
	}
	return sc
}

// metricValue reads one series from a /metrics page; absent is 0.
func metricValue(t testing.TB, base, series string) float64 {
	t.Helper()
	resp, err := httpc.Get(base + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			must(t, err)
			return f
		}
	}
	must(t, sc.Err())
	return 0
}

func (sc *s3Sidecar) metricValue(t testing.TB, series string) float64 {
	t.Helper()
	return metricValue(t, "http://"+sc.addr, series)
}

func (r *replica) metricValue(t testing.TB, series string) float64 {
	t.Helper()
	return metricValue(t, r.addr, series)
}

// reads are the object reads the S3 surface answered from its store and
// from the bucket so far.
func (sc *s3Sidecar) reads(t testing.TB) (local, upstream float64) {
	t.Helper()
	return sc.metricValue(t, `kache_sidecar_s3_reads_total{source="local"}`),
		sc.metricValue(t, `kache_sidecar_s3_reads_total{source="upstream"}`)
}

// logRecords returns the sidecar's JSON log records whose msg is msg.
func (sc *s3Sidecar) logRecords(t testing.TB, msg string) []map[string]any {
	t.Helper()
	f, err := os.Open(sc.p.Log)
	must(t, err)
	defer f.Close()
	var out []map[string]any
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var rec map[string]any
		if json.Unmarshal(s.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	must(t, s.Err())
	return out
}

// startCentral runs kache-service crawling o's bucket every second and
// waits until it is ready.
func startCentral(t testing.TB, o *objectStore) *replica {
	t.Helper()
	port := testenv.FreePort(t)
	r := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	r.p = testenv.Start(t, "kache-service", append(o.env(), "KACHE_LOG=info"), serviceBin(t), append([]string{
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(t.TempDir(), "db")}, o.args()...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return r.status("/readyz") == 200 }) {
		t.Fatalf("central not ready:\n%s", r.p.Tail(20))
	}
	return r
}

// seedKeys writes body under every key straight into MinIO, in one
// snowball upload (a tar MinIO extracts), far faster than a PUT per key.
func seedKeys(t testing.TB, o *objectStore, keys []string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs := make(chan minio.SnowballObject)
	go func() {
		defer close(objs)
		for _, k := range keys {
			select {
			case objs <- minio.SnowballObject{Key: k, Size: int64(len(body)), Content: bytes.NewReader(body)}:
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := o.client.PutObjectsSnowball(ctx, testBucket, minio.SnowballOptions{InMemory: true}, objs); err != nil {
		t.Fatalf("seed %d keys: %v", len(keys), err)
	}
	if got := len(minioKeys(t, o, testBucket, commonPrefix(keys))); got < len(keys) {
		t.Fatalf("seeded %d keys, MinIO lists %d", len(keys), got)
	}
}

// commonPrefix is the longest prefix of every key.
func commonPrefix(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	p := keys[0]
	for _, k := range keys[1:] {
		for !strings.HasPrefix(k, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}

// minioKeys lists every key of a MinIO bucket under prefix.
func minioKeys(t testing.TB, o *objectStore, bucket, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel() // ends the listing goroutine
	var keys []string
	for obj := range o.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		must(t, obj.Err)
		keys = append(keys, obj.Key)
	}
	return keys
}

// randomBytes is n bytes of seeded pseudo-random data.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sdkClient is an AWS SDK for Go v2 S3 client for endpoint, configured as
// config.LoadDefaultConfig would (CRC32 request checksums, response
// checksums validated) plus path style, and without retries, so a first
// failure is not hidden.
func sdkClient(t testing.TB, endpoint, accessKey, secretKey string) *s3.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 16, ResponseHeaderTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return newSDKClient(endpoint, accessKey, secretKey, &http.Client{Transport: tr, Timeout: 3 * time.Minute})
}

func newSDKClient(endpoint, accessKey, secretKey string, hc *http.Client) *s3.Client {
	return s3.New(s3.Options{
		Region:       testenv.MinioRegion,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}, nil
		}),
		HTTPClient:                 hc,
		RetryMaxAttempts:           1,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported,
	})
}

// apiCode is the S3 error code of an SDK error.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// sdkGet reads a whole object (or a range) with the SDK.
func sdkGet(ctx context.Context, c *s3.Client, bucket, key, rng string) ([]byte, *s3.GetObjectOutput, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	out, err := c.GetObject(ctx, in)
	if err != nil {
		return nil, nil, err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return b, out, err
}

// tlsProxy is an HTTPS endpoint on loopback that forwards every request
// to addr unchanged, Host header included (it is signed).
func tlsProxy(t testing.TB, addr string) *httptest.Server {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: addr}
	tr := &http.Transport{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport: tr,
	}
	srv := httptest.NewTLSServer(rp)
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return srv
}

// sdkGetPart reads one part of a multipart object, at most limit bytes of
// the answer.
func sdkGetPart(ctx context.Context, c *s3.Client, key string, part int32, limit int64) ([]byte, *s3.GetObjectOutput, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), PartNumber: aws.Int32(part)})
	if err != nil {
		return nil, nil, err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, limit))
	return b, out, err
}

// recordingTransport keeps the headers of the last request it sent.
type recordingTransport struct {
	next   http.RoundTripper
	header http.Header
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.header = req.Header.Clone()
	return r.next.RoundTrip(req)
}

// nonSeekable hides a reader's Seek, so the SDK must stream the body
// (aws-chunked with a trailing checksum).
type nonSeekable struct{ io.Reader }

// TestS3SurfaceAWSSDK runs the AWS SDK for Go v2 (with LoadDefaultConfig's
// checksum settings) against the sidecar in front of MinIO: what it puts
// is in MinIO byte for byte; gets (whole, ranged, conditional, one part),
// heads and metadata look as MinIO's own answers; aws-chunked uploads with
// a trailing checksum (the SDK's default over TLS) go through; lists
// paginate, deletes (single and multi-object) reach the bucket; a 64 MiB
// upload manager multipart reads back byte for byte (whole and through the
// download manager); presigned GETs work, tampered or expired ones do not;
// and wrong credentials, a missing key and a wrong bucket get S3's errors.
// Packs and entry manifests are served from the store, the rest from the
// bucket (the surface's read metrics).
func TestS3SurfaceAWSSDK(t *testing.T) {
	o := startMinio(t)
	ctx := context.Background()
	must(t, o.client.MakeBucket(ctx, "other", minio.MakeBucketOptions{Region: testenv.MinioRegion}))
	sc := startS3Sidecar(t, o, "")
	c := sdkClient(t, sc.endpoint, localAccessKey, localSecretKey)
	direct := sdkClient(t, o.endpoint, testenv.MinioUser, testenv.MinioSecret) // MinIO itself, for comparison

	plain := randomBytes(300<<10+17, 1)
	pack := newKacheEntry(t, "serde", 1, 256<<10)
	objects := []struct {
		name, key   string
		body        []byte
		contentType string // as kache sends it
		local       bool   // kept in and served from the sidecar's store
	}{
		{"plain", "sdk/dir/plain object.bin", plain, "", false},
		{"pack", pack.packKey(), pack.pack, "", true},
		{"entry manifest", pack.manifestKey(), pack.manifest, "application/json", true},
	}

	t.Run("PutGetHead", func(t *testing.T) {
		for _, obj := range objects {
			in := &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(obj.key), Body: bytes.NewReader(obj.body)}
			if obj.contentType != "" {
				in.ContentType = aws.String(obj.contentType)
			}
			out, err := c.PutObject(ctx, in)
			if err != nil {
				t.Fatalf("put %s: %v", obj.name, err)
			}
			got, info := minioBytes(t, o, testBucket, obj.key)
			if !bytes.Equal(got, obj.body) {
				t.Fatalf("put %s: MinIO holds %d bytes, the SDK put %d", obj.name, len(got), len(obj.body))
			}
			if aws.ToString(out.ETag) != `"`+info.ETag+`"` {
				t.Errorf("put %s: ETag %s, MinIO's is %q", obj.name, aws.ToString(out.ETag), info.ETag)
			}
			local0, up0 := sc.reads(t)
			body, gout, err := sdkGet(ctx, c, testBucket, obj.key, "")
			if err != nil || !bytes.Equal(body, obj.body) {
				t.Fatalf("get %s: %v (%d bytes of %d)", obj.name, err, len(body), len(obj.body))
			}
			// An object kept at PUT carries the sidecar's clock at the
			// bucket's ack (a PUT answer has no Last-Modified), a few
			// milliseconds after MinIO's: the same second, or the next.
			lm := aws.ToTime(gout.LastModified)
			lmOK := lm.Equal(info.LastModified)
			if obj.local {
				lmOK = lmOK || lm.Equal(info.LastModified.Add(time.Second))
			}
			if aws.ToString(gout.ETag) != `"`+info.ETag+`"` || aws.ToInt64(gout.ContentLength) != int64(len(obj.body)) || !lmOK {
				t.Errorf("get %s: ETag %s, length %d, Last-Modified %s; MinIO: %q, %d, %s", obj.name, aws.ToString(gout.ETag),
					aws.ToInt64(gout.ContentLength), aws.ToTime(gout.LastModified), info.ETag, len(obj.body), info.LastModified)
			}
			if aws.ToString(gout.ContentType) != info.ContentType {
				t.Errorf("get %s: Content-Type %q, MinIO's is %q", obj.name, aws.ToString(gout.ContentType), info.ContentType)
			}
			hout, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(obj.key)})
			if err != nil {
				t.Fatalf("head %s: %v", obj.name, err)
			}
			if aws.ToString(hout.ETag) != `"`+info.ETag+`"` || aws.ToInt64(hout.ContentLength) != int64(len(obj.body)) {
				t.Errorf("head %s: ETag %s, length %d; MinIO: %q, %d", obj.name, aws.ToString(hout.ETag), aws.ToInt64(hout.ContentLength), info.ETag, len(obj.body))
			}
			size := int64(len(obj.body))
			for _, r := range []struct {
				spec     string
				off, end int64 // inclusive
			}{
				{"bytes=0-0", 0, 0},
				{fmt.Sprintf("bytes=%d-%d", size/4, size/2), size / 4, size / 2},
				{fmt.Sprintf("bytes=-%d", size/3), size - size/3, size - 1},
				{fmt.Sprintf("bytes=%d-", size/5), size / 5, size - 1},
				{fmt.Sprintf("bytes=%d-999999999", size/7), size / 7, size - 1},
			} {
				body, rout, err := sdkGet(ctx, c, testBucket, obj.key, r.spec)
				if err != nil {
					t.Fatalf("get %s %s: %v", obj.name, r.spec, err)
				}
				wantRange := fmt.Sprintf("bytes %d-%d/%d", r.off, r.end, size)
				if !bytes.Equal(body, obj.body[r.off:r.end+1]) || aws.ToString(rout.ContentRange) != wantRange {
					t.Errorf("get %s %s: %d bytes, Content-Range %q; want %d bytes, %q", obj.name, r.spec, len(body),
						aws.ToString(rout.ContentRange), r.end-r.off+1, wantRange)
				}
			}
			local1, up1 := sc.reads(t)
			// get, head and 5 ranges.
			const reads = 7
			wantLocal, wantUp := float64(0), float64(reads)
			if obj.local {
				wantLocal, wantUp = reads, 0
			}
			if local1-local0 != wantLocal || up1-up0 != wantUp {
				t.Errorf("%s: %v local and %v upstream reads, want %v and %v", obj.name, local1-local0, up1-up0, wantLocal, wantUp)
			}
			if _, _, err := sdkGet(ctx, c, testBucket, obj.key, fmt.Sprintf("bytes=%d-", size)); apiCode(err) != "InvalidRange" {
				t.Errorf("get %s past its end: %v, want InvalidRange", obj.name, err)
			}
		}
	})

	t.Run("ConditionalGet", func(t *testing.T) {
		// The download manager sends If-Match on every range after the
		// first, so that an object replaced mid-download fails instead of
		// mixing two versions; caches send If-None-Match. The sidecar must
		// answer them as MinIO does, from the bucket and from its store.
		for _, obj := range objects[:2] {
			_, info := minioBytes(t, o, testBucket, obj.key)
			etag := `"` + info.ETag + `"`
			for _, cond := range []struct {
				name string
				set  func(*s3.GetObjectInput)
			}{
				{"If-Match, other ETag", func(in *s3.GetObjectInput) { in.IfMatch = aws.String(`"0123456789abcdef0123456789abcdef"`) }},
				{"If-Match, its ETag", func(in *s3.GetObjectInput) { in.IfMatch = aws.String(etag) }},
				{"If-None-Match, its ETag", func(in *s3.GetObjectInput) { in.IfNoneMatch = aws.String(etag) }},
				{"If-Modified-Since, later", func(in *s3.GetObjectInput) { in.IfModifiedSince = aws.Time(time.Now().Add(time.Hour)) }},
				{"If-Unmodified-Since, earlier", func(in *s3.GetObjectInput) { in.IfUnmodifiedSince = aws.Time(info.LastModified.Add(-time.Hour)) }},
				{"If-Match, other ETag, ranged", func(in *s3.GetObjectInput) {
					in.IfMatch = aws.String(`"0123456789abcdef0123456789abcdef"`)
					in.Range = aws.String("bytes=0-99")
				}},
			} {
				var got []string
				for _, cl := range []*s3.Client{direct, c} {
					in := &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(obj.key)}
					cond.set(in)
					out, err := cl.GetObject(ctx, in)
					if err == nil {
						out.Body.Close()
					}
					got = append(got, fmt.Sprintf("code %q", apiCode(err)))
				}
				if got[0] != got[1] {
					t.Errorf("GET %s with %s: MinIO answers %s, the sidecar %s", obj.name, cond.name, got[0], got[1])
				}
			}
		}
	})

	t.Run("Metadata", func(t *testing.T) {
		key := "sdk/with-metadata.txt"
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader("hello"),
			ContentType: aws.String("text/plain; charset=utf-8"), Metadata: map[string]string{"build": "42"}, CacheControl: aws.String("max-age=60")})
		must(t, err)
		for _, cl := range []*s3.Client{c, direct} {
			h, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
			if err != nil || aws.ToString(h.ContentType) != "text/plain; charset=utf-8" || h.Metadata["build"] != "42" || aws.ToString(h.CacheControl) != "max-age=60" {
				t.Fatalf("head: %v; content type %q, metadata %v, cache control %q", err, aws.ToString(h.ContentType), h.Metadata, aws.ToString(h.CacheControl))
			}
		}
	})

	t.Run("ChecksumMode", func(t *testing.T) {
		// An object MinIO stores with its CRC32C, read with checksum
		// validation on: through the sidecar the SDK gets and verifies
		// the same checksum MinIO gives it.
		body := randomBytes(1<<20, 4)
		key := "sdk/checksummed.bin"
		_, err := direct.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: bytes.NewReader(body),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c})
		must(t, err)
		var sums []string
		for _, cl := range []*s3.Client{direct, c} {
			out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
			must(t, err)
			got, err := io.ReadAll(out.Body)
			out.Body.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("GET with checksum validation: %v", err)
			}
			sums = append(sums, aws.ToString(out.ChecksumCRC32C))
		}
		if sums[0] != sums[1] {
			t.Errorf("CRC32C: MinIO answers %q, the sidecar %q", sums[0], sums[1])
		}
	})

	t.Run("TrailingChecksum", func(t *testing.T) {
		// Over HTTPS the SDK streams every PUT as aws-chunked with a
		// trailing CRC32 (STREAMING-UNSIGNED-PAYLOAD-TRAILER); over plain
		// HTTP it never does. A TLS proxy on loopback that keeps the Host
		// the SDK signed puts the SDK on that path.
		proxy := tlsProxy(t, sc.s3)
		rec := &recordingTransport{next: proxy.Client().Transport}
		tc := newSDKClient(proxy.URL, localAccessKey, localSecretKey, &http.Client{Transport: rec, Timeout: time.Minute})
		for _, tcase := range []struct {
			name string
			body func([]byte) io.Reader
		}{
			{"seekable", func(b []byte) io.Reader { return bytes.NewReader(b) }},
			{"unseekable", func(b []byte) io.Reader { return nonSeekable{bytes.NewReader(b)} }},
		} {
			body := randomBytes(1<<20+3, 2)
			key := "sdk/trailer-" + tcase.name + ".bin"
			_, err := tc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key),
				Body: tcase.body(body), ContentLength: aws.Int64(int64(len(body)))})
			if err != nil {
				t.Fatalf("%s put: %v", tcase.name, err)
			}
			if got := rec.header.Get("X-Amz-Content-Sha256"); got != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" || rec.header.Get("X-Amz-Trailer") == "" {
				t.Fatalf("%s put: the SDK did not send aws-chunked with a trailer: x-amz-content-sha256 %q, x-amz-trailer %q",
					tcase.name, got, rec.header.Get("X-Amz-Trailer"))
			}
			if got, _ := minioBytes(t, o, testBucket, key); !bytes.Equal(got, body) {
				t.Fatalf("%s put: MinIO holds %d bytes, the SDK put %d", tcase.name, len(got), len(body))
			}
			if got, _, err := sdkGet(ctx, tc, testBucket, key, ""); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%s get over TLS: %v", tcase.name, err)
			}
			// The bucket keeps the checksum the SDK sent, as S3 would.
			h, err := direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
			must(t, err)
			if want := base64.StdEncoding.EncodeToString(crc32Sum(body)); aws.ToString(h.ChecksumCRC32) != want {
				t.Errorf("%s put: MinIO stored CRC32 %q, the SDK sent %q", tcase.name, aws.ToString(h.ChecksumCRC32), want)
			}
		}
	})

	t.Run("ListPagination", func(t *testing.T) {
		var want []string
		for i := range 25 {
			want = append(want, fmt.Sprintf("sdk/list/%03d", i))
		}
		for i := range 3 {
			want = append(want, fmt.Sprintf("sdk/list/sub/%d", i))
		}
		// Characters XML and URLs escape.
		want = append(want, "sdk/list/weird key+&<é>%.txt")
		slices.Sort(want)
		seedKeys(t, o, want, []byte("x"))
		var got []string
		pages := 0
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String("sdk/list/"), MaxKeys: aws.Int32(10)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("list page %d: %v", pages+1, err)
			}
			pages++
			for _, o := range page.Contents {
				got = append(got, aws.ToString(o.Key))
			}
		}
		if !slices.Equal(got, want) || pages != 3 {
			t.Fatalf("paginated list: %d keys in %d pages, want %d in 3:\n%v", len(got), pages, len(want), got)
		}
		// encoding-type=url: the SDK leaves keys encoded, as MinIO sent
		// them.
		var encoded []string
		for _, cl := range []*s3.Client{c, direct} {
			enc, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String("sdk/list/w"), EncodingType: types.EncodingTypeUrl})
			if err != nil || len(enc.Contents) != 1 {
				t.Fatalf("list with encoding-type=url: %v", err)
			}
			encoded = append(encoded, aws.ToString(enc.Contents[0].Key))
		}
		if dec, err := url.QueryUnescape(encoded[0]); err != nil || dec != "sdk/list/weird key+&<é>%.txt" || encoded[0] != encoded[1] {
			t.Fatalf("list with encoding-type=url: key %q through the sidecar, %q from MinIO", encoded[0], encoded[1])
		}
		d, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String("sdk/list/"),
			Delimiter: aws.String("/"), StartAfter: aws.String("sdk/list/020")})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Contents) != 5 || len(d.CommonPrefixes) != 1 || aws.ToString(d.CommonPrefixes[0].Prefix) != "sdk/list/sub/" {
			t.Fatalf("list with delimiter and start-after: %d keys, prefixes %v", len(d.Contents), d.CommonPrefixes)
		}
		v1, err := c.ListObjects(ctx, &s3.ListObjectsInput{Bucket: aws.String(testBucket), Prefix: aws.String("sdk/list/"),
			MaxKeys: aws.Int32(20), Marker: aws.String("sdk/list/010")})
		if err != nil {
			t.Fatal(err)
		}
		if len(v1.Contents) != 18 || aws.ToBool(v1.IsTruncated) {
			t.Fatalf("ListObjects (v1) after a marker: %d keys, truncated %v; want 18, false", len(v1.Contents), aws.ToBool(v1.IsTruncated))
		}
	})

	t.Run("Delete", func(t *testing.T) {
		for _, obj := range objects {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(testBucket), Key: aws.String(obj.key)}); err != nil {
				t.Fatalf("delete %s: %v", obj.name, err)
			}
			if _, err := o.client.StatObject(ctx, testBucket, obj.key, minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
				t.Fatalf("delete %s: still in MinIO (%v)", obj.name, err)
			}
			_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(obj.key)})
			var nf *types.NotFound
			if !errors.As(err, &nf) {
				t.Fatalf("head %s after delete: %v, want NotFound", obj.name, err)
			}
		}
		if _, err := sc.stored("packs", pack.crate, pack.key, ".tar.zst"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("deleted pack still in the store: %v", err)
		}
	})

	t.Run("DeleteObjects", func(t *testing.T) {
		// The multi-object delete that `aws s3 rm --recursive`, mc rm and
		// rclone send.
		keys := []string{"sdk/multi/a", "sdk/multi/b", "sdk/multi/c"}
		seedKeys(t, o, keys, []byte("x"))
		var ids []types.ObjectIdentifier
		for _, k := range keys[:2] {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
		}
		out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(testBucket), Delete: &types.Delete{Objects: ids}})
		if err != nil {
			t.Fatalf("DeleteObjects: %v", err)
		}
		if len(out.Deleted) != 2 || len(out.Errors) != 0 {
			t.Fatalf("DeleteObjects: %d deleted, errors %v", len(out.Deleted), out.Errors)
		}
		if got := minioKeys(t, o, testBucket, "sdk/multi/"); !slices.Equal(got, keys[2:]) {
			t.Fatalf("after DeleteObjects MinIO holds %v, want %v", got, keys[2:])
		}
	})

	big, bigKey := randomBytes(64<<20, 3), "sdk/multipart-64MiB.bin"
	bigParts := 0
	t.Run("Multipart64MiB", func(t *testing.T) {
		start := time.Now()
		//lint:ignore SA1019 the upload manager is what most SDK users still run; proving it works is the point
		up, err := manager.NewUploader(c).Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(bigKey), Body: bytes.NewReader(big)})
		if err != nil {
			t.Fatalf("upload manager: %v", err)
		}
		took := time.Since(start)
		if up.UploadID == "" || len(up.CompletedParts) < 2 {
			t.Fatalf("upload manager did not upload in parts: %+v", up)
		}
		bigParts = len(up.CompletedParts)
		_, info := minioStatHash(t, o, bigKey)
		if info.hash != sha256Hex(big) || !strings.HasSuffix(info.etag, fmt.Sprintf("-%d", bigParts)) {
			t.Fatalf("MinIO holds %s (ETag %s), want the %d-part upload of %s", info.hash, info.etag, bigParts, sha256Hex(big))
		}
		start = time.Now()
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(bigKey)})
		must(t, err)
		h := sha256.New()
		n, err := io.Copy(h, out.Body)
		out.Body.Close()
		must(t, err)
		if n != int64(len(big)) || hex.EncodeToString(h.Sum(nil)) != sha256Hex(big) {
			t.Fatalf("GET of the multipart object: %d bytes, not what was uploaded", n)
		}
		t.Logf("64 MiB: upload manager %d parts in %s, GET back in %s", bigParts, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		// The download manager's concurrent ranged GETs (each after the
		// first with If-Match).
		buf := manager.NewWriteAtBuffer(make([]byte, 0, len(big)))
		//lint:ignore SA1019 as for the upload manager
		n, err = manager.NewDownloader(c, func(d *manager.Downloader) { d.PartSize = 8 << 20 }).Download(ctx, buf,
			&s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(bigKey)})
		if err != nil || n != int64(len(big)) || sha256Hex(buf.Bytes()) != sha256Hex(big) {
			t.Fatalf("download manager: %d bytes, %v", n, err)
		}
	})

	t.Run("GetPart", func(t *testing.T) {
		// A GET of one part of a multipart object (partNumber, what
		// `mc cat --part-number` and part-wise downloaders send) is that
		// part's bytes with the part count, as MinIO answers it.
		if bigParts == 0 {
			t.Fatal("no multipart object (Multipart64MiB failed)")
		}
		partSize := int64(manager.DefaultUploadPartSize)
		for _, part := range []int32{1, 2} {
			want := big[int64(part-1)*partSize : int64(part)*partSize]
			for _, cl := range []struct {
				name string
				c    *s3.Client
			}{{"MinIO", direct}, {"the sidecar", c}} {
				b, out, err := sdkGetPart(ctx, cl.c, bigKey, part, partSize+1)
				if err != nil {
					t.Fatalf("GET part %d from %s: %v", part, cl.name, err)
				}
				if !bytes.Equal(b, want) || aws.ToInt64(out.ContentLength) != partSize || aws.ToInt32(out.PartsCount) != int32(bigParts) {
					t.Errorf("GET part %d from %s: Content-Length %d, the part's bytes first: %v, parts count %d; want the part's %d bytes, %d parts",
						part, cl.name, aws.ToInt64(out.ContentLength), bytes.HasPrefix(b, want), aws.ToInt32(out.PartsCount), len(want), bigParts)
				}
			}
		}
	})

	// Back to a known object for the rest.
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(objects[0].key), Body: bytes.NewReader(plain)})
	must(t, err)

	t.Run("ResponseOverrides", func(t *testing.T) {
		// response-content-type and friends (presigned download links
		// use them) replace the stored headers in the answer, as in S3.
		for _, cl := range []*s3.Client{direct, c} {
			out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(objects[0].key),
				ResponseContentType: aws.String("text/x-override"), ResponseContentDisposition: aws.String(`attachment; filename="x.bin"`)})
			must(t, err)
			out.Body.Close()
			if aws.ToString(out.ContentType) != "text/x-override" || aws.ToString(out.ContentDisposition) != `attachment; filename="x.bin"` {
				t.Errorf("GET with response-content-type and -disposition (MinIO first, then the sidecar): %q, %q",
					aws.ToString(out.ContentType), aws.ToString(out.ContentDisposition))
			}
		}
	})

	t.Run("PresignedGet", func(t *testing.T) {
		ps := s3.NewPresignClient(c)
		req, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(objects[0].key)}, s3.WithPresignExpires(5*time.Minute))
		must(t, err)
		status, body := plainGet(t, req.URL)
		if status != 200 || !bytes.Equal(body, plain) {
			t.Fatalf("presigned GET: status %d, %d bytes", status, len(body))
		}
		tampered := strings.Replace(req.URL, "X-Amz-Signature=", "X-Amz-Signature=0", 1)
		tampered = tampered[:len(tampered)-1]
		if status, body := plainGet(t, tampered); status != 403 || xmlCode(body) != "SignatureDoesNotMatch" {
			t.Fatalf("presigned GET with a wrong signature: %d %s", status, body)
		}
		// Signed two minutes ago, valid for one.
		hreq, _ := http.NewRequest(http.MethodGet, sc.endpoint+"/"+testBucket+"/"+escapeKey(objects[0].key)+"?X-Amz-Expires=60", nil)
		expired, _, err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).PresignHTTP(ctx,
			aws.Credentials{AccessKeyID: localAccessKey, SecretAccessKey: localSecretKey}, hreq, unsignedPayload, "s3", testenv.MinioRegion, time.Now().Add(-2*time.Minute))
		must(t, err)
		if status, body := plainGet(t, expired); status != 403 || xmlCode(body) != "AccessDenied" {
			t.Fatalf("expired presigned GET: %d %s", status, body)
		}
	})

	t.Run("WrongCredentials", func(t *testing.T) {
		for _, cr := range []struct{ name, ak, sk, code string }{
			{"unknown access key", "not-the-key", localSecretKey, "InvalidAccessKeyId"},
			{"wrong secret", localAccessKey, "not-the-secret", "SignatureDoesNotMatch"},
			{"MinIO's own credentials", testenv.MinioUser, testenv.MinioSecret, "InvalidAccessKeyId"},
		} {
			bad := sdkClient(t, sc.endpoint, cr.ak, cr.sk)
			if _, _, err := sdkGet(ctx, bad, testBucket, objects[0].key, ""); apiCode(err) != cr.code {
				t.Errorf("%s: get: %v, want %s", cr.name, err, cr.code)
			}
			if _, err := bad.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket)}); apiCode(err) != cr.code {
				t.Errorf("%s: list: %v, want %s", cr.name, err, cr.code)
			}
			key := "sdk/unauthorized/" + strings.ReplaceAll(cr.name, " ", "-")
			if _, err := bad.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: bytes.NewReader(plain[:1000])}); apiCode(err) != cr.code {
				t.Errorf("%s: put: %v, want %s", cr.name, err, cr.code)
			}
			if _, err := bad.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(testBucket), Key: aws.String(objects[0].key)}); apiCode(err) != cr.code {
				t.Errorf("%s: delete: %v, want %s", cr.name, err, cr.code)
			}
		}
		if keys := minioKeys(t, o, testBucket, "sdk/unauthorized/"); len(keys) != 0 {
			t.Errorf("unauthorized puts reached MinIO: %v", keys)
		}
		if got, _ := minioBytes(t, o, testBucket, objects[0].key); !bytes.Equal(got, plain) {
			t.Error("an unauthorized delete reached MinIO")
		}
	})

	t.Run("MissingKey", func(t *testing.T) {
		missing := newKacheEntry(t, "tokio", 9, 1024)
		for _, key := range []string{"sdk/no/such/key", missing.packKey(), missing.manifestKey()} {
			_, _, err := sdkGet(ctx, c, testBucket, key, "")
			var nsk *types.NoSuchKey
			if !errors.As(err, &nsk) {
				t.Errorf("get %s: %v, want NoSuchKey", key, err)
			}
			_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
			var nf *types.NotFound
			if !errors.As(err, &nf) {
				t.Errorf("head %s: %v, want NotFound", key, err)
			}
		}
	})

	t.Run("WrongBucket", func(t *testing.T) {
		// "other" exists in MinIO: the sidecar must not reach it.
		for _, b := range []string{"other", "no-such-bucket"} {
			if _, _, err := sdkGet(ctx, c, b, objects[0].key, ""); apiCode(err) != "NoSuchBucket" {
				t.Errorf("get from %s: %v, want NoSuchBucket", b, err)
			}
			if _, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(b)}); apiCode(err) != "NoSuchBucket" {
				t.Errorf("list %s: %v, want NoSuchBucket", b, err)
			}
			if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b), Key: aws.String("sdk/wrong-bucket"), Body: bytes.NewReader(plain[:100])}); apiCode(err) != "NoSuchBucket" {
				t.Errorf("put into %s: %v, want NoSuchBucket", b, err)
			}
			_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b)})
			var nf *types.NotFound
			if !errors.As(err, &nf) {
				t.Errorf("head bucket %s: %v, want NotFound", b, err)
			}
		}
		if keys := minioKeys(t, o, "other", ""); len(keys) != 0 {
			t.Errorf("writes for another bucket reached MinIO: %v", keys)
		}
		if keys := minioKeys(t, o, testBucket, "sdk/wrong-bucket"); len(keys) != 0 {
			t.Errorf("a put for another bucket landed in %s: %v", testBucket, keys)
		}
		if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(testBucket)}); err != nil {
			t.Errorf("head bucket %s: %v", testBucket, err)
		}
	})
}

type hashInfo struct{ hash, etag string }

// minioStatHash streams an object from MinIO into sha256.
func minioStatHash(t testing.TB, o *objectStore, key string) (int64, hashInfo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	obj, err := o.client.GetObject(ctx, testBucket, key, minio.GetObjectOptions{})
	must(t, err)
	defer obj.Close()
	st, err := obj.Stat()
	must(t, err)
	h := sha256.New()
	n, err := io.Copy(h, obj)
	must(t, err)
	return n, hashInfo{hash: hex.EncodeToString(h.Sum(nil)), etag: st.ETag}
}

// plainGet GETs a URL with no signing of its own.
func plainGet(t testing.TB, u string) (int, []byte) {
	t.Helper()
	resp, err := httpc.Get(u)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, b
}

// xmlCode is the Code of an S3 XML error body.
func xmlCode(body []byte) string {
	var e s3ErrorBody
	if xmlUnmarshal(body, &e) != nil {
		return ""
	}
	return e.Code
}

// TestS3SurfaceBadInput sends the binary what a hostile or broken client
// would: keys that climb out of a directory (.., %2F-encoded slashes,
// absolute paths, backslashes), a wrong bucket, a header section over
// 16 KiB, aws-chunked bodies that end early and PUTs whose Content-MD5 does
// not match. Each gets an S3 XML error (or, for a body cut off mid-stream,
// a closed connection), nothing is written under the store directory
// outside its objects/ tree, nothing half-written stays in it, and nothing
// reaches MinIO: the bucket holds exactly the control objects put alongside.
func TestS3SurfaceBadInput(t *testing.T) {
	o := startMinio(t)
	ctx := context.Background()
	must(t, o.client.MakeBucket(ctx, "other", minio.MakeBucketOptions{Region: testenv.MinioRegion}))
	sc := startS3Sidecar(t, o, "")
	k := newKacheS3(t, sc.endpoint, testBucket, localAccessKey, localSecretKey)
	before := filesOutsideObjects(t, sc.store)
	pack := newKacheEntry(t, "serde", 7, 64<<10)
	body := pack.pack
	sum := md5.Sum(body)
	goodMD5 := base64.StdEncoding.EncodeToString(sum[:])

	// send signs and sends one request to the raw path and returns status
	// and body.
	send := func(t *testing.T, method, rawPath string, payload []byte, hdr http.Header) (int, []byte, http.Header) {
		t.Helper()
		var r io.Reader
		if payload != nil {
			r = bytes.NewReader(payload)
		}
		req, err := k.newRequest(ctx, method, rawPath, nil, r, unsignedPayload, hdr)
		must(t, err)
		resp, err := k.http.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header
	}

	t.Run("TraversalKeys", func(t *testing.T) {
		for _, tc := range []struct {
			path   string
			status int
			code   string
		}{
			{"/kache/artifacts/v3/packs/serde/../../../../../../evil.tar.zst", 400, "InvalidArgument"},
			{"/kache/artifacts/v3/packs/serde/..%2F..%2F..%2F..%2F..%2Fevil.tar.zst", 400, "InvalidArgument"},
			{"/kache/artifacts/v3/packs/serde/%2e%2e/%2e%2e/%2e%2e/evil.tar.zst", 400, "InvalidArgument"},
			{"/kache/..%5C..%5Cevil", 400, "InvalidArgument"},
			{"/kache/%2Fetc%2Fevil", 400, "InvalidArgument"},
			{"/kache//etc/evil", 400, "InvalidArgument"},
			{"/kache/artifacts/v3/packs/serde/./" + pack.key + ".tar.zst", 400, "InvalidArgument"},
			{"/kache/artifacts%2Fv3%2Fpacks%2Fserde%2F" + pack.key + ".tar.zst", 400, "InvalidArgument"},
			{"/../kache/evil", 404, "NoSuchBucket"},
			{"/%2e%2e/kache/evil", 404, "NoSuchBucket"},
		} {
			for _, method := range []string{http.MethodPut, http.MethodGet, http.MethodHead, http.MethodDelete} {
				var payload []byte
				hdr := http.Header{}
				if method == http.MethodPut {
					payload = body
					hdr.Set("Content-MD5", goodMD5)
				}
				status, b, h := send(t, method, tc.path, payload, hdr)
				code := xmlCode(b)
				if method == http.MethodHead {
					code = tc.code // no body
				}
				if status != tc.status || code != tc.code || h.Get("x-amz-request-id") == "" {
					t.Errorf("%s %s: %d %q, want %d %s", method, tc.path, status, b, tc.status, tc.code)
				}
			}
		}
	})

	t.Run("WrongBucket", func(t *testing.T) {
		hdr := http.Header{"Content-Md5": {goodMD5}}
		for _, b := range []string{"other", "Kache", "kache.", "no-such-bucket"} {
			status, resp, _ := send(t, http.MethodPut, "/"+b+"/"+pack.packKey(), body, hdr)
			if status != 404 || xmlCode(resp) != "NoSuchBucket" {
				t.Errorf("PUT into %s: %d %s, want 404 NoSuchBucket", b, status, resp)
			}
			status, resp, _ = send(t, http.MethodGet, "/"+b+"/"+pack.packKey(), nil, nil)
			if status != 404 || xmlCode(resp) != "NoSuchBucket" {
				t.Errorf("GET from %s: %d %s, want 404 NoSuchBucket", b, status, resp)
			}
		}
	})

	t.Run("ClockSkew", func(t *testing.T) {
		for _, skew := range []time.Duration{-20 * time.Minute, 20 * time.Minute} {
			req, err := http.NewRequest(http.MethodPut, sc.endpoint+k.objectPath("bad-input/skewed.bin"), bytes.NewReader(body))
			must(t, err)
			req.Header.Set("x-amz-content-sha256", sha256Hex(body))
			must(t, k.signer.SignHTTP(ctx, k.creds, req, sha256Hex(body), "s3", k.region, time.Now().Add(skew)))
			resp, err := k.http.Do(req)
			must(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 403 || xmlCode(b) != "RequestTimeTooSkewed" {
				t.Errorf("PUT signed %s off: %d %s, want 403 RequestTimeTooSkewed", skew, resp.StatusCode, b)
			}
		}
	})

	t.Run("OversizedHeaders", func(t *testing.T) {
		// Just under the limit is served (a 404 for a missing key)...
		status, resp, _ := send(t, http.MethodGet, "/kache/bad-input/missing", nil, http.Header{"X-Pad": {strings.Repeat("a", 12<<10)}})
		if status != 404 || xmlCode(resp) != "NoSuchKey" {
			t.Fatalf("GET with 12 KiB of headers: %d %s, want 404 NoSuchKey", status, resp)
		}
		// ...over it is refused, for a GET and for a PUT with its body.
		for _, tc := range []struct {
			method string
			body   []byte
		}{{http.MethodGet, nil}, {http.MethodPut, body}} {
			req := fmt.Sprintf("%s /kache/%s HTTP/1.1\r\nHost: %s\r\nX-Pad: %s\r\nContent-Length: %d\r\n\r\n",
				tc.method, pack.packKey(), sc.s3, strings.Repeat("b", 20<<10), len(tc.body))
			status, resp, err := rawExchange(sc.s3, append([]byte(req), tc.body...), len(req)+len(tc.body))
			if err != nil || status != 431 || xmlCode(resp) == "" {
				t.Errorf("%s with 20 KiB of headers: %d %q %v, want 431 with an S3 error", tc.method, status, resp, err)
			}
		}
	})

	t.Run("TruncatedChunkedBody", func(t *testing.T) {
		// The encoders are right: complete bodies are accepted.
		ctlSigned := chunkedPut(t, k, "ctl/chunked-signed.bin", body, 16<<10, true)
		if status, resp, err := rawExchange(sc.s3, ctlSigned.wire, len(ctlSigned.wire)); err != nil || status != 200 {
			t.Fatalf("complete signed aws-chunked PUT: %d %s %v", status, resp, err)
		}
		ctlTrailer := chunkedPut(t, k, "ctl/chunked-trailer.bin", body, 16<<10, false)
		if status, resp, err := rawExchange(sc.s3, ctlTrailer.wire, len(ctlTrailer.wire)); err != nil || status != 200 {
			t.Fatalf("complete unsigned-trailer aws-chunked PUT: %d %s %v", status, resp, err)
		}
		for _, signed := range []bool{true, false} {
			name := map[bool]string{true: "signed chunks", false: "unsigned chunks, trailing checksum"}[signed]
			put := chunkedPut(t, k, pack.packKey(), body, 16<<10, signed)
			// The connection ends (write side closed) after half the body
			// Content-Length announced: an error or a closed connection,
			// never a hang or a 200.
			half := put.headerLen + (len(put.wire)-put.headerLen)/2
			status, resp, err := rawExchange(sc.s3, put.wire[:half], half)
			if status == 200 || (err == nil && (status/100 != 4 || xmlCode(resp) == "")) {
				t.Errorf("%s, connection closed mid-body: %d %q %v", name, status, resp, err)
			}
			if err != nil && os.IsTimeout(err) {
				t.Errorf("%s, connection closed mid-body: the sidecar did not answer or close: %v", name, err)
			}
			// Complete HTTP framing (Content-Length is what is sent) whose
			// aws-chunked stream stops inside a chunk: an S3 error.
			cut := put.headerLen + (len(put.wire)-put.headerLen)/2
			framed := withContentLength(put.wire[:cut], put.headerLen, cut-put.headerLen)
			status, resp, err = rawExchange(sc.s3, framed, len(framed))
			if err != nil || status != 400 || xmlCode(resp) == "" {
				t.Errorf("%s, stream cut inside a chunk: %d %q %v, want 400 with an S3 error", name, status, resp, err)
			}
			// The final chunk is missing.
			end := bytes.LastIndex(put.wire, []byte("0;chunk-signature="))
			if !signed {
				end = bytes.LastIndex(put.wire, []byte("\r\n0\r\n")) + 2
			}
			framed = withContentLength(put.wire[:end], put.headerLen, end-put.headerLen)
			status, resp, err = rawExchange(sc.s3, framed, len(framed))
			if err != nil || status != 400 || xmlCode(resp) == "" {
				t.Errorf("%s, no final chunk: %d %q %v, want 400 with an S3 error", name, status, resp, err)
			}
		}
	})

	t.Run("ContentMD5Mismatch", func(t *testing.T) {
		other := md5.Sum([]byte("something else"))
		for _, tc := range []struct{ name, md5, code string }{
			{"other body's MD5", base64.StdEncoding.EncodeToString(other[:]), "BadDigest"},
			{"malformed MD5", "not-base64!", "InvalidDigest"},
			{"truncated MD5", goodMD5[:8], "InvalidDigest"},
		} {
			for _, key := range []string{pack.packKey(), "bad-input/plain.bin"} {
				status, resp, _ := send(t, http.MethodPut, k.objectPath(key), body, http.Header{"Content-Md5": {tc.md5}})
				if status != 400 || xmlCode(resp) != tc.code {
					t.Errorf("PUT %s with %s: %d %s, want 400 %s", key, tc.name, status, resp, tc.code)
				}
			}
		}
		// Control: the right MD5 is accepted.
		if err := k.Put(ctx, "ctl/md5.bin", body, ""); err != nil {
			t.Fatalf("PUT with the right Content-MD5: %v", err)
		}
	})

	// Nothing reached MinIO but the controls, nothing escaped or stayed
	// half-written in the store, and the sidecar still serves.
	keys := minioKeys(t, o, testBucket, "")
	slices.Sort(keys)
	if want := []string{"ctl/chunked-signed.bin", "ctl/chunked-trailer.bin", "ctl/md5.bin"}; !slices.Equal(keys, want) {
		t.Errorf("MinIO holds %v, want only the controls %v", keys, want)
	}
	for _, key := range []string{"ctl/chunked-signed.bin", "ctl/chunked-trailer.bin", "ctl/md5.bin"} {
		if got, _ := minioBytes(t, o, testBucket, key); !bytes.Equal(got, body) {
			t.Errorf("%s: MinIO holds %d bytes, want the %d sent", key, len(got), len(body))
		}
	}
	if keys := minioKeys(t, o, "other", ""); len(keys) != 0 {
		t.Errorf("bucket other holds %v", keys)
	}
	for up := range o.client.ListIncompleteUploads(ctx, testBucket, "", true) {
		t.Errorf("incomplete upload left in MinIO: %+v", up)
	}
	entries, err := os.ReadDir(sc.parent)
	must(t, err)
	if len(entries) != 1 || entries[0].Name() != "store" {
		t.Errorf("the store's parent directory holds %v", entries)
	}
	if after := filesOutsideObjects(t, sc.store); !slices.Equal(after, before) {
		t.Errorf("files outside the store's objects/ tree changed:\nbefore %v\nafter  %v", before, after)
	}
	var objects []string
	filepath.WalkDir(filepath.Join(sc.store, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects = append(objects, p)
		}
		return nil
	})
	if len(objects) != 0 {
		t.Errorf("refused uploads left files in the store: %v", objects)
	}
	if _, err := k.Get(ctx, "ctl/md5.bin"); err != nil || sc.p.Exited() {
		t.Errorf("the sidecar no longer serves after the bad input: %v", err)
	}
	if recs := sc.logRecords(t, "s3 request failed"); len(recs) > 0 {
		for _, r := range recs {
			if r["level"] == "ERROR" {
				t.Errorf("bad input logged as an internal error: %v", r)
			}
		}
	}
}

// filesOutsideObjects lists the store directory's files outside objects/
// and hints/ (the hint database's own files change as it works).
func filesOutsideObjects(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && (rel == "objects" || rel == "hints") {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			out = append(out, rel)
		}
		return nil
	})
	must(t, err)
	slices.Sort(out)
	return out
}

// rawExchange writes req on a new connection, closes the write side, and
// reads one response: its status and body. A connection the server closed
// or reset without an answer is an error.
func rawExchange(addr string, req []byte, n int) (int, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(req[:n]); err != nil {
		return 0, nil, fmt.Errorf("write: %w", err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// withContentLength rewrites the Content-Length of a raw request whose
// header section is the first headerLen bytes.
func withContentLength(raw []byte, headerLen, n int) []byte {
	head := string(raw[:headerLen])
	var lines []string
	for _, l := range strings.Split(head, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "content-length:") {
			l = "Content-Length: " + strconv.Itoa(n)
		}
		lines = append(lines, l)
	}
	out := []byte(strings.Join(lines, "\r\n"))
	return append(out, raw[headerLen:]...)
}

// rawPut is an aws-chunked PUT serialised for the wire: headers, then the
// encoded body.
type rawPut struct {
	wire      []byte
	headerLen int
}

// chunkedPut encodes a PUT of body as aws-chunked in chunks of size bytes:
// signed (STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each chunk signed in the
// chain started by the request's signature) or unsigned with a trailing
// CRC32 (STREAMING-UNSIGNED-PAYLOAD-TRAILER, what current AWS SDKs send).
func chunkedPut(t testing.TB, k *kacheS3, key string, body []byte, size int, signed bool) rawPut {
	t.Helper()
	payload := "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	hdr := http.Header{
		"Content-Encoding":             {"aws-chunked"},
		"X-Amz-Decoded-Content-Length": {strconv.Itoa(len(body))},
	}
	if signed {
		payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	} else {
		hdr.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
	}
	req, err := k.newRequest(context.Background(), http.MethodPut, k.objectPath(key), nil, nil, payload, hdr)
	must(t, err)
	var enc bytes.Buffer
	chunks := [][]byte{}
	for off := 0; off < len(body); off += size {
		chunks = append(chunks, body[off:min(off+size, len(body))])
	}
	chunks = append(chunks, nil)
	if signed {
		amzDate := req.Header.Get("X-Amz-Date")
		scope := amzDate[:8] + "/" + k.region + "/s3/aws4_request"
		key := signingKey(k.creds.SecretAccessKey, amzDate[:8], k.region)
		_, prev, _ := strings.Cut(req.Header.Get("Authorization"), "Signature=")
		empty := sha256Hex(nil)
		for _, c := range chunks {
			sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + amzDate + "\n" + scope + "\n" + prev + "\n" + empty + "\n" + sha256Hex(c)
			prev = hex.EncodeToString(hmacSHA256(key, sts))
			fmt.Fprintf(&enc, "%x;chunk-signature=%s\r\n", len(c), prev)
			enc.Write(c)
			enc.WriteString("\r\n")
		}
	} else {
		for _, c := range chunks[:len(chunks)-1] {
			fmt.Fprintf(&enc, "%x\r\n", len(c))
			enc.Write(c)
			enc.WriteString("\r\n")
		}
		crc := crc32Sum(body)
		fmt.Fprintf(&enc, "0\r\nx-amz-checksum-crc32:%s\r\n\r\n", base64.StdEncoding.EncodeToString(crc))
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "PUT %s HTTP/1.1\r\nHost: %s\r\n", req.URL.Opaque, req.URL.Host)
	for name, vs := range req.Header {
		for _, v := range vs {
			fmt.Fprintf(&head, "%s: %s\r\n", name, v)
		}
	}
	fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", enc.Len())
	return rawPut{wire: append(head.Bytes(), enc.Bytes()...), headerLen: head.Len()}
}

func xmlUnmarshal(b []byte, v any) error { return xml.Unmarshal(b, v) }

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signingKey derives SigV4's signing key for S3 on date (YYYYMMDD).
func signingKey(secret, date, region string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, "s3")
	return hmacSHA256(k, "aws4_request")
}

func crc32Sum(b []byte) []byte {
	return binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(b))
}
