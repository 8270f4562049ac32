package s3source

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// The multipart calls pass a client's multipart upload through to the
// bucket one request each; the bucket keeps the state and checks it
// (NoSuchUpload, InvalidPart, InvalidPartOrder, EntityTooSmall come back
// as *APIError).

// CreateMultipart starts a multipart upload of key with opt's headers
// (opt.ContentMD5 is not used) and returns its upload ID.
func (b *Bucket) CreateMultipart(ctx context.Context, key string, opt PutOptions) (string, error) {
	id, err := minio.Core{Client: b.c}.NewMultipartUpload(ctx, b.bucket, key, opt.minio())
	if err != nil {
		return "", translate("create multipart", key, err)
	}
	return id, nil
}

// UploadPart streams body, size bytes, as part number part of the upload,
// in one request and unbuffered as Put does, and returns the part's ETag.
// md5b64, when set, is sent as Content-MD5.
func (b *Bucket) UploadPart(ctx context.Context, key, uploadID string, part int, body io.Reader, size int64, md5b64 string) (string, error) {
	if size < 0 {
		return "", fmt.Errorf("upload part %d of %s: the size must be known", part, key)
	}
	w, src := watch(body)
	p, err := minio.Core{Client: b.c}.PutObjectPart(ctx, b.bucket, key, uploadID, part, src, size,
		minio.PutObjectPartOptions{Md5Base64: md5b64})
	if err != nil {
		if berr := w.failure(size); berr != nil {
			return "", fmt.Errorf("upload part %d of %s: read body: %w", part, key, berr)
		}
		return "", translate(fmt.Sprintf("upload part %d of", part), key, err)
	}
	return strings.Trim(p.ETag, `"`), nil
}

// CompletedPart names one uploaded part in a CompleteMultipart.
type CompletedPart struct {
	Number int
	ETag   string
}

// CompleteMultipart asks the bucket to assemble the parts, in the order
// given (the bucket checks it).
func (b *Bucket) CompleteMultipart(ctx context.Context, key, uploadID string, parts []CompletedPart) (PutResult, error) {
	cps := make([]minio.CompletePart, 0, len(parts))
	for _, p := range parts {
		cps = append(cps, minio.CompletePart{PartNumber: p.Number, ETag: p.ETag})
	}
	up, err := minio.Core{Client: b.c}.CompleteMultipartUpload(ctx, b.bucket, key, uploadID, cps, minio.PutObjectOptions{})
	if err != nil {
		return PutResult{}, translate("complete multipart", key, err)
	}
	return putResult(up), nil
}

// AbortMultipart ends the upload and drops its parts.
func (b *Bucket) AbortMultipart(ctx context.Context, key, uploadID string) error {
	err := minio.Core{Client: b.c}.AbortMultipartUpload(ctx, b.bucket, key, uploadID)
	return translate("abort multipart", key, err)
}

// Part is one uploaded part of a multipart upload.
type Part struct {
	Number       int
	ETag         string
	Size         int64
	LastModified time.Time
}

// PartsResult is one page of an upload's parts.
type PartsResult struct {
	Parts       []Part
	IsTruncated bool
	// NextMarker is the part number to give as marker for the next page.
	NextMarker   int
	MaxParts     int
	StorageClass string
}

// ListParts lists the upload's parts after part number marker, at most
// maxParts of them (maxParts <= 0 leaves it to the bucket: 1000), in one request.
func (b *Bucket) ListParts(ctx context.Context, key, uploadID string, marker, maxParts int) (PartsResult, error) {
	res, err := minio.Core{Client: b.c}.ListObjectParts(ctx, b.bucket, key, uploadID, marker, maxParts)
	if err != nil {
		return PartsResult{}, translate("list parts", key, err)
	}
	out := PartsResult{IsTruncated: res.IsTruncated, NextMarker: res.NextPartNumberMarker, MaxParts: res.MaxParts,
		StorageClass: res.StorageClass, Parts: make([]Part, 0, len(res.ObjectParts))}
	for _, p := range res.ObjectParts {
		out.Parts = append(out.Parts, Part{Number: p.PartNumber, ETag: strings.Trim(p.ETag, `"`), Size: p.Size,
			LastModified: p.LastModified})
	}
	return out, nil
}
