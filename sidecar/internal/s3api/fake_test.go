package s3api

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kache-planner/kache-planner/shared/s3source"
)

// fakeBucket is an in-memory bucket: the surface's Upstream and the prefetch
// engine's Source at once. gate, when set for a key, holds its GETs until
// closed; down makes every call fail as an unreachable bucket does.
type fakeBucket struct {
	mu      sync.Mutex
	objs    map[string]fakeObj
	uploads map[string]map[int][]byte
	gets    map[string]int
	calls   int
	gate    map[string]chan struct{}
	down    bool
	seq     int
}

type fakeObj struct {
	data  []byte
	etag  string
	mod   time.Time
	ctype string
}

func newFakeBucket() *fakeBucket {
	return &fakeBucket{objs: map[string]fakeObj{}, uploads: map[string]map[int][]byte{}, gets: map[string]int{}, gate: map[string]chan struct{}{}}
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func (f *fakeBucket) put(key string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objs[key] = fakeObj{data: bytes.Clone(data), etag: md5hex(data), mod: time.Now().UTC().Truncate(time.Second)}
}

func (f *fakeBucket) object(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[key]
	return o.data, ok
}

func (f *fakeBucket) getCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets[key]
}

func (f *fakeBucket) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeBucket) enter() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return fmt.Errorf("dial bucket: %w", s3source.ErrUnavailable)
	}
	return nil
}

var errNoSuchKeyAPI = &s3source.APIError{Status: http.StatusNotFound, Code: "NoSuchKey", Message: "The specified key does not exist."}

func (f *fakeBucket) Open(ctx context.Context, key string) (io.ReadCloser, s3source.Object, error) {
	body, info, err := f.Get(ctx, key, s3source.GetOptions{})
	return body, info.Object, err
}

func (f *fakeBucket) Head(ctx context.Context, key string, _ s3source.GetOptions) (s3source.ObjectInfo, error) {
	return f.StatInfo(ctx, key)
}

func (f *fakeBucket) Get(ctx context.Context, key string, opts s3source.GetOptions) (io.ReadCloser, s3source.ObjectInfo, error) {
	r := opts.Range
	if err := f.enter(); err != nil {
		return nil, s3source.ObjectInfo{}, err
	}
	f.mu.Lock()
	f.gets[key]++
	o, ok := f.objs[key]
	gate := f.gate[key]
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, s3source.ObjectInfo{}, ctx.Err()
		}
	}
	if !ok {
		return nil, s3source.ObjectInfo{}, errNoSuchKeyAPI
	}
	info := s3source.ObjectInfo{Object: s3source.Object{Key: key, ETag: o.etag, Size: int64(len(o.data)), LastModified: o.mod},
		ContentType: o.ctype, ContentLength: int64(len(o.data))}
	data := o.data
	if r != nil {
		size := int64(len(o.data))
		br := byteRange{Start: r.Start, End: r.End, Suffix: r.Suffix}
		off, n, ok := br.resolve(size)
		if !ok {
			return nil, info, &s3source.APIError{Status: http.StatusRequestedRangeNotSatisfiable, Code: "InvalidRange", Message: "bad range"}
		}
		data = o.data[off : off+n]
		info.ContentLength = n
		info.ContentRange = fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size)
	}
	return io.NopCloser(bytes.NewReader(data)), info, nil
}

func (f *fakeBucket) StatInfo(ctx context.Context, key string) (s3source.ObjectInfo, error) {
	if err := f.enter(); err != nil {
		return s3source.ObjectInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[key]
	if !ok {
		return s3source.ObjectInfo{}, errNoSuchKeyAPI
	}
	return s3source.ObjectInfo{Object: s3source.Object{Key: key, ETag: o.etag, Size: int64(len(o.data)), LastModified: o.mod},
		ContentType: o.ctype, ContentLength: int64(len(o.data))}, nil
}

// readBody reads a PUT body as a bucket does: all of size, or nothing kept.
// readBody reads exactly size bytes, as an HTTP client sending a
// Content-Length does: nothing of an empty body.
func readBody(body io.Reader, size int64, md5b64 string) ([]byte, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(body, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &s3source.APIError{Status: 400, Code: "IncompleteBody", Message: "short body"}
		}
		return nil, err
	}
	if md5b64 != "" {
		sum := md5.Sum(data)
		if base64.StdEncoding.EncodeToString(sum[:]) != md5b64 {
			return nil, &s3source.APIError{Status: 400, Code: "BadDigest", Message: "md5"}
		}
	}
	return data, nil
}

func (f *fakeBucket) Put(ctx context.Context, key string, body io.Reader, size int64, opt s3source.PutOptions) (s3source.PutResult, error) {
	if err := f.enter(); err != nil {
		return s3source.PutResult{}, err
	}
	data, err := readBody(body, size, opt.ContentMD5)
	if err != nil {
		return s3source.PutResult{}, err
	}
	o := fakeObj{data: data, etag: md5hex(data), mod: time.Now().UTC().Truncate(time.Second), ctype: opt.ContentType}
	f.mu.Lock()
	f.objs[key] = o
	f.mu.Unlock()
	return s3source.PutResult{ETag: o.etag, LastModified: o.mod}, nil
}

func (f *fakeBucket) Delete(ctx context.Context, key string) error {
	if err := f.enter(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objs, key)
	return nil
}

func (f *fakeBucket) sortedKeys(prefix, after string) []string {
	var keys []string
	for k := range f.objs {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// page lists like S3: keys after `after`, rolled up at the delimiter.
func (f *fakeBucket) page(prefix, delim, after string, max int) (objs []s3source.ListedObject, cps []string, truncated bool, last string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	for _, k := range f.sortedKeys(prefix, after) {
		if len(objs)+len(cps) == max {
			return objs, cps, true, last
		}
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				cp := k[:len(prefix)+i+len(delim)]
				if !seen[cp] {
					seen[cp] = true
					cps = append(cps, cp)
				}
				last = k
				continue
			}
		}
		o := f.objs[k]
		objs = append(objs, s3source.ListedObject{Key: k, ETag: o.etag, Size: int64(len(o.data)), LastModified: o.mod})
		last = k
	}
	return objs, cps, false, last
}

func (f *fakeBucket) ListV2(ctx context.Context, p s3source.ListParams) (s3source.ListResult, error) {
	if err := f.enter(); err != nil {
		return s3source.ListResult{}, err
	}
	after := p.StartAfter
	if p.ContinuationToken != "" {
		after = p.ContinuationToken
	}
	objs, cps, trunc, last := f.page(p.Prefix, p.Delimiter, after, p.MaxKeys)
	res := s3source.ListResult{Objects: objs, CommonPrefixes: cps, IsTruncated: trunc, KeyCount: len(objs) + len(cps), MaxKeys: p.MaxKeys}
	if trunc {
		res.NextContinuationToken = last
	}
	return res, nil
}

func (f *fakeBucket) ListV1(ctx context.Context, p s3source.ListV1Params) (s3source.ListV1Result, error) {
	if err := f.enter(); err != nil {
		return s3source.ListV1Result{}, err
	}
	objs, cps, trunc, last := f.page(p.Prefix, p.Delimiter, p.Marker, p.MaxKeys)
	res := s3source.ListV1Result{Objects: objs, CommonPrefixes: cps, IsTruncated: trunc}
	if trunc {
		res.NextMarker = last
	}
	return res, nil
}

func (f *fakeBucket) CreateMultipart(ctx context.Context, key string, opt s3source.PutOptions) (string, error) {
	if err := f.enter(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("upload-%d", f.seq)
	f.uploads[id] = map[int][]byte{}
	return id, nil
}

var errNoSuchUpload = &s3source.APIError{Status: 404, Code: "NoSuchUpload", Message: "The specified upload does not exist."}

func (f *fakeBucket) UploadPart(ctx context.Context, key, uploadID string, part int, body io.Reader, size int64, md5b64 string) (string, error) {
	if err := f.enter(); err != nil {
		return "", err
	}
	data, err := readBody(body, size, md5b64)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	up, ok := f.uploads[uploadID]
	if !ok {
		return "", errNoSuchUpload
	}
	up[part] = data
	return md5hex(data), nil
}

func (f *fakeBucket) CompleteMultipart(ctx context.Context, key, uploadID string, parts []s3source.CompletedPart) (s3source.PutResult, error) {
	if err := f.enter(); err != nil {
		return s3source.PutResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	up, ok := f.uploads[uploadID]
	if !ok {
		return s3source.PutResult{}, errNoSuchUpload
	}
	var all []byte
	for _, p := range parts {
		data, ok := up[p.Number]
		if !ok || strings.Trim(p.ETag, `"`) != md5hex(data) {
			return s3source.PutResult{}, &s3source.APIError{Status: 400, Code: "InvalidPart", Message: "part"}
		}
		all = append(all, data...)
	}
	delete(f.uploads, uploadID)
	etag := fmt.Sprintf("%s-%d", md5hex(all), len(parts))
	f.objs[key] = fakeObj{data: all, etag: etag, mod: time.Now().UTC().Truncate(time.Second)}
	return s3source.PutResult{ETag: etag}, nil
}

func (f *fakeBucket) AbortMultipart(ctx context.Context, key, uploadID string) error {
	if err := f.enter(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.uploads[uploadID]; !ok {
		return errNoSuchUpload
	}
	delete(f.uploads, uploadID)
	return nil
}

func (f *fakeBucket) ListParts(ctx context.Context, key, uploadID string, marker, max int) (s3source.PartsResult, error) {
	if err := f.enter(); err != nil {
		return s3source.PartsResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	up, ok := f.uploads[uploadID]
	if !ok {
		return s3source.PartsResult{}, errNoSuchUpload
	}
	var res s3source.PartsResult
	var nums []int
	for n := range up {
		if n > marker {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	for _, n := range nums {
		res.Parts = append(res.Parts, s3source.Part{Number: n, ETag: md5hex(up[n]), Size: int64(len(up[n]))})
	}
	res.MaxParts = max
	return res, nil
}
