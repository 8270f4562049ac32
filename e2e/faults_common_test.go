//go:build e2e

package e2e

import (
	"context"
	"io"
	"testing"

	"github.com/minio/minio-go/v7"
)

// faultsCommon asserts what every fault scenario does: every build
// finished with each unit either served intact or compiled, no corrupt
// read, nothing acknowledged lost from the bucket.
func faultsCommon(t *testing.T, results []buildResult, check bucketCheck) {
	t.Helper()
	for _, r := range results {
		if !r.Done {
			t.Errorf("build %d on runner %d did not finish: errors %v", r.Seq, r.Runner, r.Errors)
		} else if r.LocalHits+r.RemoteHits+r.Misses != r.Units {
			t.Errorf("build %d: %d units, %d hits and %d misses", r.Seq, r.Units, r.LocalHits+r.RemoteHits, r.Misses)
		}
		if r.Corrupt != 0 {
			t.Errorf("build %d read %d objects with bytes other than uploaded: %v", r.Seq, r.Corrupt, r.Errors)
		}
	}
	if check.Keys == 0 || len(check.Lost) != 0 {
		t.Errorf("%d acknowledged uploads, %d not in the bucket as acknowledged: %v", check.Keys, len(check.Lost), check.Lost)
	}
}

// faultBucketBytes reads one object of the test bucket.
func faultBucketBytes(ctx context.Context, f *fleet, key string) ([]byte, error) {
	obj, err := f.objects.client.GetObject(ctx, testBucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}
