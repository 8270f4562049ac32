package s3api

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/s3source"
)

// Multipart uploads pass through to the bucket. The completed object is not
// kept locally (its parts went straight upstream), so a local copy of the
// key from before is dropped.

func (s *Server) createMultipart(r *request) error {
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	opts := putOptions(r.ctx)
	// Part checksums are verified here but not forwarded, so the upload
	// must not ask the bucket to require them.
	opts.ChecksumAlgorithm = ""
	id, err := s.up.CreateMultipart(ctx, r.key, opts)
	s.metrics.upstream.WithLabelValues("CreateMultipartUpload").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	return s.writeXML(r, http.StatusOK, xmlInitiateMultipart{Xmlns: s3NS, Bucket: s.cfg.Bucket, Key: r.key, UploadID: id})
}

func (s *Server) uploadPart(r *request, q *fasthttp.Args, uploadID string) error {
	part, err := strconv.Atoi(string(q.Peek("partNumber")))
	if err != nil || part < 1 || part > 10000 {
		return errorf(http.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
	}
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
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	etag, err := s.up.UploadPart(ctx, r.key, uploadID, part, body, size, string(r.ctx.Request.Header.Peek("Content-MD5")))
	s.metrics.upstream.WithLabelValues("UploadPart").Observe(time.Since(start).Seconds())
	if berr := body.err(); berr != nil {
		err = berr
	}
	if err != nil {
		return err
	}
	s.metrics.bytesIn.Add(float64(size))
	r.ctx.Response.Header.Set("ETag", quoteETag(etag))
	r.ctx.SetStatusCode(http.StatusOK)
	return nil
}

func (s *Server) completeMultipart(r *request, uploadID string) error {
	var req xmlCompleteRequest
	if err := s.readXML(r, &req); err != nil {
		return err
	}
	if len(req.Parts) == 0 {
		return errMalformedXML
	}
	parts := make([]s3source.CompletedPart, 0, len(req.Parts))
	for _, p := range req.Parts {
		parts = append(parts, s3source.CompletedPart{Number: p.PartNumber, ETag: p.ETag})
	}
	if !sort.SliceIsSorted(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number }) {
		return errorf(http.StatusBadRequest, "InvalidPartOrder", "The list of parts was not in ascending order.")
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.up.CompleteMultipart(ctx, r.key, uploadID, parts)
	s.metrics.upstream.WithLabelValues("CompleteMultipartUpload").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	if ref, ok := s.refOf(r.key); ok {
		if err := s.st.Remove(ref); err != nil {
			s.log.Warn("drop stale local copy", "object", ref.String(), "error", err)
		}
	}
	if res.VersionID != "" {
		r.ctx.Response.Header.Set("x-amz-version-id", res.VersionID)
	}
	return s.writeXML(r, http.StatusOK, xmlCompleteResult{Xmlns: s3NS, Location: "/" + s.cfg.Bucket + "/" + r.key,
		Bucket: s.cfg.Bucket, Key: r.key, ETag: quoteETag(res.ETag)})
}

func (s *Server) abortMultipart(r *request, uploadID string) error {
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	err := s.up.AbortMultipart(ctx, r.key, uploadID)
	s.metrics.upstream.WithLabelValues("AbortMultipartUpload").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	r.ctx.SetStatusCode(http.StatusNoContent)
	return nil
}

func (s *Server) listParts(r *request, q *fasthttp.Args, uploadID string) error {
	marker, _ := strconv.Atoi(string(q.Peek("part-number-marker")))
	maxParts := 1000
	if v := q.Peek("max-parts"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, "InvalidArgument", "max-parts must be a non-negative integer")
		}
		maxParts = min(n, 1000)
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.up.ListParts(ctx, r.key, uploadID, marker, maxParts)
	s.metrics.upstream.WithLabelValues("ListParts").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	out := xmlListParts{Xmlns: s3NS, Bucket: s.cfg.Bucket, Key: r.key, UploadID: uploadID, PartNumberMarker: marker,
		NextPartNumberMarker: res.NextMarker, MaxParts: maxParts, IsTruncated: res.IsTruncated}
	for _, p := range res.Parts {
		out.Parts = append(out.Parts, xmlPart{PartNumber: p.Number, LastModified: s3Time(p.LastModified), ETag: quoteETag(p.ETag), Size: p.Size})
	}
	return s.writeXML(r, http.StatusOK, out)
}

// readXML reads a request's XML body (verified, at most MaxXMLBytes) into v.
func (s *Server) readXML(r *request, v any) error {
	body, err := s.openBody(r)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(body, s.cfg.MaxXMLBytes+1))
	if err != nil {
		return err
	}
	if int64(len(data)) > s.cfg.MaxXMLBytes {
		return errorf(http.StatusBadRequest, "MaxMessageLengthExceeded", "Your request was too big.")
	}
	if err := xml.Unmarshal(data, v); err != nil {
		return errMalformedXML
	}
	return nil
}
