package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// policyTB records how Tool ended a test instead of ending this one.
type policyTB struct {
	testing.TB
	ended string
}

func (p *policyTB) Helper()           {}
func (p *policyTB) Fatal(args ...any) { p.ended = "fatal"; runtime.Goexit() }
func (p *policyTB) Skip(args ...any)  { p.ended = "skip"; runtime.Goexit() }

func runTool(t *testing.T, name string) (string, string) {
	p := &policyTB{TB: t}
	var path string
	done := make(chan struct{})
	go func() {
		defer close(done)
		path = Tool(p, name)
	}()
	<-done
	return path, p.ended
}

func TestToolLookupAndMissingPolicy(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "minio"), filepath.Join(dir, "bin", "etcd")} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KACHE_TOOLS_DIR", dir)
	t.Setenv("PATH", t.TempDir())
	for name, want := range map[string]string{"minio": filepath.Join(dir, "minio"), "etcd": filepath.Join(dir, "bin", "etcd")} {
		if path, ended := runTool(t, name); ended != "" || path != want {
			t.Errorf("%s: path %q, ended %q; want %q", name, path, ended, want)
		}
	}
	cases := []struct{ optOut, want string }{{"", "fatal"}, {"0", "fatal"}, {"1", "skip"}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("KACHE_E2E_SKIP_MISSING_TOOLS=%q", c.optOut), func(t *testing.T) {
			t.Setenv("KACHE_E2E_SKIP_MISSING_TOOLS", c.optOut)
			if _, ended := runTool(t, "kache-no-such-tool"); ended != c.want {
				t.Fatalf("missing tool ended the test with %q, want %q", ended, c.want)
			}
		})
	}
}

func TestFreePortIsLoopbackAndFree(t *testing.T) {
	port := FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("port %d not free: %v", port, err)
	}
	ln.Close()
}

func TestStartSignalKill(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	p := Start(t, "sleep", nil, sleep, "30")
	if p.Exited() || p.ExitCode() != -1 {
		t.Fatal("exited at once")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	p.Kill() // after exit: no error, no hang
	if p.ExitCode() != -1 {
		t.Fatalf("exit code %d after SIGTERM", p.ExitCode())
	}
}
