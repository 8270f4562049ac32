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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// toolsBin is where tools.sh put etcd, kube-apiserver and minio.
func toolsBin(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KACHE_TOOLS_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "kache-planner", "tools")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// need fails the test when a server binary is missing: e2e never skips
// silently; run e2e/tools.sh first.
func need(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(toolsBin(t), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not built: run e2e/tools.sh (%v)", name, err)
	}
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a child process whose output goes to a log file kept on failure.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	once sync.Once
	done chan struct{}
}

func start(t testing.TB, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("--- last lines of %s ---\n%s", name, strings.Join(lines, "\n"))
		}
	})
	return p
}

func (p *proc) kill() {
	p.once.Do(func() { _ = p.cmd.Process.Kill() })
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// cluster is etcd plus a Kubernetes API server on loopback with a static
// token; kubeconfig points at it.
type cluster struct {
	kubeconfig string
	server     string
	token      string
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	etcdBin, apiBin := need(t, "etcd"), need(t, "kube-apiserver")
	dir := t.TempDir()
	client, peer := freePort(t), freePort(t)
	start(t, "etcd", nil, etcdBin,
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

	port := freePort(t)
	api := start(t, "kube-apiserver", nil, apiBin,
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
		if api.exited() {
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

// buildService builds kache-service once per test binary: with the race
// detector for tests, without it for benchmarks, whose figures it would skew.
func buildService(race bool) (string, error) {
	dir, err := os.MkdirTemp("", "kache-e2e-bin-*")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kache-service")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../central/cmd/kache-service")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build kache-service: %v\n%s", err, out)
	}
	return bin, nil
}

var (
	buildRace  = sync.OnceValues(func() (string, error) { return buildService(true) })
	buildPlain = sync.OnceValues(func() (string, error) { return buildService(false) })
)

func serviceBin(t testing.TB) string {
	t.Helper()
	build := buildRace
	if _, bench := t.(*testing.B); bench {
		build = buildPlain
	}
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func waitUntil(ctx context.Context, every time.Duration, f func() bool) bool {
	for {
		if f() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}
