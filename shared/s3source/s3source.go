// Package s3source reads and writes kache's S3 bucket with minio-go. It is
// the only package that imports minio-go: central's crawler, the sidecar's
// planner and prefetch engine, and its S3 surface (which passes what it
// does not answer through to the bucket) see plain types. Errors are
// *APIError for the bucket's answers and wrap ErrUnavailable when the
// bucket cannot be reached.
package s3source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNotFound matches (errors.Is) the error for an absent object: an
// *APIError with Code NoSuchKey or NotFound.
var ErrNotFound = errors.New("object not found")

// ErrTooLarge is returned for an object over the read limit.
var ErrTooLarge = errors.New("object too large")

// Config names the bucket. Endpoint is a URL (http:// for MinIO on loopback);
// empty means AWS S3. Without static keys the usual AWS chain applies.
type Config struct {
	Endpoint  string
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	// MaxConns bounds idle connections kept to the store; the prefetch
	// engine sets it to its concurrency plus the demand lanes. Default 16.
	MaxConns int
	// MaxRetries is minio-go's retry count for a request that fails before
	// its body starts. Default 3.
	MaxRetries int
}

// Object is one object's metadata.
type Object struct {
	Key          string
	ETag         string
	Size         int64
	LastModified time.Time
	// Encrypted says the object is under a KMS or customer-provided key,
	// whose ETags are not the content's MD5.
	Encrypted bool
}

// Bucket reads and writes one bucket.
type Bucket struct {
	c      *minio.Client
	tr     *http.Transport
	bucket string
	// host and opts made c; listings make a client per call from them
	// (see core).
	host string
	opts minio.Options
}

// New connects (lazily) to the bucket.
func New(cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3source: no bucket name")
	}
	host, secure := "s3.amazonaws.com", true
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("s3source: endpoint %q is not a URL", cfg.Endpoint)
		}
		host, secure = u.Host, u.Scheme != "http"
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.IAM{Client: &http.Client{Timeout: 5 * time.Second}},
	})
	if cfg.AccessKey != "" && cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3source: transport: %w", err)
	}
	tr.MaxIdleConnsPerHost = cmpOr(cfg.MaxConns, 16)
	// Packs are zstd already; asking for gzip would only cost CPU.
	tr.DisableCompression = true
	opts := minio.Options{
		Creds:        creds,
		Secure:       secure,
		Region:       cmpOr(cfg.Region, "us-east-1"),
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   cmpOr(cfg.MaxRetries, 3),
		// Unsigned uploads carry a CRC32C trailer the bucket checks.
		TrailingHeaders: true,
	}
	c, err := minio.New(host, &opts)
	if err != nil {
		return nil, fmt.Errorf("s3source: client: %w", err)
	}
	return &Bucket{c: c, tr: tr, bucket: cfg.Bucket, host: host, opts: opts}, nil
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// Close closes the connections kept idle to the store (requests in flight
// finish); call it when nothing will use the Bucket any more.
func (b *Bucket) Close() { b.tr.CloseIdleConnections() }

// Name is the bucket name.
func (b *Bucket) Name() string { return b.bucket }

// List calls fn for every object under prefix (recursively). The listing is
// cancelled when List returns, so its goroutine never leaks.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(Object) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range b.c.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return translate("list", prefix, o.Err)
		}
		if err := fn(Object{Key: o.Key, ETag: o.ETag, Size: o.Size, LastModified: o.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// ReadAll reads a whole object of at most limit bytes.
func (b *Bucket) ReadAll(ctx context.Context, key string, limit int64) ([]byte, error) {
	obj, err := b.c.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, translate("get", key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		// GetObject is lazy: a missing key shows on the first read.
		return nil, translate("get", key, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, key, limit)
	}
	return data, nil
}

// Open starts a GET and returns the body with the object's metadata, so a
// caller can reserve budget by size before reading a byte of the body. The
// caller must Close the body.
//
// It is one request: minio-go's Core.GetObject answers with the response
// body and the headers' metadata. (GetObject followed by Object.Stat would
// send a HEAD first and the GET on the first Read, and hand every Read to
// the object's goroutine over a channel.)
func (b *Bucket) Open(ctx context.Context, key string) (io.ReadCloser, Object, error) {
	body, info, _, err := minio.Core{Client: b.c}.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Object{}, translate("get", key, err)
	}
	return body, objectOf(info), nil
}

// Stat is a HEAD of one object.
func (b *Bucket) Stat(ctx context.Context, key string) (Object, error) {
	st, err := b.c.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, translate("head", key, err)
	}
	return objectOf(st), nil
}

func objectOf(st minio.ObjectInfo) Object {
	return Object{Key: st.Key, ETag: strings.Trim(st.ETag, `"`), Size: st.Size, LastModified: st.LastModified,
		Encrypted: encrypted(st.Metadata)}
}

// encrypted reads S3's response headers: SSE-KMS (aws:kms, aws:kms:dsse)
// and SSE-C change the ETag; SSE-S3 (AES256) keeps it the MD5.
func encrypted(h http.Header) bool {
	if h == nil {
		return false
	}
	if h.Get("X-Amz-Server-Side-Encryption-Customer-Algorithm") != "" {
		return true
	}
	return strings.HasPrefix(h.Get("X-Amz-Server-Side-Encryption"), "aws:kms")
}
