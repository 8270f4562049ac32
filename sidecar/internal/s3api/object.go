package s3api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// getObject answers GET and HEAD. A pack or entry manifest is served from
// the store, joining a prefetch in flight or fetching it once; anything
// else, or an object the store cannot take, streams from the bucket with
// the client's options (conditions, part number, checksum mode, response
// overrides) passed on.
func (s *Server) getObject(r *request, head bool) error {
	rng, err := parseRange(r.ctx.Request.Header.Peek("Range"))
	if err != nil {
		return err
	}
	opts := getOptions(r.ctx, rng)
	if ref, ok := s.refOf(r.key); ok && opts.PartNumber == 0 {
		served, err := s.serveLocal(r, ref, rng, head)
		if served || err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	if head {
		defer cancel()
		start := time.Now()
		info, err := s.up.Head(ctx, r.key, opts)
		s.metrics.upstream.WithLabelValues("HeadObject").Observe(time.Since(start).Seconds())
		if err != nil {
			return err
		}
		setObjectHeaders(r.ctx, info)
		r.ctx.Response.Header.SetContentLength(int(info.ContentLength))
		r.ctx.Response.SkipBody = true
		s.metrics.reads.WithLabelValues("upstream").Inc()
		return nil
	}
	start := time.Now()
	body, info, err := s.up.Get(ctx, r.key, opts)
	s.metrics.upstream.WithLabelValues("GetObject").Observe(time.Since(start).Seconds())
	if err != nil {
		cancel()
		if rng != nil {
			r.ctx.SetUserValue(sizeKey, info.Size)
		}
		return err
	}
	setObjectHeaders(r.ctx, info)
	status := http.StatusOK
	if info.ContentRange != "" {
		status = http.StatusPartialContent
		r.ctx.Response.Header.Set("Content-Range", info.ContentRange)
	}
	r.ctx.SetStatusCode(status)
	s.metrics.reads.WithLabelValues("upstream").Inc()
	// fasthttp closes the stream once written, ending the upstream GET.
	r.ctx.SetBodyStream(&countingBody{rc: body, cancel: cancel, n: s.metrics.bytes.WithLabelValues("upstream")}, int(info.ContentLength))
	return nil
}

// responseParams are the query parameters that override a GET's response
// headers, with the header each sets.
var responseParams = map[string]string{
	"response-content-type":        "Content-Type",
	"response-content-language":    "Content-Language",
	"response-expires":             "Expires",
	"response-cache-control":       "Cache-Control",
	"response-content-disposition": "Content-Disposition",
	"response-content-encoding":    "Content-Encoding",
}

func getOptions(ctx *fasthttp.RequestCtx, rng *byteRange) s3source.GetOptions {
	h := &ctx.Request.Header
	o := s3source.GetOptions{
		Range:             rng.source(),
		Checksum:          strings.EqualFold(string(h.Peek("x-amz-checksum-mode")), "ENABLED"),
		IfMatch:           string(h.Peek("If-Match")),
		IfNoneMatch:       string(h.Peek("If-None-Match")),
		IfModifiedSince:   string(h.Peek("If-Modified-Since")),
		IfUnmodifiedSince: string(h.Peek("If-Unmodified-Since")),
	}
	q := ctx.QueryArgs()
	if n, err := strconv.Atoi(string(q.Peek("partNumber"))); err == nil && n > 0 {
		o.PartNumber = n
	}
	for p := range responseParams {
		if v := q.Peek(p); len(v) > 0 {
			if o.Response == nil {
				o.Response = url.Values{}
			}
			o.Response.Set(p, string(v))
		}
	}
	return o
}

// errNotModified answers a GET or HEAD whose If-None-Match or
// If-Modified-Since condition holds.
var errNotModified = &s3Error{http.StatusNotModified, "NotModified", "Not Modified"}

var errPreconditionFailed = &s3Error{http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"}

// checkConditions evaluates a request's conditional headers against a
// local object as S3 does: If-Match before If-Unmodified-Since, and
// If-None-Match before If-Modified-Since.
func checkConditions(h *fasthttp.RequestHeader, etag string, mod time.Time) error {
	match := func(list string) bool {
		for v := range strings.SplitSeq(list, ",") {
			v = strings.TrimSpace(v)
			if v == "*" || strings.Trim(v, `"`) == etag {
				return true
			}
		}
		return false
	}
	since := func(name string) (time.Time, bool) {
		t, err := http.ParseTime(string(h.Peek(name)))
		return t, err == nil
	}
	mod = mod.Truncate(time.Second)
	if v := string(h.Peek("If-Match")); v != "" {
		if !match(v) {
			return errPreconditionFailed
		}
	} else if t, ok := since("If-Unmodified-Since"); ok && mod.After(t) {
		return errPreconditionFailed
	}
	if v := string(h.Peek("If-None-Match")); v != "" {
		if match(v) {
			return errNotModified
		}
	} else if t, ok := since("If-Modified-Since"); ok && !mod.After(t) {
		return errNotModified
	}
	return nil
}

// serveLocal serves ref from the store. It reports false (and no error)
// when the object should come from the bucket instead: the store could not
// take it (full disk, over its budget), or the engine is stopping.
func (s *Server) serveLocal(r *request, ref store.Ref, rng *byteRange, head bool) (bool, error) {
	// A HEAD of a pack the store does not hold is asked of the bucket: a
	// pack is too big to download for an existence check.
	if head && ref.Kind == store.Pack && !s.st.Has(ref) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.DemandTimeout)
	defer cancel()
	// Demand, then open: eviction can remove the object in between, so a
	// second round fetches it again.
	for range 2 {
		err := s.eng.Demand(ctx, ref)
		switch {
		case errors.Is(err, prefetch.ErrNotFound):
			return true, errNoSuchKey
		case err != nil:
			s.log.Debug("local store cannot serve, reading the bucket", "object", ref.String(), "error", err)
			return false, nil
		}
		f, info, err := s.st.Open(ref)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			s.log.Warn("open local object", "object", ref.String(), "error", err)
			return false, nil
		}
		if info.ETag == "" {
			// Without an ETag no condition can be judged here.
			if h := &r.ctx.Request.Header; len(h.Peek("If-Match")) > 0 || len(h.Peek("If-None-Match")) > 0 {
				f.Close()
				return false, nil
			}
		}
		if err := checkConditions(&r.ctx.Request.Header, info.ETag, info.LastModified); err != nil {
			f.Close()
			setLocalHeaders(r.ctx, ref, info)
			return true, err
		}
		return true, s.sendFile(r, ref, f, info, rng, head)
	}
	return false, nil
}

func setLocalHeaders(ctx *fasthttp.RequestCtx, ref store.Ref, info store.Info) {
	h := &ctx.Response.Header
	if info.ETag != "" {
		h.Set("ETag", quoteETag(info.ETag))
	}
	h.Set("Last-Modified", info.LastModified.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	if ref.Kind == store.EntryManifest {
		h.SetContentType("application/json")
	} else {
		h.SetContentType("application/octet-stream")
	}
	q := ctx.QueryArgs()
	for p, name := range responseParams {
		if v := q.Peek(p); len(v) > 0 {
			h.Set(name, string(v))
		}
	}
}

// sendFile answers from an open store file (sendfile where the platform
// allows: fasthttp hands an *os.File to the connection's ReadFrom).
func (s *Server) sendFile(r *request, ref store.Ref, f *os.File, info store.Info, rng *byteRange, head bool) error {
	h := &r.ctx.Response.Header
	setLocalHeaders(r.ctx, ref, info)
	s.metrics.reads.WithLabelValues("local").Inc()
	off, n := int64(0), info.Size
	status := http.StatusOK
	if rng != nil {
		var ok bool
		off, n, ok = rng.resolve(info.Size)
		if !ok {
			f.Close()
			r.ctx.SetUserValue(sizeKey, info.Size)
			return errInvalidRange
		}
		status = http.StatusPartialContent
		h.Set("Content-Range", "bytes "+itoa(off)+"-"+itoa(off+n-1)+"/"+itoa(info.Size))
	}
	r.ctx.SetStatusCode(status)
	if head {
		f.Close()
		h.SetContentLength(int(n))
		r.ctx.Response.SkipBody = true
		return nil
	}
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return err
		}
	}
	s.metrics.bytes.WithLabelValues("local").Add(float64(n))
	r.ctx.SetBodyStream(f, int(n))
	return nil
}

func setObjectHeaders(ctx *fasthttp.RequestCtx, info s3source.ObjectInfo) {
	h := &ctx.Response.Header
	for k, vs := range info.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if info.ETag != "" {
		h.Set("ETag", quoteETag(info.ETag))
	}
	if !info.LastModified.IsZero() {
		h.Set("Last-Modified", info.LastModified.UTC().Format(http.TimeFormat))
	}
	if info.ContentType != "" {
		h.SetContentType(info.ContentType)
	}
	h.Set("Accept-Ranges", "bytes")
}

// parseRange reads a single-range Range header. A header S3 would ignore
// (several ranges, another unit, bad syntax) means the whole object.
func parseRange(v []byte) (*byteRange, error) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(string(v)), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return nil, nil
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return nil, nil
	}
	switch {
	case first == "":
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return nil, nil
		}
		if n == 0 {
			return nil, errInvalidRange
		}
		return &byteRange{Suffix: n}, nil
	default:
		start, err := strconv.ParseInt(first, 10, 64)
		if err != nil || start < 0 {
			return nil, nil
		}
		if last == "" {
			return &byteRange{Start: start, End: -1}, nil
		}
		end, err := strconv.ParseInt(last, 10, 64)
		if err != nil || end < start {
			return nil, nil
		}
		return &byteRange{Start: start, End: end}, nil
	}
}

// byteRange is one range of a Range header: Start-End (End -1: to the end)
// or, with Suffix set, the last Suffix bytes.
type byteRange struct {
	Start, End, Suffix int64
}

// resolve places r in an object of size bytes: the offset and length to
// serve, or false when the range is not satisfiable.
func (r *byteRange) resolve(size int64) (off, n int64, ok bool) {
	if r.Suffix > 0 {
		n = min(r.Suffix, size)
		return size - n, n, n > 0
	}
	if r.Start >= size {
		return 0, 0, false
	}
	end := size - 1
	if r.End >= 0 && r.End < end {
		end = r.End
	}
	return r.Start, end - r.Start + 1, true
}

// source is r for the bucket (nil: the whole object).
func (r *byteRange) source() *s3source.ByteRange {
	if r == nil {
		return nil
	}
	return &s3source.ByteRange{Start: r.Start, End: r.End, Suffix: r.Suffix}
}

// countingBody counts bytes served from the bucket and ends the upstream
// request when fasthttp closes it.
type countingBody struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
	n      interface{ Add(float64) }
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(float64(n))
	return n, err
}

func (b *countingBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// putObject streams a PUT to the bucket, verified as it passes, keeping a
// local copy of packs and entry manifests and telling central what it
// learned. It answers only after the bucket acknowledged the object.
func (s *Server) putObject(r *request) error {
	size, err := s.bodySize(r)
	if err != nil {
		return err
	}
	body, err := s.openBody(r)
	if err != nil {
		return err
	}
	if err := verifyEmpty(body, size); err != nil {
		return err
	}
	opts := putOptions(r.ctx)
	ref, keep := s.refOf(r.key)
	var local *localCopy
	if keep {
		local = s.newLocalCopy(ref, size)
	}
	var pack PackObserver
	if keep && ref.Kind == store.Pack && s.rep != nil {
		pack = s.rep.Pack()
	}
	rel, isManifest := s.manifestRel(r.key)
	var capture *bytes.Buffer
	if isManifest && s.rep != nil && size <= s.cfg.MaxReportBytes {
		capture = bytes.NewBuffer(make([]byte, 0, size))
	}
	var tee []io.Writer
	if local != nil {
		tee = append(tee, local)
	}
	if pack != nil {
		tee = append(tee, pack)
	}
	if capture != nil {
		tee = append(tee, capture)
	}
	src := io.Reader(body)
	if len(tee) > 0 {
		src = io.TeeReader(body, io.MultiWriter(tee...))
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.up.Put(ctx, r.key, src, size, opts)
	s.metrics.upstream.WithLabelValues("PutObject").Observe(time.Since(start).Seconds())
	if berr := body.err(); berr != nil {
		// The body failed verification: the bucket never got its last byte.
		err = berr
	}
	if err != nil {
		local.abort()
		if pack != nil {
			pack.Abort()
		}
		return err
	}
	s.metrics.writes.Inc()
	s.metrics.bytesIn.Add(float64(size))
	if keep {
		local.commit(store.Meta{ETag: res.ETag, LastModified: res.LastModified})
	}
	if pack != nil {
		pack.Done(size, ref.Crate, ref.CacheKey)
	}
	if capture != nil {
		s.rep.ManifestPut(rel, capture.Bytes())
	}
	h := &r.ctx.Response.Header
	if res.ETag != "" {
		h.Set("ETag", quoteETag(res.ETag))
	}
	if res.VersionID != "" {
		h.Set("x-amz-version-id", res.VersionID)
	}
	r.ctx.SetStatusCode(http.StatusOK)
	return nil
}

// manifestRel reports whether key is under `{prefix}/_manifests/` and its
// name below it.
func (s *Server) manifestRel(key string) (string, bool) {
	base := "_manifests/"
	if s.cfg.Prefix != "" {
		base = s.cfg.Prefix + "/" + base
	}
	rel, ok := strings.CutPrefix(key, base)
	return rel, ok && rel != ""
}

// bodySize is the object's size: the decoded length of an aws-chunked
// body, else Content-Length.
func (s *Server) bodySize(r *request) (int64, error) {
	h := &r.ctx.Request.Header
	var size int64 = -1
	if r.auth.Payload.Streaming() || strings.Contains(string(h.Peek("Content-Encoding")), "aws-chunked") {
		if v := h.Peek("x-amz-decoded-content-length"); len(v) > 0 {
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 {
				return 0, errMissingLength
			}
			size = n
		}
	} else if n := h.ContentLength(); n >= 0 {
		size = int64(n)
	}
	if size < 0 {
		return 0, errMissingLength
	}
	if size > s.cfg.MaxObjectBytes {
		s.metrics.refused.WithLabelValues("EntityTooLarge").Inc()
		return 0, errEntityTooLarge
	}
	return size, nil
}

// openBody wraps the raw request body: decoded and verified by sigv4, read
// with an idle deadline, and holding back its last byte until everything
// it declared was verified, so a consumer (the bucket) never receives a
// complete body that fails verification.
func (s *Server) openBody(r *request) (*heldBody, error) {
	raw, err := s.http.BodyReader(r.ctx)
	if err != nil {
		return nil, err
	}
	raw = &idleReader{r: raw, conn: r.ctx.Conn(), idle: s.cfg.BodyIdleTimeout}
	body, err := r.auth.Body(raw, header{&r.ctx.Request.Header})
	if err != nil {
		return nil, err
	}
	return &heldBody{r: body}, nil
}

// verifyEmpty reads a body declared empty to its end before anything is
// sent upstream. The bucket reads no byte of a 0-byte object, so without
// this nothing would check the body against its payload hash, Content-MD5,
// checksum or chunk signatures, and a mismatched request would be stored.
func verifyEmpty(body *heldBody, size int64) error {
	if size != 0 {
		return nil
	}
	n, err := io.Copy(io.Discard, body)
	if err != nil {
		return err
	}
	if n > 0 {
		return errorf(http.StatusBadRequest, "IncompleteBody", "The request body is longer than its declared length.")
	}
	return nil
}

// idleReader drops a client that stops sending: each read must make
// progress within idle.
type idleReader struct {
	r    io.Reader
	conn interface{ SetReadDeadline(time.Time) error }
	idle time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	if i.conn != nil {
		_ = i.conn.SetReadDeadline(time.Now().Add(i.idle))
	}
	return i.r.Read(p)
}

// heldBody keeps the last byte it read until its source reported a clean
// io.EOF (all digests and signatures verified). A verification failure is
// then returned instead of that byte, and remembered for err.
type heldBody struct {
	r       io.Reader
	pending byte
	has     bool
	done    bool
	fail    error
}

func (h *heldBody) Read(p []byte) (int, error) {
	if h.fail != nil {
		return 0, h.fail
	}
	if len(p) == 0 {
		return 0, nil
	}
	if h.done {
		if h.has {
			p[0] = h.pending
			h.has = false
			return 1, nil
		}
		return 0, io.EOF
	}
	if h.has && len(p) == 1 {
		var b [1]byte
		n, err := h.r.Read(b[:])
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			h.fail, h.has = err, false
			return 0, err
		case errors.Is(err, io.EOF):
			h.done = true
		}
		p[0] = h.pending
		if n == 1 {
			h.pending = b[0]
		} else {
			h.has = false
		}
		return 1, nil
	}
	// Read into p after the held byte's slot.
	off := 0
	if h.has {
		p[0] = h.pending
		off = 1
	}
	n, err := h.r.Read(p[off:])
	total := off + n
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		h.done = true
		h.has = false
		return total, nil
	default:
		h.fail = err
		h.has = false
		return 0, err
	}
	if total == 0 {
		return 0, nil
	}
	h.pending = p[total-1]
	h.has = true
	return total - 1, nil
}

func (h *heldBody) err() error { return h.fail }

// putOptions carries the headers S3 stores with an object.
func putOptions(ctx *fasthttp.RequestCtx) s3source.PutOptions {
	h := &ctx.Request.Header
	o := s3source.PutOptions{
		ContentType:        string(h.ContentType()),
		ContentMD5:         string(h.Peek("Content-MD5")),
		CacheControl:       string(h.Peek("Cache-Control")),
		ContentDisposition: string(h.Peek("Content-Disposition")),
	}
	// aws-chunked describes the transfer, not the object.
	var enc []string
	for e := range strings.SplitSeq(string(h.Peek("Content-Encoding")), ",") {
		if e = strings.TrimSpace(e); e != "" && e != "aws-chunked" {
			enc = append(enc, e)
		}
	}
	o.ContentEncoding = strings.Join(enc, ",")
	o.ChecksumAlgorithm = checksumAlgorithm(h)
	for k, v := range h.All() {
		name := strings.ToLower(string(k))
		if meta, ok := strings.CutPrefix(name, "x-amz-meta-"); ok {
			if o.UserMetadata == nil {
				o.UserMetadata = map[string]string{}
			}
			o.UserMetadata[meta] = string(v)
		}
	}
	return o
}

// checksumAlgorithm is the checksum a PUT declared (as a header, a trailer
// or the SDK's algorithm header), for the bucket to store too.
func checksumAlgorithm(h *fasthttp.RequestHeader) string {
	for _, alg := range []string{"crc32", "crc32c", "crc64nvme", "sha1", "sha256"} {
		if len(h.Peek("x-amz-checksum-"+alg)) > 0 {
			return strings.ToUpper(alg)
		}
	}
	if alg, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(string(h.Peek("x-amz-trailer")))), "x-amz-checksum-"); ok {
		return strings.ToUpper(alg)
	}
	return strings.ToUpper(string(h.Peek("x-amz-sdk-checksum-algorithm")))
}

// localCopy writes an uploaded object into the store as it streams to the
// bucket. The local copy is best effort: a full disk abandons it and the
// upload goes on.
type localCopy struct {
	s   *Server
	ref store.Ref
	w   *store.Writer
}

func (s *Server) newLocalCopy(ref store.Ref, size int64) *localCopy {
	w, err := s.st.Create(ref, size, store.Meta{})
	if err != nil {
		s.log.Debug("upload not kept locally", "object", ref.String(), "error", err)
	}
	return &localCopy{s: s, ref: ref, w: w}
}

func (l *localCopy) Write(p []byte) (int, error) {
	if l.w != nil {
		if _, err := l.w.Write(p); err != nil {
			l.s.log.Debug("upload not kept locally", "object", l.ref.String(), "error", err)
			l.w.Abort()
			l.w = nil
		}
	}
	return len(p), nil
}

func (l *localCopy) abort() {
	if l != nil && l.w != nil {
		l.w.Abort()
	}
}

// commit keeps the acknowledged object locally; when that failed, an older
// local copy is dropped so it is never served in place of the new object.
func (l *localCopy) commit(m store.Meta) {
	if l.w != nil {
		l.w.SetMeta(m)
		if err := l.w.Commit(); err == nil {
			return
		}
	}
	if err := l.s.st.Remove(l.ref); err != nil {
		l.s.log.Warn("drop stale local copy", "object", l.ref.String(), "error", err)
	}
}

// deleteObject deletes upstream, then the local copy.
func (s *Server) deleteObject(r *request) error {
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	err := s.up.Delete(ctx, r.key)
	s.metrics.upstream.WithLabelValues("DeleteObject").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	if ref, ok := s.refOf(r.key); ok {
		if err := s.st.Remove(ref); err != nil {
			return err
		}
	}
	r.ctx.SetStatusCode(http.StatusNoContent)
	return nil
}

// maxDeleteKeys is S3's limit on one DeleteObjects request.
const maxDeleteKeys = 1000

// deleteObjects deletes up to 1000 keys, each as DeleteObject does (the
// bucket first, then the local copy), and reports each key's result.
func (s *Server) deleteObjects(r *request) error {
	var req xmlDeleteRequest
	if err := s.readXML(r, &req); err != nil {
		return err
	}
	if len(req.Objects) == 0 || len(req.Objects) > maxDeleteKeys {
		return errMalformedXML
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	out := xmlDeleteResult{Xmlns: s3NS}
	for _, o := range req.Objects {
		if !validKey(o.Key) || o.VersionID != "" {
			e := errInvalidKey
			if o.VersionID != "" {
				e = errNotImplemented
			}
			out.Errors = append(out.Errors, xmlDeleteError{Key: o.Key, Code: e.Code, Message: e.Message})
			continue
		}
		start := time.Now()
		err := s.up.Delete(ctx, o.Key)
		s.metrics.upstream.WithLabelValues("DeleteObject").Observe(time.Since(start).Seconds())
		if err == nil {
			if ref, ok := s.refOf(o.Key); ok {
				err = s.st.Remove(ref)
			}
		}
		if err != nil {
			e := s3ErrorOf(err)
			out.Errors = append(out.Errors, xmlDeleteError{Key: o.Key, Code: e.Code, Message: e.Message})
			continue
		}
		if !req.Quiet {
			out.Deleted = append(out.Deleted, xmlDeleted{Key: o.Key})
		}
	}
	return s.writeXML(r, http.StatusOK, out)
}
