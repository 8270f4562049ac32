package leader

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// Test vector 31: namespace resolution.
func TestResolveNamespace(t *testing.T) {
	dir := t.TempDir()
	sa := filepath.Join(dir, "namespace")
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name, flag, pod, file string
		want                  string
		err                   bool
	}{
		{"flag trimmed", " team-a ", "pod-ns", "sa-ns", "team-a", false},
		{"pod namespace", "", " pod-ns ", "sa-ns", "pod-ns", false},
		{"service account file", "", "", " team-a\n", "team-a", false},
		{"blank everywhere", " ", " ", " \n", "", true},
		{"no file", "", "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := sa
			if tt.file == "" {
				path = filepath.Join(dir, "absent")
			} else if err := os.WriteFile(sa, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ResolveNamespace(tt.flag, env(map[string]string{"POD_NAMESPACE": tt.pod}), path)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	if got := Identity(func(string) string { return "pod-1" }); got != "pod-1" {
		t.Fatalf("identity %q", got)
	}
	a, b := Identity(func(string) string { return "" }), Identity(func(string) string { return "" })
	if a == b || a == "" {
		t.Fatalf("random identities %q %q", a, b)
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := New(Config{Namespace: "ns", LeaseName: "l"}, fake.NewClientset(), func(bool) {}, nil); err == nil {
		t.Fatal("missing identity accepted")
	}
	if _, err := New(Config{Namespace: "ns", LeaseName: "l", Identity: "a", LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}, fake.NewClientset(), func(bool) {}, nil); err == nil {
		t.Fatal("renew deadline over lease duration accepted")
	}
}

// Two electors share one Lease: exactly one leads; when it stops (and
// releases), the other takes over. The e2e suite proves the same against a
// real API server.
func TestFailover(t *testing.T) {
	client := fake.NewClientset()
	var leading [2]atomic.Bool
	var electors [2]*Elector
	for i := range electors {
		e, err := New(Config{Namespace: "ns", LeaseName: "kache-service", Identity: []string{"a", "b"}[i],
			LeaseDuration: 1500 * time.Millisecond, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond},
			client, func(l bool) { leading[i].Store(l) }, nil)
		if err != nil {
			t.Fatal(err)
		}
		electors[i] = e
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	first := waitFor(t, func() int {
		if leading[0].Load() != leading[1].Load() {
			if leading[0].Load() {
				return 0
			}
			return 1
		}
		return -1
	})
	other := 1 - first
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := electors[first].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() int {
		if leading[other].Load() {
			return other
		}
		return -1
	})
	if err := electors[other].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if leading[other].Load() {
		t.Fatal("stopped leader still reports leading")
	}
}

func waitFor(t *testing.T, f func() int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if v := f(); v >= 0 {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not reached in 10s")
	return -1
}
