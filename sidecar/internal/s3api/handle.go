package s3api

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/sidecar/internal/sigv4"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// request is one parsed S3 request.
type request struct {
	ctx    *fasthttp.RequestCtx
	id     string
	op     string
	bucket string
	key    string
	auth   *sigv4.Auth
}

// handle authenticates, routes and answers one request; every error ends in
// writeError, and every request is counted and logged once.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	r := &request{ctx: ctx, id: s.requestID(), op: "unknown"}
	ctx.Response.Header.Set("x-amz-request-id", r.id)
	err := s.route(r)
	if err != nil {
		s.writeError(r, err)
	}
	status := ctx.Response.StatusCode()
	s.metrics.requests.WithLabelValues(r.op, statusClass(status)).Inc()
	s.log.Debug("s3 request", "request_id", r.id, "op", r.op, "method", string(ctx.Method()),
		"key", r.key, "status", status, "duration_ms", time.Since(start).Milliseconds())
}

func (s *Server) route(r *request) error {
	ctx := r.ctx
	bucket, key, err := splitPath(ctx.Request.URI().PathOriginal())
	if err != nil {
		return err
	}
	r.bucket, r.key = bucket, key
	auth, err := s.auth.Verify(sigv4.Request{
		Method:   string(ctx.Method()),
		RawPath:  string(ctx.Request.URI().PathOriginal()),
		RawQuery: string(ctx.Request.URI().QueryString()),
		Host:     string(ctx.Request.Header.Host()),
		Header:   header{&ctx.Request.Header},
	})
	if err != nil {
		return err
	}
	r.auth = auth
	q := ctx.QueryArgs()
	method := string(ctx.Method())
	switch {
	case bucket == "":
		r.op = "ListBuckets"
		if method != http.MethodGet {
			return errMethodNotAllowd
		}
		return s.listBuckets(r)
	case bucket != s.cfg.Bucket:
		r.op = "NoSuchBucket"
		return errNoSuchBucket
	case key == "":
		return s.routeBucket(r, method, q)
	}
	return s.routeObject(r, method, q)
}

func (s *Server) routeBucket(r *request, method string, q *fasthttp.Args) error {
	switch method {
	case http.MethodHead:
		r.op = "HeadBucket"
		return nil
	case http.MethodPost:
		if q.Has("delete") {
			r.op = "DeleteObjects"
			return s.deleteObjects(r)
		}
	case http.MethodGet:
		switch {
		case q.Has("location"):
			r.op = "GetBucketLocation"
			return s.writeXML(r, http.StatusOK, xmlLocation{Xmlns: s3NS, Location: s.cfg.Region})
		case string(q.Peek("list-type")) == "2":
			r.op = "ListObjectsV2"
			return s.listV2(r, q)
		case onlyListArgs(q):
			r.op = "ListObjects"
			return s.listV1(r, q)
		}
	}
	r.op = "Bucket" + method
	return errNotImplemented
}

// onlyListArgs reports whether a bucket GET carries no sub-resource other
// than ListObjects' own parameters.
func onlyListArgs(q *fasthttp.Args) bool {
	for k := range q.All() {
		switch string(k) {
		case "prefix", "delimiter", "marker", "max-keys", "encoding-type":
		default:
			return false
		}
	}
	return true
}

func (s *Server) routeObject(r *request, method string, q *fasthttp.Args) error {
	uploadID := string(q.Peek("uploadId"))
	switch method {
	case http.MethodGet:
		if uploadID != "" {
			r.op = "ListParts"
			return s.listParts(r, q, uploadID)
		}
		if hasSubresource(q, "partNumber", "response-content-type", "response-cache-control",
			"response-content-disposition", "response-content-encoding", "response-expires", "response-content-language") {
			break
		}
		r.op = "GetObject"
		return s.getObject(r, false)
	case http.MethodHead:
		if hasSubresource(q, "partNumber") {
			break
		}
		r.op = "HeadObject"
		return s.getObject(r, true)
	case http.MethodPut:
		if len(r.ctx.Request.Header.Peek("x-amz-copy-source")) > 0 {
			r.op = "CopyObject"
			break
		}
		if uploadID != "" {
			r.op = "UploadPart"
			return s.uploadPart(r, q, uploadID)
		}
		if hasSubresource(q) {
			break
		}
		r.op = "PutObject"
		return s.putObject(r)
	case http.MethodPost:
		if q.Has("uploads") && uploadID == "" {
			r.op = "CreateMultipartUpload"
			return s.createMultipart(r)
		}
		if uploadID != "" {
			r.op = "CompleteMultipartUpload"
			return s.completeMultipart(r, uploadID)
		}
	case http.MethodDelete:
		if uploadID != "" {
			r.op = "AbortMultipartUpload"
			return s.abortMultipart(r, uploadID)
		}
		if hasSubresource(q) {
			break
		}
		r.op = "DeleteObject"
		return s.deleteObject(r)
	}
	if r.op == "unknown" {
		r.op = "Object" + method
	}
	return errNotImplemented
}

// hasSubresource reports whether q has a parameter other than the presigned
// URL's own and those allowed.
func hasSubresource(q *fasthttp.Args, allowed ...string) bool {
	for k := range q.All() {
		name := string(k)
		if strings.HasPrefix(name, "X-Amz-") || strings.HasPrefix(name, "x-id") || slices.Contains(allowed, name) {
			continue
		}
		return true
	}
	return false
}

// splitPath reads /bucket/key from the raw path. Keys that could name
// something other than themselves on a filesystem (".." or "." segments,
// empty segments, a leading slash, encoded slashes, backslashes, control
// characters) are refused before anything else happens.
func splitPath(raw []byte) (bucket, key string, err error) {
	if len(raw) == 0 || raw[0] != '/' {
		return "", "", errInvalidKey
	}
	p := string(raw[1:])
	rawBucket, rawKey, _ := strings.Cut(p, "/")
	if bucket, err = url.PathUnescape(rawBucket); err != nil || strings.ContainsAny(bucket, "/\\") {
		return "", "", errInvalidKey
	}
	if rawKey == "" {
		return bucket, "", nil
	}
	lower := strings.ToLower(rawKey)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return "", "", errInvalidKey
	}
	key, err = url.PathUnescape(rawKey)
	if err != nil || !validKey(key) {
		return "", "", errInvalidKey
	}
	return bucket, key, nil
}

func validKey(key string) bool {
	if len(key) > 1024 || !utf8.ValidString(key) || strings.ContainsRune(key, '\\') {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] == 0x7f {
			return false
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// refOf says which store object key names, if any.
func (s *Server) refOf(key string) (store.Ref, bool) {
	if crate, ck, ok := layout.ParsePackKey(s.cfg.Prefix, key); ok {
		r := store.Ref{Kind: store.Pack, Crate: crate, CacheKey: ck}
		return r, r.Valid()
	}
	if crate, ck, ok := layout.ParseEntryManifestKey(s.cfg.Prefix, key); ok {
		r := store.Ref{Kind: store.EntryManifest, Crate: crate, CacheKey: ck}
		return r, r.Valid()
	}
	return store.Ref{}, false
}

// header gives sigv4 the request's headers by lowercase name, repeated
// headers joined with commas as SigV4 canonicalises them.
type header struct{ h *fasthttp.RequestHeader }

func (h header) Get(name string) string {
	switch name {
	case "host":
		return string(h.h.Host())
	case "content-length":
		if n := h.h.ContentLength(); n >= 0 {
			return string(h.h.Peek("Content-Length"))
		}
		return ""
	}
	vals := h.h.PeekAll(name)
	switch len(vals) {
	case 0:
		return ""
	case 1:
		return string(vals[0])
	}
	return string(bytes.Join(vals, []byte(",")))
}

// writeError answers err in S3's shape. HEAD answers carry no body.
func (s *Server) writeError(r *request, err error) {
	e := s3ErrorOf(err)
	if e == errInternal {
		s.log.Error("s3 request failed", "request_id", r.id, "op", r.op, "key", r.key, "error", err)
	} else if e.Status >= 500 {
		s.log.Warn("s3 request failed", "request_id", r.id, "op", r.op, "key", r.key, "error", err)
	}
	ctx := r.ctx
	if n := ctx.Request.Header.ContentLength(); n > 0 || n == -1 {
		// The body may be partly unread: never try to skip it.
		ctx.SetConnectionClose()
	}
	ctx.Response.ResetBody()
	if e.Status != http.StatusNotModified {
		ctx.Response.Header.Del("ETag")
		ctx.Response.Header.Del("Last-Modified")
	}
	ctx.Response.Header.Del("Content-Range")
	ctx.SetStatusCode(e.Status)
	if e.Status == http.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	if e == errInvalidRange || e.Code == "InvalidRange" {
		if size, ok := r.ctx.UserValue(sizeKey).(int64); ok {
			ctx.Response.Header.Set("Content-Range", "bytes */"+itoa(size))
		}
	}
	if ctx.IsHead() || e.Status == http.StatusNotModified {
		ctx.Response.SkipBody = true
		return
	}
	resource := "/" + r.bucket
	if r.key != "" {
		resource += "/" + r.key
	}
	body := xmlError{Code: e.Code, Message: e.Message, Key: r.key, BucketName: r.bucket, Resource: resource, RequestID: r.id, HostID: "kache-sidecar"}
	_ = s.writeXML(r, e.Status, body)
}

// sizeKey carries an object's size to the error writer for InvalidRange.
const sizeKey = "s3api.size"

func (s *Server) writeXML(r *request, status int, v any) error {
	b, err := xml.Marshal(v)
	if err != nil {
		return errInternal
	}
	ctx := r.ctx
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/xml")
	ctx.Response.SetBodyRaw(append([]byte(xml.Header), b...))
	return nil
}

// httpError answers what the HTTP layer refuses itself (a stalled or
// oversized request, too many headers, a panic) in S3's shape.
func (s *Server) httpError(ctx *fasthttp.RequestCtx, status int, msg string) {
	code := map[int]string{
		http.StatusBadRequest:                  "BadRequest",
		http.StatusUnauthorized:                "AccessDenied",
		http.StatusNotFound:                    "NoSuchKey",
		http.StatusMethodNotAllowed:            "MethodNotAllowed",
		http.StatusRequestTimeout:              "RequestTimeout",
		http.StatusRequestEntityTooLarge:       "EntityTooLarge",
		http.StatusRequestHeaderFieldsTooLarge: "RequestHeaderSectionTooLarge",
		http.StatusServiceUnavailable:          "SlowDown",
	}[status]
	if code == "" {
		code = "InternalError"
	}
	e := &s3Error{Status: status, Code: code, Message: msg}
	if status == http.StatusRequestEntityTooLarge {
		e = errEntityTooLarge
	}
	s.metrics.refused.WithLabelValues(e.Code).Inc()
	r := &request{ctx: ctx, id: s.requestID(), op: "refused"}
	ctx.Response.Header.Set("x-amz-request-id", r.id)
	s.writeError(r, e)
}

func statusClass(code int) string {
	switch {
	case code >= 500:
		return "5xx"
	case code >= 400:
		return itoa(int64(code))
	case code >= 300:
		return "3xx"
	}
	return "2xx"
}
