package config

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Test vector 30: every flag maps 1:1.
func TestFlags(t *testing.T) {
	c, err := Parse(strings.Fields("--bind 127.0.0.1:9080 --token secret --planner-name remote --db-path /tmp/planner.db --seed-state-file /tmp/seed.json --ha-enabled --ha-namespace team-a --ha-lease-name planner-a"), env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Bind != "127.0.0.1:9080" || c.Token != "secret" || c.PlannerName != "remote" || c.DBPath != "/tmp/planner.db" ||
		c.SeedStateFile != "/tmp/seed.json" || !c.HAEnabled || c.HANamespace != "team-a" || c.HALeaseName != "planner-a" {
		t.Fatalf("%+v", c)
	}
}

func TestEnvFallbackAndPrecedence(t *testing.T) {
	e := env(map[string]string{
		"KACHE_PLANNER_BIND": "0.0.0.0:8080", "KACHE_PLANNER_TOKEN": " tok ", "KACHE_HA_ENABLED": "true",
		"KACHE_HA_NAMESPACE": " team-a ", "KACHE_HA_LEASE_NAME": " lease-a ", "KACHE_PLANNER_NAME": "from-env",
		"KACHE_TIMELINE_MAX_DECODED_BYTES": "1024",
	})
	c, err := Parse([]string{"--planner-name", "from-flag"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Bind != "0.0.0.0:8080" || c.Token != "tok" || !c.HAEnabled || c.HANamespace != "team-a" || c.HALeaseName != "lease-a" ||
		c.PlannerName != "from-flag" || c.TimelineMaxDecodedBytes != 1024 {
		t.Fatalf("%+v", c)
	}
	if _, err := Parse(nil, env(map[string]string{"KACHE_HA_ENABLED": "maybe"}), io.Discard); err == nil || !strings.Contains(err.Error(), "KACHE_HA_ENABLED") {
		t.Fatalf("bad bool env: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Bind != "127.0.0.1:8080" || c.PlannerName != "planner" || c.HALeaseName != "kache-service" || c.MaxBodyBytes != 2<<20 || c.DBPath != "" {
		t.Fatalf("%+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.MaxBodyBytes, c.Bind = 0, "x"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--bind") || !strings.Contains(err.Error(), "--max-body-bytes") {
		t.Fatalf("validate: %v", err)
	}
}

// The HTTP limits: flags, env, defaults, and a body budget that could never
// hold the largest body refused.
func TestHTTPLimits(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HeaderTimeout != 10*time.Second || c.ReadTimeout != 30*time.Second || c.MaxConns != 1024 || c.MaxInflightBodyMB != 48 {
		t.Fatalf("defaults %+v", c)
	}
	c, err = Parse([]string{"--max-conns", "64"}, env(map[string]string{
		"KACHE_PLANNER_HEADER_TIMEOUT": "3s", "KACHE_PLANNER_MAX_INFLIGHT_BODY_MB": "20", "KACHE_PLANNER_MAX_CONNS": "9",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HeaderTimeout != 3*time.Second || c.MaxInflightBodyMB != 20 || c.MaxConns != 64 {
		t.Fatalf("flags and env %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.MaxInflightBodyMB = 15 // under --manifest-max-bytes' 16 MiB
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--max-inflight-body-mb") {
		t.Fatalf("validate: %v", err)
	}
	c.MaxInflightBodyMB, c.HeaderTimeout = 16, 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--header-timeout") {
		t.Fatalf("validate: %v", err)
	}
}

func TestBlankLeaseNameQuirk(t *testing.T) {
	c, _ := Parse([]string{"--ha-lease-name", "  "}, env(nil), io.Discard)
	if c.HALeaseName != "planner" {
		t.Fatalf("lease %q", c.HALeaseName)
	}
}

func TestLogDirective(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
	}{
		{"", slog.LevelInfo},
		{"not a valid [ filter", slog.LevelInfo},
		{"kache_service=debug", slog.LevelDebug},
		{"tower=warn,kache_service=error", slog.LevelError},
		{"warn", slog.LevelWarn},
		{"debug,kache_service=info", slog.LevelInfo},
		{"kache_service=loud", slog.LevelInfo},
	}
	for _, tt := range tests {
		if got := ParseLogDirective(tt.in); got != tt.want {
			t.Errorf("%q => %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestLogValueRedactsToken(t *testing.T) {
	c, _ := Parse([]string{"--token", "hunter2"}, env(nil), io.Discard)
	if strings.Contains(c.LogValue().String(), "hunter2") {
		t.Fatal("token logged")
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true},
		{"12h", 12 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"45s", 45 * time.Second, true},
		{"2w", 14 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"1h30m", 90 * time.Minute, true},
		{" 7d ", 7 * 24 * time.Hour, true},
		{"0", 0, true},
		{"", 0, false},
		{"30", 0, false},
		{"30x", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"99999999999999d", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseDuration(%q) = %s, %v; want %s, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention != 30*24*time.Hour || c.RetentionInterval != time.Hour {
		t.Fatalf("defaults: %s %s", c.Retention, c.RetentionInterval)
	}
	c, err = Parse(nil, env(map[string]string{"KACHE_PLANNER_RETENTION": "12h", "KACHE_PLANNER_RETENTION_INTERVAL": "5m"}), io.Discard)
	if err != nil || c.Retention != 12*time.Hour || c.RetentionInterval != 5*time.Minute {
		t.Fatalf("env: %s %s %v", c.Retention, c.RetentionInterval, err)
	}
	c, err = Parse([]string{"--retention", "90d"}, env(map[string]string{"KACHE_PLANNER_RETENTION": "12h"}), io.Discard)
	if err != nil || c.Retention != 90*24*time.Hour {
		t.Fatalf("flag over env: %s %v", c.Retention, err)
	}
	if _, err := Parse(nil, env(map[string]string{"KACHE_PLANNER_RETENTION": "30 days"}), io.Discard); err == nil || !strings.Contains(err.Error(), "KACHE_PLANNER_RETENTION") {
		t.Fatalf("bad env: %v", err)
	}
	c, _ = Parse([]string{"--retention", "0"}, env(nil), io.Discard)
	if c.Retention != 0 || c.Validate() != nil {
		t.Fatalf("off: %s %v", c.Retention, c.Validate())
	}
	c, _ = Parse([]string{"--retention", "-1h", "--retention-interval", "0s"}, env(nil), io.Discard)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--retention must not") || !strings.Contains(err.Error(), "--retention-interval") {
		t.Fatalf("validate: %v", err)
	}
	var help strings.Builder
	_, _ = Parse([]string{"-h"}, env(nil), &help)
	if !strings.Contains(help.String(), "(default 30d)") {
		t.Fatalf("help:\n%s", help.String())
	}
}
