//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/zeebo/blake3"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// unsignedPayload is what OpenDAL (kache's S3 layer) signs as the payload:
// the body is not part of the signature, Content-MD5 guards it instead.
const unsignedPayload = "UNSIGNED-PAYLOAD"

// kacheS3 is a small S3 client that behaves as kache's does
// (kache-protocol.md 4.6): plain HTTP requests signed with SigV4, path-style
// URLs, Content-MD5 on PUT, HEAD for existence checks, whole-object GETs and
// recursive ListObjectsV2 with continuation tokens. No retries.
type kacheS3 struct {
	endpoint string // http://host:port
	bucket   string
	region   string
	creds    aws.Credentials
	signer   *v4.Signer
	http     *http.Client
}

func newKacheS3(t testing.TB, endpoint, bucket, accessKey, secretKey string) *kacheS3 {
	t.Helper()
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 3100 * time.Millisecond}).DialContext, // kache's connect timeout
		MaxIdleConnsPerHost:   16,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &kacheS3{
		endpoint: endpoint, bucket: bucket, region: testenv.MinioRegion,
		creds:  aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey},
		signer: v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }),
		http:   &http.Client{Transport: tr, Timeout: 2 * time.Minute},
	}
}

// escapeKey percent-encodes an object key for a path-style URL as SigV4
// canonicalises it: unreserved characters and '/' stay, the rest is %XX.
func escapeKey(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~', c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// newRequest builds a request for rawPath (sent exactly as given, after the
// host) signed over payloadHash, which is also sent as
// x-amz-content-sha256. body may be nil.
func (k *kacheS3) newRequest(ctx context.Context, method, rawPath string, query url.Values, body io.Reader, payloadHash string, hdr http.Header) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, k.endpoint, body)
	if err != nil {
		return nil, err
	}
	req.URL.Opaque = rawPath // sent as is: no cleaning, no re-escaping
	req.URL.RawQuery = query.Encode()
	for name, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(name, v)
		}
	}
	req.Header.Set("x-amz-content-sha256", payloadHash)
	if err := k.signer.SignHTTP(ctx, k.creds, req, payloadHash, "s3", k.region, time.Now()); err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return req, nil
}

func (k *kacheS3) objectPath(key string) string { return "/" + k.bucket + "/" + escapeKey(key) }

// s3ErrorBody is S3's XML error document.
type s3ErrorBody struct {
	XMLName    xml.Name `xml:"Error"`
	Code       string   `xml:"Code"`
	Message    string   `xml:"Message"`
	Key        string   `xml:"Key"`
	BucketName string   `xml:"BucketName"`
	RequestID  string   `xml:"RequestId"`
}

// s3StatusError is a non-2xx answer.
type s3StatusError struct {
	Status int
	Code   string
	Body   string
}

func (e *s3StatusError) Error() string {
	return fmt.Sprintf("status %d %s: %s", e.Status, e.Code, e.Body)
}

// statusErr reads a failed response into an s3StatusError.
func statusErr(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e s3ErrorBody
	_ = xml.Unmarshal(b, &e)
	return &s3StatusError{Status: resp.StatusCode, Code: e.Code, Body: string(b)}
}

func (k *kacheS3) send(req *http.Request) (*http.Response, error) {
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, statusErr(resp)
	}
	return resp, nil
}

// Put uploads body with its Content-MD5, as OpenDAL does with
// checksum_algorithm md5; contentType may be empty (packs carry none).
func (k *kacheS3) Put(ctx context.Context, key string, body []byte, contentType string) error {
	sum := md5.Sum(body)
	hdr := http.Header{"Content-Md5": {base64.StdEncoding.EncodeToString(sum[:])}}
	if contentType != "" {
		hdr.Set("Content-Type", contentType)
	}
	req, err := k.newRequest(ctx, http.MethodPut, k.objectPath(key), nil, bytes.NewReader(body), unsignedPayload, hdr)
	if err != nil {
		return err
	}
	resp, err := k.send(req)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// Exists is kache's HEAD existence check: 404 is a clean "no".
func (k *kacheS3) Exists(ctx context.Context, key string) (bool, error) {
	req, err := k.newRequest(ctx, http.MethodHead, k.objectPath(key), nil, nil, unsignedPayload, nil)
	if err != nil {
		return false, err
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("head %s: status %d", key, resp.StatusCode)
}

// Get reads a whole object; a body shorter than its Content-Length is an
// error (net/http reports it as io.ErrUnexpectedEOF).
func (k *kacheS3) Get(ctx context.Context, key string) ([]byte, error) {
	req, err := k.newRequest(ctx, http.MethodGet, k.objectPath(key), nil, nil, unsignedPayload, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.send(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, fmt.Errorf("get %s: %d bytes, Content-Length %d", key, len(b), resp.ContentLength)
	}
	return b, nil
}

type listV2Result struct {
	IsTruncated           bool   `xml:"IsTruncated"`
	NextContinuationToken string `xml:"NextContinuationToken"`
	KeyCount              int    `xml:"KeyCount"`
	Contents              []struct {
		Key  string `xml:"Key"`
		Size int64  `xml:"Size"`
	} `xml:"Contents"`
}

// List is kache's recursive LIST (no delimiter) of prefix: every key, the
// number of pages it took, and an error on a duplicate key (a continuation
// token that went back).
func (k *kacheS3) List(ctx context.Context, prefix string) ([]string, int, error) {
	var keys []string
	seen := map[string]bool{}
	token := ""
	for pages := 1; ; pages++ {
		q := url.Values{"list-type": {"2"}, "prefix": {prefix}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		req, err := k.newRequest(ctx, http.MethodGet, "/"+k.bucket, q, nil, unsignedPayload, nil)
		if err != nil {
			return nil, pages, err
		}
		resp, err := k.send(req)
		if err != nil {
			return nil, pages, fmt.Errorf("list %s: %w", prefix, err)
		}
		var page listV2Result
		err = xml.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, pages, fmt.Errorf("list %s: decode: %w", prefix, err)
		}
		if page.KeyCount != len(page.Contents) {
			return nil, pages, fmt.Errorf("list %s: KeyCount %d for %d keys", prefix, page.KeyCount, len(page.Contents))
		}
		for _, c := range page.Contents {
			if seen[c.Key] {
				return nil, pages, fmt.Errorf("list %s: duplicate key %s on page %d", prefix, c.Key, pages)
			}
			seen[c.Key] = true
			keys = append(keys, c.Key)
		}
		if !page.IsTruncated {
			return keys, pages, nil
		}
		if page.NextContinuationToken == "" || page.NextContinuationToken == token {
			return nil, pages, fmt.Errorf("list %s: truncated page %d without a new continuation token", prefix, pages)
		}
		token = page.NextContinuationToken
	}
}

// entryMeta is a pack's meta.json (kache-protocol.md 4.2).
type entryMeta struct {
	CacheKey      string     `json:"cache_key"`
	KeySchema     uint32     `json:"key_schema"`
	CrateName     string     `json:"crate_name"`
	CrateTypes    []string   `json:"crate_types"`
	Files         []metaFile `json:"files"`
	Stdout        string     `json:"stdout"`
	Stderr        string     `json:"stderr"`
	Features      []string   `json:"features"`
	Target        string     `json:"target"`
	Profile       string     `json:"profile"`
	CompileTimeMs uint64     `json:"compile_time_ms"`
	EmitKinds     []string   `json:"emit_kinds"`
}

type metaFile struct {
	Name       string `json:"name"`
	Size       uint64 `json:"size"`
	Hash       string `json:"hash"`
	Executable bool   `json:"executable"`
}

// kacheEntry is one cache entry as kache uploads it: the pack and its entry
// manifest.
type kacheEntry struct {
	crate, key string
	pack       []byte
	manifest   []byte // compact JSON
	original   uint64
	compileMs  uint64
}

// newKacheEntry builds a real pack for crate: a single zstd frame (level 3)
// around a tar holding meta.json first, then an rlib and an rmeta whose
// content is seeded by seed (size bytes of partly compressible data).
func newKacheEntry(t testing.TB, crate string, seed uint64, size int) kacheEntry {
	t.Helper()
	sum := blake3.Sum256(fmt.Appendf(nil, "%s/%d", crate, seed))
	e, err := makeKacheEntry(crate, hex.EncodeToString(sum[:]), seed, size, 100+seed*37)
	must(t, err)
	return e
}

// makeKacheEntry is newKacheEntry for a given cache key and compile time,
// safe to call from any goroutine.
func makeKacheEntry(crate, key string, seed uint64, size int, compileMs uint64) (kacheEntry, error) {
	e := kacheEntry{crate: crate, key: key, compileMs: compileMs}
	// Random pages with every other page repetitive: half of it
	// compresses, as real artifacts partly do.
	rlib := randomBytes(size, seed)
	page := bytes.Repeat([]byte(crate), 4096/len(crate)+1)[:4096]
	for off := 4096; off < len(rlib); off += 8192 {
		copy(rlib[off:min(off+4096, len(rlib))], page)
	}
	files := []struct {
		name string
		data []byte
	}{
		{"lib" + crate + "-" + e.key[:16] + ".rlib", rlib},
		{"lib" + crate + "-" + e.key[:16] + ".rmeta", rlib[:min(len(rlib), 4096)]},
	}
	meta := entryMeta{CacheKey: e.key, CrateName: crate, CrateTypes: []string{"lib"}, Features: []string{"default"},
		Target: "x86_64-unknown-linux-gnu", Profile: "debug", CompileTimeMs: e.compileMs, EmitKinds: []string{"link", "metadata"}}
	for _, f := range files {
		h := blake3.Sum256(f.data)
		meta.Files = append(meta.Files, metaFile{Name: f.name, Size: uint64(len(f.data)), Hash: hex.EncodeToString(h[:])})
		e.original += uint64(len(f.data))
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return e, err
	}
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return e, err
	}
	tw := tar.NewWriter(zw)
	for _, f := range append([]struct {
		name string
		data []byte
	}{{"meta.json", metaJSON}}, files...) {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			return e, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return e, err
		}
	}
	if err := tw.Close(); err != nil {
		return e, err
	}
	if err := zw.Close(); err != nil {
		return e, err
	}
	e.pack = out.Bytes()
	e.manifest, err = json.Marshal(wire.EntryManifest{Version: 3, CacheKey: e.key, CrateName: crate,
		PackKey: layout.PackKey("artifacts", crate, e.key), PackBytes: uint64(len(e.pack)), OriginalBytes: e.original, FileCount: uint64(len(files))})
	return e, err
}

func (e kacheEntry) packKey() string     { return layout.PackKey("artifacts", e.crate, e.key) }
func (e kacheEntry) manifestKey() string { return layout.EntryManifestKey("artifacts", e.crate, e.key) }

// checkPack decodes a pack as kache's restore does: one zstd frame, a tar
// whose first entry is meta.json naming key, every listed file present with
// its blake3 hash.
func checkPack(pack []byte, crate, key string) error {
	zr, err := zstd.NewReader(bytes.NewReader(pack), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil || h.Name != "meta.json" {
		return fmt.Errorf("first tar entry: %v %v", h, err)
	}
	var meta entryMeta
	if err := json.NewDecoder(tr).Decode(&meta); err != nil {
		return fmt.Errorf("meta.json: %w", err)
	}
	if meta.CacheKey != key || meta.CrateName != crate {
		return fmt.Errorf("meta.json names %s/%s, want %s/%s", meta.CrateName, meta.CacheKey, crate, key)
	}
	want := map[string]string{}
	for _, f := range meta.Files {
		want[f.Name] = f.Hash
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		sum := blake3.Sum256(data)
		if want[h.Name] != hex.EncodeToString(sum[:]) {
			return fmt.Errorf("%s: hash does not match meta.json", h.Name)
		}
		delete(want, h.Name)
	}
	if len(want) > 0 {
		return fmt.Errorf("files missing from the pack: %v", want)
	}
	return nil
}

// uploadEntry is kache's upload order: the pack, then its entry manifest.
func (k *kacheS3) uploadEntry(ctx context.Context, e kacheEntry) error {
	if err := k.Put(ctx, e.packKey(), e.pack, ""); err != nil {
		return err
	}
	return k.Put(ctx, e.manifestKey(), e.manifest, "application/json")
}

// minioBytes reads an object straight from MinIO.
func minioBytes(t testing.TB, o *objectStore, bucket, key string) ([]byte, minio.ObjectInfo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	obj, err := o.client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("minio get %s: %v", key, err)
	}
	defer obj.Close()
	info, err := obj.Stat()
	if err != nil {
		t.Fatalf("minio stat %s: %v", key, err)
	}
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("minio read %s: %v", key, err)
	}
	return b, info
}

// kacheCrates are the crates of the kache client tests: package name (as
// in Cargo.lock) and the crate name of the object layout.
var kacheCrates = []struct{ pkg, crate string }{
	{"proc-macro2", "proc_macro2"},
	{"unicode-ident", "unicode_ident"},
	{"quote", "quote"},
	{"syn", "syn"},
	{"serde", "serde"},
	{"serde_json", "serde_json"},
}

// kacheLock is a Cargo.lock of kacheCrates plus the workspace crate.
func kacheLock() string {
	var b strings.Builder
	b.WriteString("version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [")
	for i, c := range kacheCrates {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", c.pkg)
	}
	b.WriteString("]\n")
	for _, c := range kacheCrates {
		fmt.Fprintf(&b, "\n[[package]]\nname = %q\nversion = \"1.0.%d\"\n", c.pkg, len(c.pkg))
	}
	return b.String()
}

func kacheLockDeps() []wire.LockDep {
	deps := []wire.LockDep{{Name: "app", Version: "0.1.0"}}
	for _, c := range kacheCrates {
		deps = append(deps, wire.LockDep{Name: c.pkg, Version: fmt.Sprintf("1.0.%d", len(c.pkg))})
	}
	return deps
}

// buildManifestOf is the build manifest `kache save-manifest` uploads for
// entries (pretty JSON).
func buildManifestOf(entries []kacheEntry) []byte {
	m := wire.BuildManifest{Version: 3, Created: time.Now().UTC().Format(time.RFC3339Nano), ManifestKey: "x86_64-unknown-linux-gnu"}
	for _, e := range entries {
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: e.key, CrateName: e.crate, CompileTimeMs: e.compileMs, ArtifactSize: uint64(len(e.pack))})
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return b
}

// shardObjectsOf are the shard objects kache's upload_shards writes for the
// lock's deps: key and pretty JSON body, empty shards left out.
func shardObjectsOf(ns string, deps []wire.LockDep, entries []kacheEntry) map[string][]byte {
	byCrate := map[string]kacheEntry{}
	for _, e := range entries {
		byCrate[e.crate] = e
	}
	out := map[string][]byte{}
	for _, sh := range layout.Shards(deps) {
		so := wire.ShardObject{Version: 3}
		for _, d := range sh.Deps {
			e, ok := byCrate[strings.ReplaceAll(d.Name, "-", "_")]
			if !ok {
				continue
			}
			ms, size := e.compileMs, uint64(len(e.pack))
			so.Entries = append(so.Entries, wire.ShardEntry{CacheKey: e.key, CrateName: e.crate, CompileTimeMs: &ms, ArtifactSize: &size})
		}
		if len(so.Entries) == 0 {
			continue
		}
		b, _ := json.MarshalIndent(so, "", "  ")
		out[layout.ShardObjectKey("artifacts", ns, sh.Hash)] = b
	}
	return out
}

// TestS3SurfaceKacheClient: a client that talks S3 as kache does uploads
// real packs, their entry manifests, a build manifest and the namespace's
// shards through the sidecar. Every object lands in MinIO byte for byte (and
// packs and entry manifests in the sidecar's store too); HEAD existence
// checks answer yes and no; the recursive LIST of v3/manifests/ over more
// than a page follows continuation tokens with no key twice; GETs of the
// packs are local hits that decode as kache's restore would; concurrent
// GETs of a pack only the bucket holds share one download, then kept.
func TestS3SurfaceKacheClient(t *testing.T) {
	o := startMinio(t)
	sc := startS3Sidecar(t, o, "")
	k := newKacheS3(t, sc.endpoint, testBucket, localAccessKey, localSecretKey)
	ctx := context.Background()
	const ns = "ci-main"

	var entries []kacheEntry
	for i, c := range kacheCrates {
		entries = append(entries, newKacheEntry(t, c.crate, uint64(i+1), (64+i*96)<<10))
	}
	for _, e := range entries {
		must(t, k.uploadEntry(ctx, e))
	}
	bm := buildManifestOf(entries)
	bmKey := layout.BuildManifestKey("artifacts", "x86_64-unknown-linux-gnu")
	must(t, k.Put(ctx, bmKey, bm, "application/json"))
	shards := shardObjectsOf(ns, kacheLockDeps(), entries)
	for key, body := range shards {
		must(t, k.Put(ctx, key, body, "application/json"))
	}

	// What kache wrote is in the bucket, byte for byte, with its content
	// type; packs and entry manifests are also kept locally.
	for _, e := range entries {
		got, _ := minioBytes(t, o, testBucket, e.packKey())
		if !bytes.Equal(got, e.pack) {
			t.Fatalf("%s: MinIO holds %d bytes, the client put %d", e.packKey(), len(got), len(e.pack))
		}
		got, info := minioBytes(t, o, testBucket, e.manifestKey())
		if !bytes.Equal(got, e.manifest) || info.ContentType != "application/json" {
			t.Fatalf("%s: MinIO holds %q (%s), want %q", e.manifestKey(), got, info.ContentType, e.manifest)
		}
		if local, err := sc.stored("packs", e.crate, e.key, ".tar.zst"); err != nil || !bytes.Equal(local, e.pack) {
			t.Fatalf("%s: not kept in the store byte for byte: %v", e.packKey(), err)
		}
		if local, err := sc.stored("manifests", e.crate, e.key, ".json"); err != nil || !bytes.Equal(local, e.manifest) {
			t.Fatalf("%s: not kept in the store byte for byte: %v", e.manifestKey(), err)
		}
	}
	if got, info := minioBytes(t, o, testBucket, bmKey); !bytes.Equal(got, bm) || info.ContentType != "application/json" {
		t.Fatalf("build manifest in MinIO: %q (%s)", got, info.ContentType)
	}
	for key, body := range shards {
		if got, _ := minioBytes(t, o, testBucket, key); !bytes.Equal(got, body) {
			t.Fatalf("shard %s in MinIO: %q", key, got)
		}
	}

	// HEAD existence checks.
	for _, e := range entries {
		if ok, err := k.Exists(ctx, e.manifestKey()); err != nil || !ok {
			t.Fatalf("HEAD %s: %v %v, want it to exist", e.manifestKey(), ok, err)
		}
	}
	absent := layout.EntryManifestKey("artifacts", "serde", strings.Repeat("ab", 32))
	if ok, err := k.Exists(ctx, absent); err != nil || ok {
		t.Fatalf("HEAD %s: %v %v, want a clean 404", absent, ok, err)
	}

	// The key cache LIST, over more than one page: entry manifests of
	// other builds seeded straight into MinIO.
	filler := make([]string, 0, 1100)
	for i := range cap(filler) {
		filler = append(filler, layout.EntryManifestKey("artifacts", fmt.Sprintf("filler_%d", i%7), fmt.Sprintf("%064x", i+1)))
	}
	seedKeys(t, o, filler, []byte(`{"version":3}`))
	keys, pages, err := k.List(ctx, layout.EntryManifestsPrefix("artifacts"))
	must(t, err)
	if len(keys) != len(filler)+len(entries) || pages < 2 {
		t.Fatalf("LIST of v3/manifests/: %d keys in %d pages, want %d keys over at least 2 pages", len(keys), pages, len(filler)+len(entries))
	}
	for _, key := range keys {
		if _, _, ok := layout.ParseEntryManifestKey("artifacts", key); !ok {
			t.Fatalf("LIST returned %q, not an entry manifest key", key)
		}
	}
	crateKeys, _, err := k.List(ctx, layout.EntryManifestsPrefix("artifacts")+"serde/")
	must(t, err)
	if len(crateKeys) != 1 || crateKeys[0] != entries[4].manifestKey() {
		t.Fatalf("LIST of v3/manifests/serde/: %v", crateKeys)
	}
	t.Logf("LIST of v3/manifests/: %d keys in %d pages", len(keys), pages)

	// Restores: GETs of the packs come from the store.
	local0, up0 := sc.reads(t)
	for _, e := range entries {
		got, err := k.Get(ctx, e.packKey())
		must(t, err)
		if !bytes.Equal(got, e.pack) {
			t.Fatalf("GET %s: %d bytes differ from the %d put", e.packKey(), len(got), len(e.pack))
		}
		if err := checkPack(got, e.crate, e.key); err != nil {
			t.Fatalf("GET %s: %v", e.packKey(), err)
		}
	}
	local1, up1 := sc.reads(t)
	if local1-local0 != float64(len(entries)) || up1 != up0 {
		t.Fatalf("pack GETs: %v local and %v upstream reads, want %d local and none upstream", local1-local0, up1-up0, len(entries))
	}
	// A restore of a pack only the bucket has: concurrent GETs share one
	// download, which the store then keeps.
	cold := newKacheEntry(t, "tokio", 77, 1<<20)
	_, err = o.client.PutObject(ctx, testBucket, cold.packKey(), bytes.NewReader(cold.pack), int64(len(cold.pack)), minio.PutObjectOptions{})
	must(t, err)
	received0 := sc.metricValue(t, "kache_sidecar_prefetch_received_bytes_total")
	fetched0 := sc.metricValue(t, `kache_sidecar_demand_requests_total{result="fetched"}`)
	const readers = 8
	errs := make(chan error, readers)
	for range readers {
		go func() {
			got, err := k.Get(ctx, cold.packKey())
			if err == nil && !bytes.Equal(got, cold.pack) {
				err = fmt.Errorf("GET %s: %d bytes differ from the bucket's", cold.packKey(), len(got))
			}
			errs <- err
		}()
	}
	for range readers {
		must(t, <-errs)
	}
	if got := sc.metricValue(t, "kache_sidecar_prefetch_received_bytes_total") - received0; got != float64(len(cold.pack)) {
		t.Errorf("%d concurrent GETs of a cold pack received %v bytes from the bucket, want one download of %d", readers, got, len(cold.pack))
	}
	if got := sc.metricValue(t, `kache_sidecar_demand_requests_total{result="fetched"}`) - fetched0; got != 1 {
		t.Errorf("%d concurrent GETs of a cold pack fetched it %v times, want once", readers, got)
	}
	if local, err := sc.stored("packs", cold.crate, cold.key, ".tar.zst"); err != nil || !bytes.Equal(local, cold.pack) {
		t.Errorf("cold pack not kept in the store after its read-through: %v", err)
	}

	// Build manifest and shards read back through the sidecar.
	if got, err := k.Get(ctx, bmKey); err != nil || !bytes.Equal(got, bm) {
		t.Fatalf("GET build manifest: %v", err)
	}
	for key, body := range shards {
		if got, err := k.Get(ctx, key); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("GET shard %s: %v", key, err)
		}
	}
}

// TestS3SurfaceWarmLocalHits: packs and entry manifests of a workspace are
// in the bucket and central knows the build. `kache-sidecar warm` through a
// running sidecar prefetches the plan; then the kache-like client checks
// every planned entry manifest with HEAD and restores every planned pack
// with GET through the S3 surface. Every one of those reads is a local hit
// (the surface's metrics), and the prefetch session closed at SIGTERM says
// every planned key was used on time.
func TestS3SurfaceWarmLocalHits(t *testing.T) {
	o := startMinio(t)
	ctx := context.Background()
	var entries []kacheEntry
	for i, c := range kacheCrates {
		e := newKacheEntry(t, c.crate, uint64(100+i), (96+i*128)<<10)
		entries = append(entries, e)
		_, err := o.client.PutObject(ctx, testBucket, e.packKey(), bytes.NewReader(e.pack), int64(len(e.pack)), minio.PutObjectOptions{})
		must(t, err)
		_, err = o.client.PutObject(ctx, testBucket, e.manifestKey(), bytes.NewReader(e.manifest), int64(len(e.manifest)), minio.PutObjectOptions{ContentType: "application/json"})
		must(t, err)
	}
	bm := buildManifestOf(entries)
	_, err := o.client.PutObject(ctx, testBucket, layout.BuildManifestKey("artifacts", "x86_64-unknown-linux-gnu"), bytes.NewReader(bm), int64(len(bm)), minio.PutObjectOptions{ContentType: "application/json"})
	must(t, err)

	central := startCentral(t, o)
	names := make([]string, 0, len(kacheCrates))
	for _, c := range kacheCrates {
		names = append(names, fmt.Sprintf("%q", c.pkg))
	}
	intent := `{"crate_names":[` + strings.Join(names, ",") + `],"namespace":null,"cargo_lock_deps":[]}`
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !waitUntil(wctx, 100*time.Millisecond, func() bool {
		st, p := central.planFor(intent)
		return st == 200 && len(p.Candidates) == len(entries)
	}) {
		t.Fatal("central does not plan the seeded build")
	}

	sc := startS3Sidecar(t, o, central.addr)
	ws := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ws, "Cargo.lock"), []byte(kacheLock()), 0o644))
	cmd := exec.Command(sidecarBin(t), "warm", "--workspace", ws, "--planner-listen", sc.addr,
		"--store-dir", t.TempDir(), "--progress", "never", "--strict", "--timeout", "60s")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("warm: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(`"via":"sidecar"`)) || !bytes.Contains(out, fmt.Appendf(nil, `"fetched":%d`, len(entries))) {
		t.Fatalf("warm did not prefetch the %d planned packs through the sidecar:\n%s", len(entries), out)
	}
	for _, e := range entries {
		if _, err := sc.stored("packs", e.crate, e.key, ".tar.zst"); err != nil {
			t.Fatalf("%s not in the store after warm: %v", e.packKey(), err)
		}
	}

	// The build: kache checks each entry, then restores its pack.
	k := newKacheS3(t, sc.endpoint, testBucket, localAccessKey, localSecretKey)
	local0, up0 := sc.reads(t)
	upBytes0 := sc.metricValue(t, `kache_sidecar_s3_served_bytes_total{source="upstream"}`)
	for _, e := range entries {
		ok, err := k.Exists(ctx, e.manifestKey())
		if err != nil || !ok {
			t.Fatalf("HEAD %s: %v %v", e.manifestKey(), ok, err)
		}
		got, err := k.Get(ctx, e.packKey())
		must(t, err)
		if !bytes.Equal(got, e.pack) {
			t.Fatalf("GET %s: not the bucket's bytes", e.packKey())
		}
		must(t, checkPack(got, e.crate, e.key))
	}
	local1, up1 := sc.reads(t)
	if local1-local0 != float64(2*len(entries)) || up1 != up0 {
		t.Fatalf("planned reads: %v local, %v upstream; want all %d local", local1-local0, up1-up0, 2*len(entries))
	}
	if v := sc.metricValue(t, `kache_sidecar_s3_served_bytes_total{source="upstream"}`); v != upBytes0 {
		t.Fatalf("%v bytes served from the bucket during the build, want none", v-upBytes0)
	}

	// What the store serves looks like the bucket's object.
	sdk := sdkClient(t, sc.endpoint, localAccessKey, localSecretKey)
	for _, e := range entries {
		h, err := sdk.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(e.packKey())})
		must(t, err)
		_, info := minioBytes(t, o, testBucket, e.packKey())
		if aws.ToString(h.ETag) != `"`+info.ETag+`"` || aws.ToInt64(h.ContentLength) != info.Size || !aws.ToTime(h.LastModified).Equal(info.LastModified) {
			t.Errorf("HEAD %s from the store: ETag %s, %d bytes, Last-Modified %s; MinIO: %q, %d, %s", e.packKey(),
				aws.ToString(h.ETag), aws.ToInt64(h.ContentLength), aws.ToTime(h.LastModified), info.ETag, info.Size, info.LastModified)
		}
	}

	// Sessions are reported at shutdown: the outcome record says every
	// planned key was read, on time.
	must(t, sc.p.Signal(syscall.SIGTERM))
	select {
	case <-sc.p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not stop on SIGTERM")
	}
	if code := sc.p.ExitCode(); code != 0 {
		t.Fatalf("sidecar exited %d", code)
	}
	closed := sc.logRecords(t, "prefetch session closed")
	if len(closed) != 1 {
		t.Fatalf("%d prefetch sessions closed, want the warm's one: %v", len(closed), closed)
	}
	rec := closed[0]
	n := float64(len(entries))
	for field, want := range map[string]float64{"candidates": n, "fetched": n, "demanded": n, "on_time": n, "late": 0, "unused": 0, "missed": 0} {
		if got, _ := rec[field].(float64); got != want {
			t.Errorf("session record %s = %v, want %v (%v)", field, rec[field], want, rec)
		}
	}
	if v := central.metricValue(t, `kache_planner_build_timelines_total{outcome="inserted"}`); v < 1 {
		t.Errorf("central stored no build timeline from the sidecar (%v)", v)
	}
}

// TestS3SurfaceForwardsManifestsToCentral: what kache uploads through the
// sidecar reaches central at once (issue 11, "What it reports to
// central"), so central plans with it seconds after the build, not at its
// next crawl: packs (their meta.json, read as they stream through) and a
// build manifest. Central here crawls the empty bucket once at startup and
// then not for an hour, so only the sidecar can tell it.
func TestS3SurfaceForwardsManifestsToCentral(t *testing.T) {
	o := startMinio(t)
	port := testenv.FreePort(t)
	central := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	central.p = testenv.Start(t, "kache-service", append(o.env(), "KACHE_LOG=info"), serviceBin(t),
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", filepath.Join(t.TempDir(), "db"),
		"--s3-bucket", testBucket, "--s3-endpoint", o.endpoint, "--s3-crawl-interval", "1h")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !waitUntil(ctx, 50*time.Millisecond, func() bool { return central.status("/readyz") == 200 }) {
		t.Fatalf("central not ready:\n%s", central.p.Tail(20))
	}
	sc := startS3Sidecar(t, o, central.addr)
	k := newKacheS3(t, sc.endpoint, testBucket, localAccessKey, localSecretKey)

	// plans waits until central plans every entry for its crates.
	plans := func(what string, entries []kacheEntry) {
		t.Helper()
		var names []string
		for _, e := range entries {
			names = append(names, fmt.Sprintf("%q", e.crate))
		}
		intent := `{"crate_names":[` + strings.Join(names, ",") + `],"namespace":null,"cargo_lock_deps":[]}`
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		if !waitUntil(wctx, 200*time.Millisecond, func() bool {
			st, p := central.planFor(intent)
			if st != 200 || len(p.Candidates) != len(entries) {
				return false
			}
			for _, c := range p.Candidates {
				if !slices.ContainsFunc(entries, func(e kacheEntry) bool { return e.key == c.CacheKey }) {
					return false
				}
			}
			return true
		}) {
			st, p := central.planFor(intent)
			t.Fatalf("10s after %s went through the sidecar, central plans %d of its %d entries (status %d): not forwarded",
				what, len(p.Candidates), len(entries), st)
		}
	}

	// Packs alone: central learns them from their meta.json.
	var packs []kacheEntry
	for i, c := range kacheCrates {
		e := newKacheEntry(t, c.crate, uint64(200+i), 16<<10)
		packs = append(packs, e)
		must(t, k.uploadEntry(ctx, e))
	}
	plans("the packs", packs)

	// A build manifest alone (of entries whose packs other runners wrote).
	var later []kacheEntry
	for i, crate := range []string{"regex", "memchr", "aho_corasick"} {
		later = append(later, newKacheEntry(t, crate, uint64(300+i), 1024))
	}
	must(t, k.Put(ctx, layout.BuildManifestKey("artifacts", "later-build"), buildManifestOf(later), "application/json"))
	plans("a build manifest", later)
}
