// Package testenv starts the real servers that integration tests run
// against: tool binaries built by e2e/tools.sh (MinIO, etcd,
// kube-apiserver, helm), as child processes on loopback ports, stopped when
// the test ends.
//
// It is plain Go with no build tag so that both e2e/ and the binaries'
// packages (whose internal/ e2e cannot import) can use it from their
// `-tags e2e` tests. Nothing outside tests imports it.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ToolsDir is where e2e/tools.sh and the Justfile install tools:
// $KACHE_TOOLS_DIR, else $XDG_CACHE_HOME (or ~/.cache)/kache-planner/tools.
func ToolsDir() (string, error) {
	dir := os.Getenv("KACHE_TOOLS_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("find tools directory: %w", err)
		}
		dir = filepath.Join(cache, "kache-planner", "tools")
	}
	return filepath.Abs(dir)
}

// LookTool finds a tool binary: in ToolsDir, its bin/ subdirectory, then
// on PATH.
func LookTool(name string) (string, error) {
	if dir, err := ToolsDir(); err == nil {
		for _, p := range []string{filepath.Join(dir, name), filepath.Join(dir, "bin", name)} {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is not built: run e2e/tools.sh %s (or set KACHE_TOOLS_DIR)", name, name)
	}
	return p, nil
}

// Tool returns the path of a tool binary. A missing tool fails the test
// with the command that builds it, wherever the suite runs: a suite that
// passes by skipping proves nothing. KACHE_E2E_SKIP_MISSING_TOOLS=1 turns
// that into a skip, for a person who chooses to run part of the suite.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := LookTool(name)
	if err != nil {
		if os.Getenv("KACHE_E2E_SKIP_MISSING_TOOLS") == "1" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitUntil calls f every interval until it returns true (true) or ctx ends
// (false).
func WaitUntil(ctx context.Context, every time.Duration, f func() bool) bool {
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

// Proc is a child process whose output goes to a log file; the file's last
// lines are logged when the test fails.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	once sync.Once
	done chan struct{}
}

// Start runs bin with args and env (added to this process's environment)
// and kills it when the test ends.
func Start(t testing.TB, name string, env []string, bin string, args ...string) *Proc {
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
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- last lines of %s ---\n%s", name, p.Tail(40))
		}
	})
	return p
}

// Tail returns the last n lines of the process's output.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kill sends SIGKILL (once) and waits for the process to exit.
func (p *Proc) Kill() {
	p.once.Do(func() { _ = p.cmd.Process.Kill() })
	<-p.done
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the process's exit code once it has exited (-1 before, or
// when a signal ended it).
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }
