package testenv

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO's root credentials and the bucket StartMinio creates.
const (
	MinioUser   = "kache-e2e"
	MinioSecret = "kache-e2e-secret"
	MinioBucket = "kache"
	MinioRegion = "us-east-1"
)

// Minio is a MinIO server on loopback with one bucket (MinioBucket). It can
// be stopped and restarted on the same port and data directory.
type Minio struct {
	// Host is 127.0.0.1:port; Endpoint is http://Host.
	Host     string
	Endpoint string
	Bucket   string
	// Client is a minio-go client for seeding and inspecting the bucket;
	// its idle connections are closed when the test ends.
	Client *minio.Client

	t       testing.TB
	bin     string
	dataDir string
	console int
	proc    *Proc
	http    *http.Client
}

// StartMinio starts MinIO (built by e2e/tools.sh; see Tool for what happens
// when it is missing) and creates the bucket.
func StartMinio(t testing.TB) *Minio {
	t.Helper()
	m := &Minio{
		t:       t,
		bin:     Tool(t, "minio"),
		dataDir: filepath.Join(t.TempDir(), "data"),
		console: FreePort(t),
		Bucket:  MinioBucket,
		// No keep-alive: nothing idle outlives the test (goleak).
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	m.Host = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	m.Endpoint = "http://" + m.Host
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	m.Client, err = minio.New(m.Host, &minio.Options{Creds: credentials.NewStaticV4(MinioUser, MinioSecret, ""),
		Region: MinioRegion, BucketLookup: minio.BucketLookupPath, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	m.Restart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Client.MakeBucket(ctx, m.Bucket, minio.MakeBucketOptions{Region: MinioRegion}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return m
}

// Env is MinIO's credentials as AWS environment variables.
func (m *Minio) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + MinioUser, "AWS_SECRET_ACCESS_KEY=" + MinioSecret, "AWS_REGION=" + MinioRegion}
}

// Stop kills the server (SIGKILL: connections drop mid-transfer, as in a
// crash) and waits for it to exit. The data directory is kept.
func (m *Minio) Stop() {
	if m.proc != nil {
		m.proc.Kill()
	}
}

// Restart starts the server (again) on the same port and data directory
// and waits until it is ready. It is what StartMinio calls first.
func (m *Minio) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	m.proc = Start(m.t, "minio", []string{"MINIO_ROOT_USER=" + MinioUser, "MINIO_ROOT_PASSWORD=" + MinioSecret, "MINIO_BROWSER=off"},
		m.bin, "server", m.dataDir, "--address", m.Host, "--console-address", fmt.Sprintf("127.0.0.1:%d", m.console), "--quiet")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !WaitUntil(ctx, 100*time.Millisecond, func() bool { return m.Ready() || m.proc.Exited() }) || m.proc.Exited() {
		t.Fatalf("minio not ready on %s:\n%s", m.Host, m.proc.Tail(20))
	}
}

// Ready reports whether the server answers its readiness probe.
func (m *Minio) Ready() bool {
	resp, err := m.http.Get(m.Endpoint + "/minio/health/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
