package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// RangeSource is a Source that can also GET a byte range of an object under
// a condition (s3source.Bucket is one). With it the engine fetches an object
// over Config.SplitBytes over several connections (Config.SplitParts).
type RangeSource interface {
	// Get answers a changed object under IfMatch with an
	// *s3source.APIError of Status 412.
	Get(ctx context.Context, key string, o s3source.GetOptions) (io.ReadCloser, s3source.ObjectInfo, error)
}

// errChanged means a part of a split download came from another version of
// the object than its first response (or the bucket said so with a 412):
// the whole download is tried again.
var errChanged = errors.New("object changed during a split download")

// splits reports whether the engine splits downloads at all.
func (e *Engine) splits() bool { return e.ranges != nil && e.cfg.SplitParts > 1 }

// copyParts writes obj into w in parts equal ranges at once: the first from
// body (the first GET's, which it stops reading at the range's end), the
// others from ranged GETs on their own goroutines, each pinned to obj's ETag
// (If-Match). The first part to fail cancels the others; copyParts returns
// when every part has, with the bytes written and the first failure. first
// wraps the writer of the object's first bytes.
func (e *Engine) copyParts(ctx context.Context, r store.Ref, body io.ReadCloser, obj s3source.Object, w *store.Writer,
	parts int, first func(io.Writer) io.Writer) (int64, error) {
	secs := make([]*store.Section, parts)
	for i := range parts {
		off, end := obj.Size*int64(i)/int64(parts), obj.Size*int64(i+1)/int64(parts)
		var err error
		if secs[i], err = w.Section(off, end-off); err != nil {
			return 0, err
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A failed part stops the first body too, which the first GET's
	// context does not end.
	stop := context.AfterFunc(ctx, func() { body.Close() })
	defer stop()
	var got atomic.Int64
	var wg sync.WaitGroup
	key := r.ObjectKey(e.cfg.Prefix)
	for i := 1; i < parts; i++ {
		off, end := obj.Size*int64(i)/int64(parts), obj.Size*int64(i+1)/int64(parts)
		wg.Go(func() {
			n, err := e.fetchPart(ctx, key, obj, off, end-off, secs[i])
			got.Add(n)
			if err != nil {
				cancel(err)
			}
		})
	}
	n0 := obj.Size / int64(parts)
	n, err := copyRange(first(secs[0]), body, n0)
	got.Add(n)
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	e.m.splits.WithLabelValues(splitResult(context.Cause(ctx))).Inc()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return got.Load(), fmt.Errorf("split download: %w", err)
	}
	if ctx.Err() != nil {
		// The download itself was cancelled (Stop, or nobody waits).
		return got.Load(), ctx.Err()
	}
	return got.Load(), nil
}

// fetchPart GETs bytes [off, off+n) of key, pinned to obj's version, into
// sec.
func (e *Engine) fetchPart(ctx context.Context, key string, obj s3source.Object, off, n int64, sec *store.Section) (int64, error) {
	rc, info, err := e.ranges.Get(ctx, key, s3source.GetOptions{
		Range:   &s3source.ByteRange{Start: off, End: off + n - 1},
		IfMatch: `"` + obj.ETag + `"`,
	})
	if err != nil {
		var api *s3source.APIError
		if errors.As(err, &api) && api.Status == http.StatusPreconditionFailed {
			return 0, fmt.Errorf("%w: %s: %w", errChanged, key, err)
		}
		return 0, fmt.Errorf("range %d+%d: %w", off, n, err)
	}
	defer rc.Close()
	// The bucket checked If-Match; the answer must still be that version's
	// range.
	if strings.Trim(info.ETag, `"`) != obj.ETag || info.Size != obj.Size || info.ContentLength >= 0 && info.ContentLength != n {
		return 0, fmt.Errorf("%w: %s: range %d+%d answered %d bytes of %d (ETag %s), want %d (ETag %s)",
			errChanged, key, off, n, info.ContentLength, info.Size, info.ETag, obj.Size, obj.ETag)
	}
	return copyRange(sec, rc, n)
}

// copyRange copies exactly n bytes of src to dst; fewer is an error.
func copyRange(dst io.Writer, src io.Reader, n int64) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	got, err := io.CopyBuffer(dst, io.LimitReader(src, n), *buf)
	if err == nil && got < n {
		err = fmt.Errorf("%w: %d of %d bytes", io.ErrUnexpectedEOF, got, n)
	}
	return got, err
}

func splitResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errChanged):
		return "changed"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "failed"
}
