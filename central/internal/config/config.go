// Package config parses kache-service's flags and environment. Names, env vars
// and meanings are kache's (kache-protocol.md 2.5) so the binary is a drop-in;
// the extra knobs are ours and use the same KACHE_PLANNER_ prefix.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
)

// Config is kache-service's whole configuration.
type Config struct {
	Bind          string
	Token         string
	PlannerName   string
	DBPath        string
	SeedStateFile string

	HAEnabled       bool
	HANamespace     string
	HALeaseName     string
	HALeaseDuration time.Duration
	HARenewDeadline time.Duration
	HARetryPeriod   time.Duration

	LogLevel slog.Level

	MaxBodyBytes               int
	MaxManifestBytes           int
	TimelineMaxCompressedBytes int
	TimelineMaxDecodedBytes    int
	DBCacheMB                  int
	ListCacheMB                int
	PlanCacheMB                int
	// HeaderTimeout bounds a request's headers; ReadTimeout its body, from
	// the end of its headers.
	HeaderTimeout   time.Duration
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	ShutdownTimeout time.Duration
	// MaxConns caps open HTTP connections; MaxInflightBodyMB bounds the
	// request bodies held in memory at once.
	MaxConns          int
	MaxInflightBodyMB int

	// S3 is the bucket central crawls; empty Bucket means none.
	S3Bucket        string
	S3Endpoint      string
	S3Region        string
	S3Prefix        string
	S3AccessKey     string
	S3SecretKey     string
	S3CrawlInterval time.Duration

	// Retention drops keys not built, used or listed for this long; 0
	// keeps them until they leave the bucket or a runner gets a 404.
	Retention time.Duration
	// RetentionInterval is how often the age policy runs and the
	// database is compacted.
	RetentionInterval time.Duration

	// PprofBind serves net/http/pprof on this address when set (keep it on
	// loopback).
	PprofBind string

	ShowVersion bool
}

// ErrHelp is returned when -h or --help was asked for.
var ErrHelp = flag.ErrHelp

type envFlag struct {
	name, env string
}

// Parse reads flags from args, falling back to the environment for each flag
// that is absent (clap's rule). getenv is os.LookupEnv in production.
func Parse(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	c := Config{}
	fs := flag.NewFlagSet("kache-service", flag.ContinueOnError)
	fs.SetOutput(out)
	var envs []envFlag
	str := func(p *string, name, env, def, usage string) {
		fs.StringVar(p, name, def, usage+" (env "+env+")")
		envs = append(envs, envFlag{name, env})
	}
	integer := func(p *int, name, env string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" (env "+env+")")
		envs = append(envs, envFlag{name, env})
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+env+")")
		envs = append(envs, envFlag{name, env})
	}
	str(&c.Bind, "bind", "KACHE_PLANNER_BIND", "127.0.0.1:8080", "socket address to listen on (IP:port); the chart sets 0.0.0.0:8080")
	str(&c.Token, "token", "KACHE_PLANNER_TOKEN", "", "bearer token for plan and ingest routes; blank disables auth (prefer the env var: flags show in ps)")
	str(&c.PlannerName, "planner-name", "KACHE_PLANNER_NAME", "planner", "name reported in plans and health replies")
	str(&c.DBPath, "db-path", "KACHE_PLANNER_DB_PATH", "", "database directory; empty means an ephemeral directory removed on exit (the chart sets /var/lib/kache/planner.db)")
	str(&c.SeedStateFile, "seed-state-file", "KACHE_PLANNER_SEED_STATE_FILE", "", "legacy kache seed state JSON, imported once")
	fs.BoolVar(&c.HAEnabled, "ha-enabled", false, "enable Lease-based leader election (env KACHE_HA_ENABLED)")
	envs = append(envs, envFlag{"ha-enabled", "KACHE_HA_ENABLED"})
	str(&c.HANamespace, "ha-namespace", "KACHE_HA_NAMESPACE", "", "Lease namespace (else POD_NAMESPACE, else the service-account namespace)")
	str(&c.HALeaseName, "ha-lease-name", "KACHE_HA_LEASE_NAME", "kache-service", "Lease name")
	dur(&c.HALeaseDuration, "ha-lease-duration", "KACHE_HA_LEASE_DURATION", 15*time.Second, "how long a Lease is valid without renewal")
	dur(&c.HARenewDeadline, "ha-renew-deadline", "KACHE_HA_RENEW_DEADLINE", 10*time.Second, "a leader steps down when it cannot renew for this long")
	dur(&c.HARetryPeriod, "ha-retry-period", "KACHE_HA_RETRY_PERIOD", 2*time.Second, "how often to try to acquire or renew the Lease")
	integer(&c.MaxBodyBytes, "max-body-bytes", "KACHE_PLANNER_MAX_BODY_BYTES", 2<<20, "largest plan request body")
	integer(&c.MaxManifestBytes, "manifest-max-bytes", "KACHE_PLANNER_MANIFEST_MAX_BYTES", 16<<20, "largest build-manifest body")
	integer(&c.TimelineMaxCompressedBytes, "timeline-max-compressed-bytes", "KACHE_TIMELINE_MAX_COMPRESSED_BYTES", 8<<20, "largest compressed build-timeline body")
	integer(&c.TimelineMaxDecodedBytes, "timeline-max-decoded-bytes", "KACHE_TIMELINE_MAX_DECODED_BYTES", 32<<20, "largest decoded build-timeline body (inclusive)")
	integer(&c.DBCacheMB, "db-cache-mb", "KACHE_PLANNER_DB_CACHE_MB", 8, "database block cache")
	integer(&c.ListCacheMB, "list-cache-mb", "KACHE_PLANNER_LIST_CACHE_MB", 16, "decoded crate and dep lists kept in memory")
	integer(&c.PlanCacheMB, "plan-cache-mb", "KACHE_PLANNER_PLAN_CACHE_MB", 8, "encoded plans kept for repeated intents until the next write; 0 disables")
	dur(&c.HeaderTimeout, "header-timeout", "KACHE_PLANNER_HEADER_TIMEOUT", 10*time.Second, "HTTP request headers must arrive within this, from the connection's open or the request's first byte")
	dur(&c.ReadTimeout, "read-timeout", "KACHE_PLANNER_READ_TIMEOUT", 30*time.Second, "HTTP request body must arrive within this, from the end of its headers")
	dur(&c.WriteTimeout, "write-timeout", "KACHE_PLANNER_WRITE_TIMEOUT", 30*time.Second, "HTTP write timeout")
	dur(&c.IdleTimeout, "idle-timeout", "KACHE_PLANNER_IDLE_TIMEOUT", 90*time.Second, "HTTP keep-alive idle timeout")
	integer(&c.MaxConns, "max-conns", "KACHE_PLANNER_MAX_CONNS", 1024, "open HTTP connections; one more is answered 503 and closed")
	integer(&c.MaxInflightBodyMB, "max-inflight-body-mb", "KACHE_PLANNER_MAX_INFLIGHT_BODY_MB", 48, "request bodies held in memory at once, all requests together; a body that does not fit is answered 503 with Retry-After (at least the largest body limit)")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "KACHE_PLANNER_SHUTDOWN_TIMEOUT", 20*time.Second, "graceful shutdown budget (below the chart's terminationGracePeriodSeconds)")
	str(&c.S3Bucket, "s3-bucket", "KACHE_PLANNER_S3_BUCKET", "", "kache's bucket: crawl its _manifests/ and v3/manifests/ to build and refresh rankings; off when empty")
	str(&c.S3Endpoint, "s3-endpoint", "KACHE_PLANNER_S3_ENDPOINT", "", "S3 endpoint URL (e.g. http://127.0.0.1:9000 for MinIO); empty means AWS")
	str(&c.S3Region, "s3-region", "KACHE_PLANNER_S3_REGION", "us-east-1", "bucket region")
	str(&c.S3Prefix, "s3-prefix", "KACHE_PLANNER_S3_PREFIX", "artifacts", "kache's key prefix (KACHE_S3_PREFIX)")
	dur(&c.S3CrawlInterval, "s3-crawl-interval", "KACHE_PLANNER_S3_CRAWL_INTERVAL", 5*time.Minute, "time between bucket crawls")
	c.Retention = 30 * 24 * time.Hour
	fs.Var(kacheDuration{&c.Retention}, "retention", "forget keys not built, used or listed in the bucket for this long, kache-style (30d, 12h, 90m); 0 keeps them (env KACHE_PLANNER_RETENTION)")
	envs = append(envs, envFlag{"retention", "KACHE_PLANNER_RETENTION"})
	dur(&c.RetentionInterval, "retention-interval", "KACHE_PLANNER_RETENTION_INTERVAL", time.Hour, "how often the retention policy runs and the database is compacted")
	str(&c.PprofBind, "pprof-bind", "KACHE_PLANNER_PPROF_BIND", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; off when empty")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, e := range envs {
		if set[e.name] {
			continue
		}
		v, ok := lookupEnv(e.env)
		if !ok {
			continue
		}
		if err := fs.Set(e.name, strings.TrimSpace(v)); err != nil {
			return c, fmt.Errorf("parse %s=%q: %w", e.env, v, err)
		}
	}
	// Bucket credentials come from the environment only (else the AWS chain).
	c.S3AccessKey, _ = lookupEnv("KACHE_PLANNER_S3_ACCESS_KEY")
	c.S3SecretKey, _ = lookupEnv("KACHE_PLANNER_S3_SECRET_KEY")
	logDirective, _ := lookupEnv("KACHE_LOG")
	c.LogLevel = ParseLogDirective(logDirective)
	c.Token = strings.TrimSpace(c.Token)
	c.HALeaseName = strings.TrimSpace(c.HALeaseName)
	if c.HALeaseName == "" {
		// kache's normalize_name quirk: a blank lease name becomes "planner".
		c.HALeaseName = "planner"
	}
	c.HANamespace = strings.TrimSpace(c.HANamespace)
	return c, nil
}

// Validate checks values that parse but cannot work.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Bind); err != nil {
		errs = append(errs, fmt.Errorf("--bind %q: %w", c.Bind, err))
	}
	for _, v := range []struct {
		name string
		n    int
	}{
		{"--max-body-bytes", c.MaxBodyBytes},
		{"--manifest-max-bytes", c.MaxManifestBytes},
		{"--timeline-max-compressed-bytes", c.TimelineMaxCompressedBytes},
		{"--timeline-max-decoded-bytes", c.TimelineMaxDecodedBytes},
		{"--db-cache-mb", c.DBCacheMB},
		{"--list-cache-mb", c.ListCacheMB},
		{"--max-conns", c.MaxConns},
		{"--max-inflight-body-mb", c.MaxInflightBodyMB},
	} {
		if v.n <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", v.name, v.n))
		}
	}
	for _, v := range []struct {
		name string
		d    time.Duration
	}{
		{"--header-timeout", c.HeaderTimeout},
		{"--read-timeout", c.ReadTimeout},
		{"--write-timeout", c.WriteTimeout},
		{"--idle-timeout", c.IdleTimeout},
		{"--shutdown-timeout", c.ShutdownTimeout},
	} {
		if v.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", v.name, v.d))
		}
	}
	if c.HAEnabled && !(c.HARetryPeriod < c.HARenewDeadline && c.HARenewDeadline < c.HALeaseDuration) {
		errs = append(errs, fmt.Errorf("want --ha-retry-period < --ha-renew-deadline < --ha-lease-duration, got %s, %s, %s", c.HARetryPeriod, c.HARenewDeadline, c.HALeaseDuration))
	}
	if c.S3Bucket != "" {
		if p, err := layout.NormalizePrefix(c.S3Prefix); err != nil {
			errs = append(errs, fmt.Errorf("--s3-prefix: %w", err))
		} else {
			c.S3Prefix = p
		}
		if c.S3CrawlInterval <= 0 {
			errs = append(errs, fmt.Errorf("--s3-crawl-interval must be positive, got %s", c.S3CrawlInterval))
		}
	}
	if largest := max(c.MaxBodyBytes, c.MaxManifestBytes, c.TimelineMaxCompressedBytes); c.MaxInflightBodyMB > 0 && c.MaxInflightBodyMB<<20 < largest {
		errs = append(errs, fmt.Errorf("--max-inflight-body-mb %d is below the largest body limit (%d bytes): such a body could never be read", c.MaxInflightBodyMB, largest))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("--retention must not be negative, got %s", c.Retention))
	}
	if c.RetentionInterval <= 0 {
		errs = append(errs, fmt.Errorf("--retention-interval must be positive, got %s", c.RetentionInterval))
	}
	if c.PlanCacheMB < 0 {
		errs = append(errs, fmt.Errorf("--plan-cache-mb must not be negative, got %d", c.PlanCacheMB))
	}
	return errors.Join(errs...)
}

// LogValue logs the effective configuration with the token redacted.
func (c Config) LogValue() slog.Value {
	token := "unset"
	if c.Token != "" {
		token = "set (redacted)"
	}
	db := c.DBPath
	if db == "" {
		db = "ephemeral"
	}
	return slog.GroupValue(
		slog.String("bind", c.Bind),
		slog.String("token", token),
		slog.String("planner_name", c.PlannerName),
		slog.String("db_path", db),
		slog.String("seed_state_file", c.SeedStateFile),
		slog.Bool("ha_enabled", c.HAEnabled),
		slog.String("ha_namespace", c.HANamespace),
		slog.String("ha_lease_name", c.HALeaseName),
		slog.String("log_level", c.LogLevel.String()),
		slog.Int("max_body_bytes", c.MaxBodyBytes),
		slog.Int("manifest_max_bytes", c.MaxManifestBytes),
		slog.Int("db_cache_mb", c.DBCacheMB),
		slog.Int("list_cache_mb", c.ListCacheMB),
		slog.Int("plan_cache_mb", c.PlanCacheMB),
		slog.Int("max_conns", c.MaxConns),
		slog.Int("max_inflight_body_mb", c.MaxInflightBodyMB),
		slog.Duration("header_timeout", c.HeaderTimeout),
		slog.Duration("read_timeout", c.ReadTimeout),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("s3_bucket", c.S3Bucket),
		slog.String("s3_endpoint", c.S3Endpoint),
		slog.String("s3_prefix", c.S3Prefix),
		slog.String("retention", FormatDuration(c.Retention)),
		slog.Duration("retention_interval", c.RetentionInterval),
		slog.Bool("s3_static_credentials", c.S3AccessKey != ""),
	)
}

// ParseLogDirective reads the level for this service out of a tracing
// EnvFilter directive such as "kache_service=debug,tower=warn" or "info".
// Anything it cannot read means info, as in kache.
func ParseLogDirective(d string) slog.Level {
	level, ok := slog.LevelInfo, false
	for _, part := range strings.Split(d, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		target, lvl, hasTarget := strings.Cut(part, "=")
		if !hasTarget {
			lvl, target = target, ""
		}
		l, good := parseLevel(lvl)
		if !good {
			return slog.LevelInfo
		}
		switch {
		case target == "kache_service" || target == "kache":
			return l
		case target == "" && !ok:
			level, ok = l, true
		}
	}
	return level
}

func parseLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace", "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error", "off":
		return slog.LevelError, true
	}
	if n, err := strconv.Atoi(s); err == nil {
		return slog.Level(n), true
	}
	return 0, false
}
