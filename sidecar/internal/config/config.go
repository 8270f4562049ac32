// Package config parses kache-sidecar's flags and environment. Every flag
// has a KACHE_SIDECAR_* variable (used when the flag is absent); secrets come
// only from the environment or files.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/shared/layout"
)

// ErrHelp is returned when -h or --help was asked for.
var ErrHelp = flag.ErrHelp

// Config is the whole configuration of `kache-sidecar serve` and `warm`.
type Config struct {
	PlannerListen string
	S3Listen      string
	// S3AllowRemote lets the S3 surface listen beyond loopback (requests
	// are SigV4-verified either way).
	S3AllowRemote bool
	// Token guards the sidecar's own planner surface (needed for a
	// non-loopback listen address).
	Token string

	CentralEndpoint string
	CentralToken    string
	PlanDeadline    time.Duration

	StoreDir      string
	StoreMaxBytes int64
	StoreFsync    bool
	HintsDir      string

	S3Endpoint  string
	S3Bucket    string
	S3Region    string
	S3Prefix    string
	S3AccessKey string
	S3SecretKey string
	// LocalAccessKey and LocalSecretKey are the credentials of the
	// sidecar's own S3 surface.
	LocalAccessKey string
	LocalSecretKey string

	PrefetchConcurrency int
	PrefetchMaxKeys     int
	PrefetchMaxBytes    int64
	PrefetchDeadline    time.Duration
	// PrefetchSplitBytes and PrefetchSplitParts: an object over
	// PrefetchSplitBytes is downloaded over up to PrefetchSplitParts
	// connections (ranged GETs), taken from idle prefetch lanes; 1 part
	// turns it off.
	PrefetchSplitBytes int64
	PrefetchSplitParts int
	// PrefetchLookahead is how many prefetch GETs beyond
	// PrefetchConcurrency may be sent before a lane is free to stream
	// their bodies (hides each request's time to first byte).
	PrefetchLookahead int
	// PrefetchOnPlan starts prefetching every execute plan the planner
	// surface answers.
	PrefetchOnPlan bool

	Repository   string
	Ref          string
	Commit       string
	Target       string
	Toolchain    string
	RunnerLabels string

	LogLevel        slog.Level
	ShutdownTimeout time.Duration
	// MemoryLimit is the ceiling of the Go runtime's soft memory limit:
	// the limit is the lower of it and 80% of the container's cgroup
	// limit; 0 leaves only the cgroup's. GOMEMLIMIT, when set, wins.
	MemoryLimit int64
	// ClockOffset is a fault-injection and diagnostic setting: the
	// sidecar's clock reads the host's plus this (negative is behind). The
	// sidecar's own checks and records use it (SigV4 request dates, plan
	// ids, hint ages, job and session times, what it reports to central);
	// durations measured for metrics and the requests minio-go signs to the
	// bucket stay on the host's clock.
	ClockOffset time.Duration

	// Warm only.
	Workspace   string
	Namespace   string
	Strict      bool
	Progress    string // auto, always, never
	WarmTimeout time.Duration
}

type def struct {
	name, env string
}

type flags struct {
	fs   *flag.FlagSet
	envs []def
}

func (f *flags) str(p *string, name, env, value, usage string) {
	f.fs.StringVar(p, name, value, usage+" (env "+env+")")
	f.envs = append(f.envs, def{name, env})
}

func (f *flags) integer(p *int, name, env string, value int, usage string) {
	f.fs.IntVar(p, name, value, usage+" (env "+env+")")
	f.envs = append(f.envs, def{name, env})
}

func (f *flags) dur(p *time.Duration, name, env string, value time.Duration, usage string) {
	f.fs.DurationVar(p, name, value, usage+" (env "+env+")")
	f.envs = append(f.envs, def{name, env})
}

func (f *flags) size(p *int64, name, env string, value int64, usage string) {
	*p = value
	f.fs.Func(name, usage+" (bytes, or with a unit: 512MiB, 2GiB, 10GB; default "+FormatSize(value)+"; env "+env+")", func(s string) error {
		n, err := ParseSize(s)
		if err != nil {
			return err
		}
		*p = n
		return nil
	})
	f.envs = append(f.envs, def{name, env})
}

func (f *flags) boolean(p *bool, name, env string, value bool, usage string) {
	f.fs.BoolVar(p, name, value, usage+" (env "+env+")")
	f.envs = append(f.envs, def{name, env})
}

// Parse reads the flags of subcommand cmd ("serve" or "warm") from args,
// falling back to the environment for each absent flag.
func Parse(cmd string, args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	c := Config{}
	f := &flags{fs: flag.NewFlagSet("kache-sidecar "+cmd, flag.ContinueOnError)}
	f.fs.SetOutput(out)
	f.str(&c.PlannerListen, "planner-listen", "KACHE_SIDECAR_PLANNER_LISTEN", "127.0.0.1:7070", "planner surface address (kache's KACHE_PLANNER_ENDPOINT points here)")
	f.str(&c.S3Listen, "s3-listen", "KACHE_SIDECAR_S3_LISTEN", "127.0.0.1:7071", "S3 surface address (kache's KACHE_S3_ENDPOINT); served when a bucket and the local credentials are set")
	f.boolean(&c.S3AllowRemote, "s3-allow-remote", "KACHE_SIDECAR_S3_ALLOW_REMOTE", false, "allow a non-loopback --s3-listen")
	f.str(&c.CentralEndpoint, "central-endpoint", "KACHE_SIDECAR_CENTRAL_ENDPOINT", "", "central kache-service URL; empty plans from hints and the bucket only")
	var centralTokenFile, tokenFile string
	f.str(&centralTokenFile, "central-token-file", "KACHE_SIDECAR_CENTRAL_TOKEN_FILE", "", "file holding the bearer token for central (else env KACHE_SIDECAR_CENTRAL_TOKEN)")
	f.str(&tokenFile, "token-file", "KACHE_SIDECAR_TOKEN_FILE", "", "file holding the bearer token of the sidecar's own planner surface (else env KACHE_SIDECAR_TOKEN)")
	f.dur(&c.PlanDeadline, "plan-deadline", "KACHE_SIDECAR_PLAN_DEADLINE", 300*time.Millisecond, "hard deadline for answering a plan request (kache waits 750ms)")
	f.str(&c.StoreDir, "store-dir", "KACHE_SIDECAR_STORE_DIR", defaultStoreDir(), "local object store directory")
	f.size(&c.StoreMaxBytes, "store-max-bytes", "KACHE_SIDECAR_STORE_MAX_BYTES", 20<<30, "disk budget of the local store; least recently used objects are evicted")
	f.boolean(&c.StoreFsync, "store-fsync", "KACHE_SIDECAR_STORE_FSYNC", true, "fsync each object before it becomes visible; false is safe for a store that lives and dies with its pod (emptyDir), and faster on slow disks")
	f.str(&c.HintsDir, "hints-dir", "KACHE_SIDECAR_HINTS_DIR", "", "hint cache database directory (default <store-dir>/hints)")
	f.str(&c.S3Endpoint, "s3-endpoint", "KACHE_SIDECAR_S3_ENDPOINT", "", "upstream S3 endpoint URL (http://127.0.0.1:9000 for MinIO); empty means AWS")
	f.str(&c.S3Bucket, "s3-bucket", "KACHE_SIDECAR_S3_BUCKET", "", "upstream bucket (kache's KACHE_S3_BUCKET); without it nothing is prefetched")
	f.str(&c.S3Region, "s3-region", "KACHE_SIDECAR_S3_REGION", "us-east-1", "upstream bucket region")
	f.str(&c.S3Prefix, "s3-prefix", "KACHE_SIDECAR_S3_PREFIX", "artifacts", "kache's key prefix (KACHE_S3_PREFIX)")
	f.integer(&c.PrefetchConcurrency, "prefetch-concurrency", "KACHE_SIDECAR_PREFETCH_CONCURRENCY", 12, "speculative downloads at once (4 more lanes are kept for demand)")
	f.integer(&c.PrefetchMaxKeys, "prefetch-max-keys", "KACHE_SIDECAR_PREFETCH_MAX_KEYS", 2000, "keys per plan; 0 means no limit")
	f.size(&c.PrefetchMaxBytes, "prefetch-max-bytes", "KACHE_SIDECAR_PREFETCH_MAX_BYTES", 2<<30, "hard cap on bytes received per plan; 0 means no limit")
	f.dur(&c.PrefetchDeadline, "prefetch-deadline", "KACHE_SIDECAR_PREFETCH_DEADLINE", 300*time.Second, "no new download starts this long after a plan; 0 means none")
	f.size(&c.PrefetchSplitBytes, "prefetch-split-bytes", "KACHE_SIDECAR_PREFETCH_SPLIT_BYTES", 4<<20, "objects larger than this are downloaded over several connections (ranged GETs of one version)")
	f.integer(&c.PrefetchSplitParts, "prefetch-split-parts", "KACHE_SIDECAR_PREFETCH_SPLIT_PARTS", 4, "connections per split download, taken from idle prefetch lanes; 1 turns splitting off")
	f.integer(&c.PrefetchLookahead, "prefetch-lookahead", "KACHE_SIDECAR_PREFETCH_LOOKAHEAD", 12, "prefetch GETs sent ahead of a free lane, their bodies streamed in plan order as lanes free; 0 turns it off")
	f.boolean(&c.PrefetchOnPlan, "prefetch-on-plan", "KACHE_SIDECAR_PREFETCH_ON_PLAN", true, "prefetch every execute plan the planner surface answers")
	f.str(&c.Repository, "repository", "KACHE_SIDECAR_REPOSITORY", "", "repository sent to central (default from the CI environment)")
	f.str(&c.Ref, "ref", "KACHE_SIDECAR_REF", "", "git ref sent to central (default from the CI environment)")
	f.str(&c.Commit, "commit", "KACHE_SIDECAR_COMMIT", "", "commit sent to central (default from the CI environment)")
	f.str(&c.Target, "target", "KACHE_SIDECAR_TARGET", "", "target triple of the build (default CARGO_BUILD_TARGET, else the host)")
	f.str(&c.Toolchain, "toolchain", "KACHE_SIDECAR_TOOLCHAIN", "", "rustc release of the builds, e.g. 1.82.0, sent to central (warm runs `rustc -vV` in the workspace when unset)")
	f.str(&c.RunnerLabels, "runner-labels", "KACHE_SIDECAR_RUNNER_LABELS", "", "runner labels sent to central, k=v,k2=v2")
	var level string
	f.str(&level, "log-level", "KACHE_SIDECAR_LOG_LEVEL", "info", "debug, info, warn or error")
	f.dur(&c.ShutdownTimeout, "shutdown-timeout", "KACHE_SIDECAR_SHUTDOWN_TIMEOUT", 10*time.Second, "graceful shutdown budget")
	f.size(&c.MemoryLimit, "memory-limit", "KACHE_SIDECAR_MEMORY_LIMIT", DefaultMemoryLimit, "soft memory limit of the Go runtime (the collector works harder near it), lowered to 80% of the container's cgroup limit if that is lower; 0 means only the cgroup's; GOMEMLIMIT wins")
	f.dur(&c.ClockOffset, "clock-offset", "KACHE_SIDECAR_CLOCK_OFFSET", 0, "fault injection and diagnostics: the sidecar's clock reads the host's plus this, e.g. 10m or -10m (SigV4 checks, plan ids, reported times; the bucket's requests stay on the host's clock)")
	if cmd == "warm" {
		f.fs.StringVar(&c.Workspace, "workspace", ".", "Cargo workspace root (the directory holding Cargo.lock)")
		f.str(&c.Namespace, "namespace", "KACHE_NAMESPACE", "", "kache namespace of the build (kache's KACHE_NAMESPACE)")
		f.fs.BoolVar(&c.Strict, "strict", false, "exit non-zero when the planner or the bucket is unavailable")
		f.fs.StringVar(&c.Progress, "progress", "auto", "progress display: auto (a bar on a terminal), always or never")
		f.dur(&c.WarmTimeout, "timeout", "KACHE_SIDECAR_WARM_TIMEOUT", 0, "give up waiting for the prefetch after this long (default: the prefetch deadline)")
	}
	if err := f.fs.Parse(args); err != nil {
		return c, err
	}
	if f.fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(f.fs.Args(), " "))
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, e := range f.envs {
		if set[e.name] {
			continue
		}
		v, ok := lookupEnv(e.env)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		if err := f.fs.Set(e.name, strings.TrimSpace(v)); err != nil {
			return c, fmt.Errorf("parse %s=%q: %w", e.env, v, err)
		}
	}
	var err error
	if c.CentralToken, err = secret(lookupEnv, "KACHE_SIDECAR_CENTRAL_TOKEN", centralTokenFile); err != nil {
		return c, err
	}
	if c.Token, err = secret(lookupEnv, "KACHE_SIDECAR_TOKEN", tokenFile); err != nil {
		return c, err
	}
	// Upstream credentials: the usual AWS variables (minio-go's chain also
	// reads them, plus the shared credentials file and instance roles).
	c.S3AccessKey, _ = lookupEnv("AWS_ACCESS_KEY_ID")
	c.S3SecretKey, _ = lookupEnv("AWS_SECRET_ACCESS_KEY")
	c.LocalAccessKey, _ = lookupEnv("KACHE_SIDECAR_LOCAL_ACCESS_KEY")
	c.LocalSecretKey, _ = lookupEnv("KACHE_SIDECAR_LOCAL_SECRET_KEY")
	if c.LogLevel, err = parseLevel(level); err != nil {
		return c, err
	}
	if c.HintsDir == "" && c.StoreDir != "" {
		c.HintsDir = filepath.Join(c.StoreDir, "hints")
	}
	return c, nil
}

// secret reads a token from a file when one is named, else from env.
func secret(lookupEnv func(string) (string, bool), env, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	v, _ := lookupEnv(env)
	return strings.TrimSpace(v), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func defaultStoreDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kache-sidecar")
	}
	return filepath.Join(os.TempDir(), "kache-sidecar")
}

// Validate checks the configuration as a whole.
func (c Config) Validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"planner-listen", c.PlannerListen}, {"s3-listen", c.S3Listen}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", a.name, a.addr, err))
		}
	}
	if c.PlannerListen != "" && !IsLoopback(c.PlannerListen) && c.Token == "" {
		errs = append(errs, fmt.Errorf("--planner-listen %q is not loopback: set KACHE_SIDECAR_TOKEN (or --token-file) to expose the planner surface", c.PlannerListen))
	}
	if c.S3Listen != "" && !IsLoopback(c.S3Listen) && !c.S3AllowRemote {
		errs = append(errs, fmt.Errorf("--s3-listen %q is not loopback: set --s3-allow-remote to expose the S3 surface", c.S3Listen))
	}
	if (c.LocalAccessKey == "") != (c.LocalSecretKey == "") {
		errs = append(errs, errors.New("set both KACHE_SIDECAR_LOCAL_ACCESS_KEY and KACHE_SIDECAR_LOCAL_SECRET_KEY, or neither"))
	}
	if c.CentralEndpoint != "" {
		if u, err := url.Parse(c.CentralEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--central-endpoint %q: want an http(s) URL", c.CentralEndpoint))
		}
	}
	if c.S3Endpoint != "" {
		if u, err := url.Parse(c.S3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--s3-endpoint %q: want an http(s) URL", c.S3Endpoint))
		}
	}
	if _, err := layout.NormalizePrefix(c.S3Prefix); err != nil {
		errs = append(errs, fmt.Errorf("--s3-prefix %q: %w", c.S3Prefix, err))
	}
	if c.StoreDir == "" {
		errs = append(errs, errors.New("--store-dir is empty"))
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 16<<20 {
		errs = append(errs, fmt.Errorf("--memory-limit %d: want 0 (none) or at least 16MiB", c.MemoryLimit))
	}
	if c.StoreMaxBytes < 0 || c.PrefetchMaxBytes < 0 || c.PrefetchMaxKeys < 0 {
		errs = append(errs, errors.New("budgets must not be negative"))
	}
	if c.PrefetchConcurrency < 1 || c.PrefetchConcurrency > 256 {
		errs = append(errs, fmt.Errorf("--prefetch-concurrency %d: want 1-256", c.PrefetchConcurrency))
	}
	if c.PrefetchSplitBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("--prefetch-split-bytes %d: want at least 1MiB", c.PrefetchSplitBytes))
	}
	if c.PrefetchSplitParts < 1 || c.PrefetchSplitParts > 16 {
		errs = append(errs, fmt.Errorf("--prefetch-split-parts %d: want 1-16", c.PrefetchSplitParts))
	}
	if c.PrefetchLookahead < 0 || c.PrefetchLookahead > 256 {
		errs = append(errs, fmt.Errorf("--prefetch-lookahead %d: want 0-256", c.PrefetchLookahead))
	}
	if c.PlanDeadline < 10*time.Millisecond || c.PlanDeadline > 700*time.Millisecond {
		errs = append(errs, fmt.Errorf("--plan-deadline %s: want 10ms-700ms (kache gives up at 750ms)", c.PlanDeadline))
	}
	if c.ClockOffset <= -MaxClockOffset || c.ClockOffset >= MaxClockOffset {
		errs = append(errs, fmt.Errorf("--clock-offset %s: want less than %s either way", c.ClockOffset, MaxClockOffset))
	}
	switch c.Progress {
	case "", "auto", "always", "never":
	default:
		errs = append(errs, fmt.Errorf("--progress %q: want auto, always or never", c.Progress))
	}
	return errors.Join(errs...)
}

// DefaultMemoryLimit is --memory-limit's default: the sidecar shares its
// runner with the build, and a fleet's load through one sidecar (issue
// 12) keeps its live heap well under it.
const DefaultMemoryLimit = 96 << 20

// MaxClockOffset bounds --clock-offset (exclusive).
const MaxClockOffset = 24 * time.Hour

// S3Surface reports whether `serve` runs the S3 surface: it needs the
// bucket it fronts and the credentials kache signs with.
func (c Config) S3Surface() bool {
	return c.S3Bucket != "" && c.LocalAccessKey != "" && c.LocalSecretKey != ""
}

// IsLoopback reports whether a listen address binds only loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Redacted is the configuration safe to log.
func (c Config) Redacted() Config {
	for _, p := range []*string{&c.Token, &c.CentralToken, &c.S3SecretKey, &c.LocalSecretKey} {
		if *p != "" {
			*p = "REDACTED"
		}
	}
	return c
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1},
}

// ParseSize reads a byte count: a plain integer or one with a unit
// (KiB/MiB/GiB/TiB, KB/MB/GB/TB, or K/M/G/T as binary units), as kache's
// size strings are written.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || n*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("size %q: want bytes or a number with a unit such as 2GiB", s)
	}
	return int64(n * float64(mult)), nil
}

// FormatSize writes n with a binary unit.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
