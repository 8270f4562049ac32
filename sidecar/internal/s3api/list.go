package s3api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/s3source"
)

// Listings always come from the bucket: a local view would be stale.

func (s *Server) listBuckets(r *request) error {
	var out xmlListBuckets
	out.Xmlns = s3NS
	out.Owner.ID, out.Owner.DisplayName = "kache-sidecar", "kache-sidecar"
	out.Buckets.Bucket = []xmlBucket{{Name: s.cfg.Bucket, CreationDate: s3Time(time.Unix(0, 0))}}
	return s.writeXML(r, http.StatusOK, out)
}

// maxKeys reads max-keys (S3's default and ceiling: 1000).
func maxKeys(q *fasthttp.Args) (int, error) {
	v := q.Peek("max-keys")
	if len(v) == 0 {
		return 1000, nil
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, errorf(http.StatusBadRequest, "InvalidArgument", "max-keys must be a non-negative integer")
	}
	return min(n, 1000), nil
}

func (s *Server) listV2(r *request, q *fasthttp.Args) error {
	n, err := maxKeys(q)
	if err != nil {
		return err
	}
	urlEnc := string(q.Peek("encoding-type")) == "url"
	p := s3source.ListParams{
		Prefix:            string(q.Peek("prefix")),
		Delimiter:         string(q.Peek("delimiter")),
		ContinuationToken: string(q.Peek("continuation-token")),
		StartAfter:        string(q.Peek("start-after")),
		MaxKeys:           n,
		FetchOwner:        string(q.Peek("fetch-owner")) == "true",
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.up.ListV2(ctx, p)
	s.metrics.upstream.WithLabelValues("ListObjectsV2").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	out := xmlListV2{
		Xmlns: s3NS, Name: s.cfg.Bucket, Prefix: encodeName(p.Prefix, urlEnc), StartAfter: encodeName(p.StartAfter, urlEnc),
		ContinuationToken: p.ContinuationToken, NextContinuationToken: res.NextContinuationToken,
		MaxKeys: n, Delimiter: encodeName(p.Delimiter, urlEnc), IsTruncated: res.IsTruncated,
		KeyCount: len(res.Objects) + len(res.CommonPrefixes),
	}
	if urlEnc {
		out.EncodingType = "url"
	}
	out.Contents, out.CommonPrefixes = listed(res.Objects, res.CommonPrefixes, urlEnc)
	return s.writeXML(r, http.StatusOK, out)
}

func (s *Server) listV1(r *request, q *fasthttp.Args) error {
	n, err := maxKeys(q)
	if err != nil {
		return err
	}
	urlEnc := string(q.Peek("encoding-type")) == "url"
	p := s3source.ListV1Params{
		Prefix:    string(q.Peek("prefix")),
		Delimiter: string(q.Peek("delimiter")),
		Marker:    string(q.Peek("marker")),
		MaxKeys:   n,
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.up.ListV1(ctx, p)
	s.metrics.upstream.WithLabelValues("ListObjects").Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	out := xmlListV1{
		Xmlns: s3NS, Name: s.cfg.Bucket, Prefix: encodeName(p.Prefix, urlEnc), Marker: encodeName(p.Marker, urlEnc),
		NextMarker: encodeName(res.NextMarker, urlEnc), MaxKeys: n, Delimiter: encodeName(p.Delimiter, urlEnc),
		IsTruncated: res.IsTruncated,
	}
	if urlEnc {
		out.EncodingType = "url"
	}
	out.Contents, out.CommonPrefixes = listed(res.Objects, res.CommonPrefixes, urlEnc)
	return s.writeXML(r, http.StatusOK, out)
}

func listed(objs []s3source.ListedObject, prefixes []string, urlEnc bool) ([]xmlObject, []xmlPrefix) {
	contents := make([]xmlObject, 0, len(objs))
	for _, o := range objs {
		sc := o.StorageClass
		if sc == "" {
			sc = "STANDARD"
		}
		contents = append(contents, xmlObject{Key: encodeName(o.Key, urlEnc), LastModified: s3Time(o.LastModified),
			ETag: quoteETag(o.ETag), Size: o.Size, StorageClass: sc})
	}
	cps := make([]xmlPrefix, 0, len(prefixes))
	for _, p := range prefixes {
		cps = append(cps, xmlPrefix{Prefix: encodeName(p, urlEnc)})
	}
	return contents, cps
}
