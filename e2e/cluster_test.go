//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// cluster is etcd plus a Kubernetes API server on loopback with a static
// token; kubeconfig points at it.
type cluster struct {
	kubeconfig string
	server     string
	token      string
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	etcdBin, apiBin := testenv.Tool(t, "etcd"), testenv.Tool(t, "kube-apiserver")
	dir := t.TempDir()
	client, peer := testenv.FreePort(t), testenv.FreePort(t)
	testenv.Start(t, "etcd", nil, etcdBin,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", client),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", client),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peer),
		"--log-level", "warn")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, pubPath := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	must(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	must(t, os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644))
	token := "e2e-admin-token"
	tokens := filepath.Join(dir, "tokens.csv")
	must(t, os.WriteFile(tokens, []byte(token+`,e2e-admin,1,"system:masters"`+"\n"), 0o600))

	port := testenv.FreePort(t)
	api := testenv.Start(t, "kube-apiserver", nil, apiBin,
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", client),
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(port),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", pubPath,
		"--service-account-signing-key-file", keyPath,
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		"--endpoint-reconciler-type", "none", // loopback advertise address

		"--v", "0")

	c := &cluster{server: fmt.Sprintf("https://127.0.0.1:%d", port), token: token, kubeconfig: filepath.Join(dir, "kubeconfig")}
	must(t, os.WriteFile(c.kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: admin, namespace: default}
current-context: e2e
`, c.server, token)), 0o600))

	hc := c.httpClient()
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequest("GET", c.server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if api.Exited() {
			t.Fatal("kube-apiserver exited")
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 90s: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return c
}

func (c *cluster) httpClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // loopback test server with a self-signed cert
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// binDirs are the directories buildBinary made; TestMain removes them when
// every test is done (each run built about 65 MB there).
var binDirs struct {
	mu   sync.Mutex
	dirs []string
}

// removeBinaries removes what buildBinary built.
func removeBinaries() {
	binDirs.mu.Lock()
	defer binDirs.mu.Unlock()
	for _, d := range binDirs.dirs {
		os.RemoveAll(d)
	}
	binDirs.dirs = nil
}

// buildBinary builds one of the product's binaries for the tests: with the
// race detector for tests, without it for benchmarks, whose figures it
// would skew.
func buildBinary(name, pkg string, race bool) (string, error) {
	dir, err := os.MkdirTemp("", "kache-e2e-bin-*")
	if err != nil {
		return "", err
	}
	binDirs.mu.Lock()
	binDirs.dirs = append(binDirs.dirs, dir)
	binDirs.mu.Unlock()
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", name, err, out)
	}
	return bin, nil
}

type binaries struct{ race, plain func() (string, error) }

func newBinaries(name, pkg string) binaries {
	return binaries{
		race:  sync.OnceValues(func() (string, error) { return buildBinary(name, pkg, true) }),
		plain: sync.OnceValues(func() (string, error) { return buildBinary(name, pkg, false) }),
	}
}

func (b binaries) get(t testing.TB) string {
	t.Helper()
	build := b.race
	if _, bench := t.(*testing.B); bench {
		build = b.plain
	}
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var (
	serviceBins = newBinaries("kache-service", "../central/cmd/kache-service")
	sidecarBins = newBinaries("kache-sidecar", "../sidecar/cmd/kache-sidecar")
)

func serviceBin(t testing.TB) string { return serviceBins.get(t) }

func sidecarBin(t testing.TB) string { return sidecarBins.get(t) }

func waitUntil(ctx context.Context, every time.Duration, f func() bool) bool {
	return testenv.WaitUntil(ctx, every, f)
}
