package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "1024", want: 1024},
		{in: "2GiB", want: 2 << 30},
		{in: "512 MiB", want: 512 << 20},
		{in: "10GB", want: 10e9},
		{in: "1.5g", want: 3 << 29},
		{in: "0", want: 0},
		{in: "-1", bad: true},
		{in: "lots", bad: true},
		{in: "9999999TiB", bad: true},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
	}
	if FormatSize(2<<30) != "2GiB" || FormatSize(1000) != "1000" {
		t.Errorf("FormatSize: %s %s", FormatSize(2<<30), FormatSize(1000))
	}
}

func TestFlagsWinOverEnv(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(" from-file \n"), 0o600)
	c, err := Parse("serve", []string{"--planner-listen", "127.0.0.1:9999", "--central-token-file", tokenFile}, env(map[string]string{
		"KACHE_SIDECAR_PLANNER_LISTEN":    "127.0.0.1:1111",
		"KACHE_SIDECAR_STORE_MAX_BYTES":   "1GiB",
		"KACHE_SIDECAR_CENTRAL_TOKEN":     "from-env",
		"KACHE_SIDECAR_PREFETCH_DEADLINE": "1m",
		"KACHE_SIDECAR_PREFETCH_ON_PLAN":  "false",
		"AWS_ACCESS_KEY_ID":               "ak",
		"AWS_SECRET_ACCESS_KEY":           "sk",
		"KACHE_SIDECAR_LOCAL_SECRET_KEY":  "local",
		"KACHE_SIDECAR_STORE_DIR":         "/var/cache/x",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.PlannerListen != "127.0.0.1:9999" || c.StoreMaxBytes != 1<<30 || c.CentralToken != "from-file" ||
		c.PrefetchDeadline != time.Minute || c.PrefetchOnPlan || c.S3AccessKey != "ak" || c.HintsDir != "/var/cache/x/hints" {
		t.Fatalf("config %+v", c)
	}
	r := c.Redacted()
	if r.CentralToken != "REDACTED" || r.S3SecretKey != "REDACTED" || r.LocalSecretKey != "REDACTED" || c.CentralToken != "from-file" {
		t.Fatalf("redacted %+v", r)
	}
}

func TestValidate(t *testing.T) {
	base := func() Config {
		c, err := Parse("serve", nil, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		err    string
	}{
		{"defaults", func(*Config) {}, ""},
		{"non-loopback without token", func(c *Config) { c.PlannerListen = "0.0.0.0:7070" }, "not loopback"},
		{"non-loopback with token", func(c *Config) { c.PlannerListen = "0.0.0.0:7070"; c.Token = "t" }, ""},
		{"localhost", func(c *Config) { c.PlannerListen = "localhost:7070" }, ""},
		{"bad central URL", func(c *Config) { c.CentralEndpoint = "central:8080" }, "central-endpoint"},
		{"bad prefix", func(c *Config) { c.S3Prefix = "a/../b" }, "s3-prefix"},
		{"deadline over kache's budget", func(c *Config) { c.PlanDeadline = time.Second }, "plan-deadline"},
		{"no concurrency", func(c *Config) { c.PrefetchConcurrency = 0 }, "prefetch-concurrency"},
		{"split off", func(c *Config) { c.PrefetchSplitParts = 1 }, ""},
		{"no split parts", func(c *Config) { c.PrefetchSplitParts = 0 }, "prefetch-split-parts"},
		{"too many split parts", func(c *Config) { c.PrefetchSplitParts = 17 }, "prefetch-split-parts"},
		{"lookahead off", func(c *Config) { c.PrefetchLookahead = 0 }, ""},
		{"negative lookahead", func(c *Config) { c.PrefetchLookahead = -1 }, "prefetch-lookahead"},
		{"too much lookahead", func(c *Config) { c.PrefetchLookahead = 257 }, "prefetch-lookahead"},
		{"split below 1 MiB", func(c *Config) { c.PrefetchSplitBytes = 512 << 10 }, "prefetch-split-bytes"},
		{"bad address", func(c *Config) { c.S3Listen = "7071" }, "s3-listen"},
		{"clock 10 minutes behind", func(c *Config) { c.ClockOffset = -10 * time.Minute }, ""},
		{"clock almost a day ahead", func(c *Config) { c.ClockOffset = 24*time.Hour - time.Second }, ""},
		{"clock a day ahead", func(c *Config) { c.ClockOffset = 24 * time.Hour }, "clock-offset"},
		{"clock a day behind", func(c *Config) { c.ClockOffset = -24 * time.Hour }, "clock-offset"},
		{"no memory limit", func(c *Config) { c.MemoryLimit = 0 }, ""},
		{"memory limit too low", func(c *Config) { c.MemoryLimit = 8 << 20 }, "memory-limit"},
		{"negative memory limit", func(c *Config) { c.MemoryLimit = -1 }, "memory-limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			err := c.Validate()
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestClockOffset(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want time.Duration
		err  string
	}{
		{name: "default", want: 0},
		{name: "env ahead", env: map[string]string{"KACHE_SIDECAR_CLOCK_OFFSET": "10m"}, want: 10 * time.Minute},
		{name: "env behind", env: map[string]string{"KACHE_SIDECAR_CLOCK_OFFSET": " -10m "}, want: -10 * time.Minute},
		{name: "flag wins", args: []string{"--clock-offset", "-90s"}, env: map[string]string{"KACHE_SIDECAR_CLOCK_OFFSET": "10m"}, want: -90 * time.Second},
		{name: "not a duration", env: map[string]string{"KACHE_SIDECAR_CLOCK_OFFSET": "ten minutes"}, err: "KACHE_SIDECAR_CLOCK_OFFSET"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"serve", "warm"} {
				c, err := Parse(cmd, tc.args, env(tc.env), io.Discard)
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("%s: Parse() = %v, want an error naming %s", cmd, err, tc.err)
					}
					continue
				}
				if err != nil || c.ClockOffset != tc.want {
					t.Fatalf("%s: ClockOffset %s, %v; want %s", cmd, c.ClockOffset, err, tc.want)
				}
			}
		})
	}
}
