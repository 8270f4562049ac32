//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// TestChartInstallsIntoAPIServer installs the chart with every
// representative values file (charts/kache-service/ci) into a real API
// server, as users do (`helm upgrade --install`): the server validates every
// object (schemas, RBAC kinds, PVC and Lease types). An upgrade in place
// must succeed too. No nodes run here, so pods are not scheduled.
func TestChartInstallsIntoAPIServer(t *testing.T) {
	c := startCluster(t)
	helm := testenv.Tool(t, "helm")
	files, err := filepath.Glob("../charts/kache-service/ci/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci values files: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		t.Run(name, func(t *testing.T) {
			ns := "e2e-" + strings.ReplaceAll(name, "_", "-")
			for _, step := range []string{"install", "upgrade"} {
				cmd := exec.Command(helm, "upgrade", "--install", "kache-service", "../charts/kache-service",
					"--values", f, "--namespace", ns, "--create-namespace", "--kubeconfig", c.kubeconfig)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s with %s: %v\n%s", step, f, err, out)
				}
				if step == "install" && !strings.Contains(string(out), "KACHE_PLANNER_ENDPOINT=http://") {
					t.Fatalf("NOTES do not print the endpoint:\n%s", out)
				}
			}
			out, err := exec.Command(helm, "get", "manifest", "kache-service", "--namespace", ns, "--kubeconfig", c.kubeconfig).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "kind: Deployment") || !strings.Contains(string(out), "kind: Service") {
				t.Fatalf("release manifest: %v\n%s", err, out)
			}
			if strings.Contains(name, "ha") && !strings.Contains(string(out), "kind: RoleBinding") {
				t.Fatalf("HA release lacks its RBAC:\n%s", out)
			}
		})
	}
}
