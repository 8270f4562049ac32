package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestChoose(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	limited := file("limited", "134217728\n") // 128 MiB
	unlimited := file("unlimited", "max\n")
	garbage := file("garbage", "lots")
	absent := filepath.Join(dir, "absent")
	tests := []struct {
		name       string
		gomemlimit string
		path       string
		ceiling    int64
		want       int64
		wantOK     bool
	}{
		{name: "80% of the cgroup", path: limited, want: 107374180, wantOK: true},
		{name: "unlimited cgroup", path: unlimited},
		{name: "no cgroup file", path: absent},
		{name: "unreadable limit", path: garbage},
		{name: "GOMEMLIMIT wins", gomemlimit: "100MiB", path: limited, ceiling: 64 << 20},
		{name: "ceiling below the cgroup", path: limited, ceiling: 96 << 20, want: 96 << 20, wantOK: true},
		{name: "ceiling above the cgroup", path: limited, ceiling: 1 << 30, want: 107374180, wantOK: true},
		{name: "ceiling without a cgroup", path: unlimited, ceiling: 96 << 20, want: 96 << 20, wantOK: true},
		{name: "ceiling without a cgroup file", path: absent, ceiling: 96 << 20, want: 96 << 20, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Choose(tt.gomemlimit, tt.path, tt.ceiling)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Choose = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
