package s3source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// ByteRange is the one range of a GET's Range header: Start-End, End -1
// (any negative) for "to the end"; or, with Suffix > 0, the last Suffix
// bytes.
type ByteRange struct {
	Start, End, Suffix int64
}

// String is the range as a Range header value.
func (r ByteRange) String() string {
	switch {
	case r.Suffix > 0:
		return "bytes=-" + strconv.FormatInt(r.Suffix, 10)
	case r.End < 0:
		return "bytes=" + strconv.FormatInt(r.Start, 10) + "-"
	}
	return "bytes=" + strconv.FormatInt(r.Start, 10) + "-" + strconv.FormatInt(r.End, 10)
}

func (r ByteRange) valid() bool {
	return r.Suffix > 0 || (r.Suffix == 0 && r.Start >= 0 && (r.End < 0 || r.End >= r.Start))
}

// ObjectInfo is what a GET or HEAD answered about an object.
type ObjectInfo struct {
	// Object is the object itself; its Size is the whole object's, also
	// for a range.
	Object
	ContentType string
	// ContentLength is the length of this response's body (the range's
	// for a range); -1 when the bucket did not say.
	ContentLength int64
	// ContentRange is the Content-Range header as the bucket sent it,
	// empty for a whole object.
	ContentRange string
	// Header holds the response headers S3 stores or reports with an
	// object: x-amz-meta-*, Cache-Control, Content-Encoding,
	// Content-Disposition, Content-Language, Expires, x-amz-checksum-*,
	// x-amz-version-id, x-amz-server-side-encryption*, x-amz-storage-class
	// and a few more. Content-Type, ETag, Last-Modified and lengths are
	// the fields above, not here.
	Header http.Header
}

// GetOptions are the optional parts of a GET or HEAD, passed to the
// bucket as the client sent them.
type GetOptions struct {
	// Range is one byte range; nil for the whole object.
	Range *ByteRange
	// PartNumber reads one part of a multipart object (1-based).
	PartNumber int
	// Checksum asks for the object's stored checksums
	// (x-amz-checksum-mode: ENABLED).
	Checksum bool
	// IfMatch, IfNoneMatch, IfModifiedSince and IfUnmodifiedSince are the
	// conditional headers' raw values; the bucket answers 412 or 304.
	IfMatch, IfNoneMatch, IfModifiedSince, IfUnmodifiedSince string
	// Response holds response-* overrides (response-content-type ...).
	Response url.Values
}

func (o GetOptions) minio(key string) (minio.GetObjectOptions, error) {
	var opts minio.GetObjectOptions
	if o.Range != nil {
		if !o.Range.valid() {
			return opts, fmt.Errorf("get %s: invalid byte range %+v", key, *o.Range)
		}
		opts.Set("Range", o.Range.String())
	}
	opts.PartNumber = o.PartNumber
	opts.Checksum = o.Checksum
	for h, v := range map[string]string{"If-Match": o.IfMatch, "If-None-Match": o.IfNoneMatch,
		"If-Modified-Since": o.IfModifiedSince, "If-Unmodified-Since": o.IfUnmodifiedSince} {
		if v != "" {
			opts.Set(h, v)
		}
	}
	for k, vs := range o.Response {
		for _, v := range vs {
			opts.AddReqParam(k, v)
		}
	}
	return opts, nil
}

// Get sends one GET for key and returns the body with the response's
// metadata. The caller must Close the body. A read error from the body
// that comes from the connection wraps ErrUnavailable. A failed condition
// is an *APIError with Status 412 (PreconditionFailed) or 304.
//
// An unsatisfiable range is an *APIError with Code InvalidRange (416);
// the ObjectInfo that comes with it has the object's Size (from a HEAD),
// for the Content-Range a 416 reports.
func (b *Bucket) Get(ctx context.Context, key string, o GetOptions) (io.ReadCloser, ObjectInfo, error) {
	opts, err := o.minio(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	body, st, h, err := minio.Core{Client: b.c}.GetObject(ctx, b.bucket, key, opts)
	if err != nil {
		err = translate("get", key, err)
		var api *APIError
		if o.Range != nil && errors.As(err, &api) && api.Code == "InvalidRange" {
			if info, serr := b.StatInfo(ctx, key); serr == nil {
				return nil, info, err
			}
		}
		return nil, ObjectInfo{}, err
	}
	return &netBody{rc: body, key: key}, infoOf(key, st, h), nil
}

// GetRange is Get of one range (nil: the whole object).
func (b *Bucket) GetRange(ctx context.Context, key string, r *ByteRange) (io.ReadCloser, ObjectInfo, error) {
	return b.Get(ctx, key, GetOptions{Range: r})
}

// Head is a HEAD of key with o's options (Range is ignored).
func (b *Bucket) Head(ctx context.Context, key string, o GetOptions) (ObjectInfo, error) {
	o.Range = nil
	opts, err := o.minio(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	st, err := b.c.StatObject(ctx, b.bucket, key, opts)
	if err != nil {
		return ObjectInfo{}, translate("head", key, err)
	}
	return infoOf(key, st, st.Headers), nil
}

// StatInfo is a HEAD of key.
func (b *Bucket) StatInfo(ctx context.Context, key string) (ObjectInfo, error) {
	return b.Head(ctx, key, GetOptions{})
}

// infoOf reads a GET's or HEAD's response: minio-go's parse of it and its
// headers.
func infoOf(key string, st minio.ObjectInfo, h http.Header) ObjectInfo {
	info := ObjectInfo{
		Object: Object{Key: key, ETag: strings.Trim(st.ETag, `"`), Size: st.Size, LastModified: st.LastModified,
			Encrypted: encrypted(h)},
		ContentType:   st.ContentType,
		ContentLength: st.Size,
		ContentRange:  h.Get("Content-Range"),
		Header:        passedHeaders(h),
	}
	if info.ContentRange != "" {
		info.Size = totalOf(info.ContentRange)
	}
	return info
}

// totalOf reads the complete length from a Content-Range ("bytes 0-9/100"),
// -1 when it is unknown ("*") or unreadable.
func totalOf(contentRange string) int64 {
	_, total, ok := strings.Cut(contentRange, "/")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(total), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// passedHeaders keeps the headers that describe the object (see
// ObjectInfo.Header) and drops those that describe the response.
func passedHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if objectHeader(ck) {
			out[ck] = slices.Clone(vs)
		}
	}
	return out
}

func objectHeader(k string) bool {
	switch k {
	case "Cache-Control", "Content-Encoding", "Content-Disposition", "Content-Language", "Expires",
		"X-Amz-Storage-Class", "X-Amz-Version-Id", "X-Amz-Tagging-Count", "X-Amz-Website-Redirect-Location",
		"X-Amz-Mp-Parts-Count", "X-Amz-Restore", "X-Amz-Expiration", "X-Amz-Replication-Status",
		"X-Amz-Missing-Meta":
		return true
	}
	for _, p := range []string{"X-Amz-Meta-", "X-Amz-Checksum-", "X-Amz-Server-Side-Encryption", "X-Amz-Object-Lock-"} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// netBody is a GET's body whose connection errors wrap ErrUnavailable.
type netBody struct {
	rc  io.ReadCloser
	key string
}

func (b *netBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = translate("read", b.key, err)
	}
	return n, err
}

func (b *netBody) Close() error { return b.rc.Close() }

// PutOptions are the headers S3 stores with an object.
type PutOptions struct {
	ContentType string
	// ContentMD5 is the base64 MD5 of the body, sent as Content-MD5 so
	// the bucket checks it too (BadDigest when it differs).
	ContentMD5 string
	// UserMetadata maps names, without the x-amz-meta- prefix (one is
	// accepted and dropped), to values.
	UserMetadata       map[string]string
	CacheControl       string
	ContentEncoding    string
	ContentDisposition string
	// ChecksumAlgorithm (CRC32, CRC32C, CRC64NVME, SHA1, SHA256) has the
	// bucket store that checksum of the object: minio-go computes it as
	// the body streams and sends it as a trailer, so the client's value,
	// which the surface verified, is never needed up front. For a
	// multipart upload it is the upload's algorithm.
	ChecksumAlgorithm string
}

// checksumTypes maps S3's algorithm names to minio-go's.
var checksumTypes = map[string]minio.ChecksumType{
	"CRC32": minio.ChecksumCRC32, "CRC32C": minio.ChecksumCRC32C, "CRC64NVME": minio.ChecksumCRC64NVME,
	"SHA1": minio.ChecksumSHA1, "SHA256": minio.ChecksumSHA256,
}

func (o PutOptions) minio() minio.PutObjectOptions {
	opts := minio.PutObjectOptions{
		ContentType:        o.ContentType,
		CacheControl:       o.CacheControl,
		ContentEncoding:    o.ContentEncoding,
		ContentDisposition: o.ContentDisposition,
		DisableMultipart:   true,
		// The surface verified the client's body already; hashing it
		// again for minio-go's payload signature doubled a PUT's CPU.
		// The body is guarded by a CRC32C trailer instead (TrailingHeaders
		// in New), as minio-go does over https.
		DisableContentSha256: true,
	}
	if len(o.UserMetadata) > 0 {
		// Keys go in with their prefix: minio-go sends a key that looks
		// like an x-amz-* header as is, and this way every name is meta.
		opts.UserMetadata = make(map[string]string, len(o.UserMetadata))
		for k, v := range o.UserMetadata {
			name := strings.ToLower(k)
			name = strings.TrimPrefix(name, "x-amz-meta-")
			opts.UserMetadata["x-amz-meta-"+name] = v
		}
	}
	if t, ok := checksumTypes[strings.ToUpper(o.ChecksumAlgorithm)]; ok {
		opts.Checksum = t
	}
	return opts
}

// PutResult is the bucket's answer to a write.
type PutResult struct {
	ETag string
	// LastModified is the bucket's if it said, else the time the answer
	// came (S3 does not send Last-Modified for a PUT).
	LastModified time.Time
	VersionID    string
}

// Put streams body, size bytes, to key as one PutObject request. The
// body is never buffered: over https it goes as UNSIGNED-PAYLOAD, over
// http with a streaming (aws-chunked) signature, 64 KiB at a time. An
// unseekable body is sent once (no retry); a seekable one is rewound for
// minio-go's retries. An error reading body comes back wrapped as it was.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, size int64, opt PutOptions) (PutResult, error) {
	if size < 0 {
		return PutResult{}, fmt.Errorf("put %s: the size must be known", key)
	}
	w, src := watch(body)
	up, err := minio.Core{Client: b.c}.PutObject(ctx, b.bucket, key, src, size, opt.ContentMD5, "", opt.minio())
	if err != nil {
		if berr := w.failure(size); berr != nil {
			return PutResult{}, fmt.Errorf("put %s: read body: %w", key, berr)
		}
		return PutResult{}, translate("put", key, err)
	}
	return putResult(up), nil
}

func putResult(up minio.UploadInfo) PutResult {
	lm := up.LastModified
	if lm.IsZero() {
		lm = time.Now().UTC()
	}
	return PutResult{ETag: strings.Trim(up.ETag, `"`), LastModified: lm, VersionID: up.VersionID}
}

// Delete removes key. An absent key is success, as in S3.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	err := b.c.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{})
	if err = translate("delete", key, err); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// watchedBody records how reading a request body ended, so that a failed
// upload can tell the body's failure from the bucket's.
type watchedBody struct {
	r   io.Reader
	n   int64
	eof bool
	err error
}

// watchedSeeker keeps a seekable body seekable, so minio-go can rewind it
// for a retry.
type watchedSeeker struct {
	*watchedBody
	s io.Seeker
}

// watch returns the watcher and the reader to hand to minio-go.
func watch(r io.Reader) (*watchedBody, io.Reader) {
	w := &watchedBody{r: r}
	if s, ok := r.(io.Seeker); ok {
		return w, watchedSeeker{watchedBody: w, s: s}
	}
	return w, w
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.n += int64(n)
	switch {
	case err == io.EOF:
		w.eof = true
	case err != nil:
		w.err = err
	}
	return n, err
}

// failure is the body's error, if reading it failed: its own error, or
// io.ErrUnexpectedEOF when it ended before size bytes.
func (w *watchedBody) failure(size int64) error {
	switch {
	case w.err != nil:
		return w.err
	case w.eof && w.n < size:
		return fmt.Errorf("%w: %d of %d bytes", io.ErrUnexpectedEOF, w.n, size)
	}
	return nil
}

func (w watchedSeeker) Seek(offset int64, whence int) (int64, error) {
	n, err := w.s.Seek(offset, whence)
	if err == nil {
		w.n, w.eof, w.err = n, false, nil
	}
	return n, err
}
