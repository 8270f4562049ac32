// Package bucket reads kache's S3 bucket with minio-go. It is the only
// central package that imports minio-go; the crawler sees plain types.
package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNotFound is returned for an absent object.
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
}

// Object is one listed object.
type Object struct {
	Key          string
	ETag         string
	Size         int64
	LastModified time.Time
}

// Bucket reads one bucket.
type Bucket struct {
	c      *minio.Client
	bucket string
}

// New connects (lazily) to the bucket.
func New(cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("bucket: no bucket name")
	}
	host, secure := "s3.amazonaws.com", true
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("bucket: endpoint %q is not a URL", cfg.Endpoint)
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
		return nil, fmt.Errorf("bucket: transport: %w", err)
	}
	tr.MaxIdleConnsPerHost = 16
	c, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Region:       cmpOr(cfg.Region, "us-east-1"),
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   3,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket: client: %w", err)
	}
	return &Bucket{c: c, bucket: cfg.Bucket}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// List calls fn for every object under prefix (recursively). The listing is
// cancelled when List returns, so its goroutine never leaks.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(Object) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range b.c.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list %s: %w", prefix, o.Err)
		}
		if err := fn(Object{Key: o.Key, ETag: o.ETag, Size: o.Size, LastModified: o.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Get reads a whole object of at most limit bytes.
func (b *Bucket) Get(ctx context.Context, key string, limit int64) ([]byte, error) {
	obj, err := b.c.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, b.translate(key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		// GetObject is lazy: a missing key shows on the first read.
		return nil, b.translate(key, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, key, limit)
	}
	return data, nil
}

func (b *Bucket) translate(key string, err error) error {
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("get %s: %w", key, err)
}
