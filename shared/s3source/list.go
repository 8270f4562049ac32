package s3source

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// ListParams is one ListObjectsV2 request. Keys and prefixes are raw: the
// request to the bucket always asks for encoding-type=url (minio-go does)
// and the answer comes back decoded, so a surface that was asked for URL
// encoding encodes its own answer.
type ListParams struct {
	Prefix            string
	Delimiter         string
	ContinuationToken string
	StartAfter        string
	// MaxKeys <= 0 leaves it to the bucket (1000).
	MaxKeys int
	// FetchOwner fills ListedObject.Owner.
	FetchOwner bool
}

// ListedObject is one object of a listing.
type ListedObject struct {
	Key          string
	ETag         string
	Size         int64
	LastModified time.Time
	StorageClass string
	// Owner is set when it was asked for (ListParams.FetchOwner).
	Owner Owner
}

// Owner is an object's owner as a listing reports it.
type Owner struct {
	ID          string
	DisplayName string
}

// ListResult is the bucket's answer to one ListObjectsV2 request.
type ListResult struct {
	Objects        []ListedObject
	CommonPrefixes []string
	IsTruncated    bool
	// NextContinuationToken is the bucket's, unchanged: give it back as
	// ListParams.ContinuationToken.
	NextContinuationToken string
	// KeyCount is len(Objects) + len(CommonPrefixes), as S3 counts.
	KeyCount int
	// MaxKeys is the limit the bucket applied.
	MaxKeys int
}

// ListV2 sends exactly one ListObjectsV2 request, so the bucket's
// continuation tokens pass through unchanged.
func (b *Bucket) ListV2(ctx context.Context, p ListParams) (ListResult, error) {
	core, err := b.core(ctx)
	if err != nil {
		return ListResult{}, err
	}
	res, err := core.ListObjectsV2(b.bucket, p.Prefix, p.StartAfter, p.ContinuationToken, p.Delimiter, p.MaxKeys)
	if err = listErr(ctx, "list", err); err != nil {
		return ListResult{}, err
	}
	out := ListResult{
		Objects:               listed(res.Contents, p.FetchOwner),
		CommonPrefixes:        prefixes(res.CommonPrefixes),
		IsTruncated:           res.IsTruncated,
		NextContinuationToken: res.NextContinuationToken,
		MaxKeys:               int(res.MaxKeys),
	}
	out.KeyCount = len(out.Objects) + len(out.CommonPrefixes)
	return out, nil
}

// ListV1Params is one ListObjects (version 1) request; keys are raw as in
// ListParams.
type ListV1Params struct {
	Prefix    string
	Delimiter string
	Marker    string
	// MaxKeys <= 0 leaves it to the bucket (1000).
	MaxKeys int
}

// ListV1Result is the bucket's answer to one ListObjects request.
type ListV1Result struct {
	Objects        []ListedObject
	CommonPrefixes []string
	IsTruncated    bool
	// NextMarker is the bucket's; S3 sends it only with a delimiter (a
	// client goes on from the last key otherwise).
	NextMarker string
	MaxKeys    int
}

// ListV1 sends exactly one ListObjects (version 1) request.
func (b *Bucket) ListV1(ctx context.Context, p ListV1Params) (ListV1Result, error) {
	core, err := b.core(ctx)
	if err != nil {
		return ListV1Result{}, err
	}
	res, err := core.ListObjects(b.bucket, p.Prefix, p.Marker, p.Delimiter, p.MaxKeys)
	if err = listErr(ctx, "list v1", err); err != nil {
		return ListV1Result{}, err
	}
	return ListV1Result{
		Objects:        listed(res.Contents, false),
		CommonPrefixes: prefixes(res.CommonPrefixes),
		IsTruncated:    res.IsTruncated,
		NextMarker:     res.NextMarker,
		MaxKeys:        int(res.MaxKeys),
	}, nil
}

// listErr translates a listing's error. The listing ran under a context
// minio-go cannot see (below), so a cancelled ctx shows as a failed round
// trip: report the context's error then.
func listErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", op, cerr)
	}
	return translate(op, "", err)
}

func listed(objs []minio.ObjectInfo, owner bool) []ListedObject {
	out := make([]ListedObject, 0, len(objs))
	for _, o := range objs {
		lo := ListedObject{Key: o.Key, ETag: strings.Trim(o.ETag, `"`), Size: o.Size, LastModified: o.LastModified,
			StorageClass: o.StorageClass}
		if owner {
			lo.Owner = Owner{ID: o.Owner.ID, DisplayName: o.Owner.DisplayName}
		}
		out = append(out, lo)
	}
	return out
}

func prefixes(cps []minio.CommonPrefix) []string {
	out := make([]string, 0, len(cps))
	for _, cp := range cps {
		out = append(out, cp.Prefix)
	}
	return out
}

// core is a client for one call of minio-go's Core listings, which take no
// context: its transport puts ctx on every request, so cancelling ctx ends
// the request in flight. minio-go then retries the round trip as a
// network failure, each attempt failing at once, so a cancelled listing
// returns within its retry backoff (about a second). The client shares
// the Bucket's transport and credentials; making one costs no request.
func (b *Bucket) core(ctx context.Context) (minio.Core, error) {
	if err := ctx.Err(); err != nil {
		return minio.Core{}, err
	}
	opts := b.opts
	opts.Transport = ctxTransport{base: b.opts.Transport, ctx: ctx}
	c, err := minio.New(b.host, &opts)
	if err != nil {
		return minio.Core{}, fmt.Errorf("s3source: client: %w", err)
	}
	return minio.Core{Client: c}, nil
}

// ctxTransport sends every request under ctx.
type ctxTransport struct {
	base http.RoundTripper
	ctx  context.Context
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.ctx.Err(); err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	return t.base.RoundTrip(r.WithContext(t.ctx))
}
