package report

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/packmeta"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from what the fake central receives")

// key is a valid cache key (64 hex digits) distinct for each c.
func key(c byte) string { return strings.Repeat(fmt.Sprintf("%02x", c), 32) }

var (
	testNow    = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	testRunner = &wire.RunnerContext{Repository: "acme/app", Workflow: "ci", RunID: "42", Labels: map[string]string{"pool": "big"}}
)

// fakeCentral records what it is sent. With stall it blocks until the
// request's context ends; fail makes it refuse.
type fakeCentral struct {
	mu    sync.Mutex
	got   []json.RawMessage
	stall bool
	fail  error
	calls chan struct{}
}

func newFake() *fakeCentral { return &fakeCentral{calls: make(chan struct{}, 100000)} }

func (f *fakeCentral) PostManifest(ctx context.Context, m *wire.BuildManifest) (wire.IngestResult, error) {
	f.mu.Lock()
	stall, fail := f.stall, f.fail
	f.mu.Unlock()
	defer func() { f.calls <- struct{}{} }()
	if stall {
		<-ctx.Done()
		return wire.IngestResult{}, ctx.Err()
	}
	if fail != nil {
		return wire.IngestResult{}, fail
	}
	b, err := json.Marshal(m)
	if err != nil {
		return wire.IngestResult{}, err
	}
	f.mu.Lock()
	f.got = append(f.got, b)
	f.mu.Unlock()
	return wire.IngestResult{Stored: len(m.Entries), New: len(m.Entries)}, nil
}

func (f *fakeCentral) set(stall bool, fail error) {
	f.mu.Lock()
	f.stall, f.fail = stall, fail
	f.mu.Unlock()
}

func (f *fakeCentral) received() []json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]json.RawMessage(nil), f.got...)
}

// waitCalls waits for n more calls to the fake.
func (f *fakeCentral) waitCalls(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-f.calls:
		case <-time.After(5 * time.Second):
			t.Fatal("central was not called")
		}
	}
}

func newReporter(t *testing.T, cfg Config, c Central) *Reporter {
	t.Helper()
	if cfg.Runner == nil {
		cfg.Runner = testRunner
	}
	// Every report is dated by Deps.Now (the sidecar's clock).
	r, err := New(cfg, Deps{Central: c, Registerer: prometheus.NewRegistry(), Logger: testLogger(t), Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func start(t *testing.T, r *Reporter) {
	t.Helper()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background()) })
}

func stop(t *testing.T, r *Reporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func count(r *Reporter, k kind, res result) int {
	var m dto.Metric
	if err := r.metrics.counters[k][res].Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}

func queueLength(r *Reporter) float64 {
	var m dto.Metric
	if err := r.metrics.queue.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KACHE_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// golden compares what central received with testdata/<name>.golden.json,
// rewriting it under -update.
func golden(t *testing.T, name string, got []json.RawMessage) {
	t.Helper()
	out, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, '\n')
	path := filepath.Join("testdata", name+".golden.json")
	if *update {
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./sidecar/internal/report -update)", err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("central received\n%s\nwant (%s)\n%s", out, path, want)
	}
}

func TestManifestForwarding(t *testing.T) {
	kacheManifest := `{
  "version": 3,
  "created": "2026-01-01T00:00:00.123456789+00:00",
  "manifest_key": "x86_64-unknown-linux-gnu",
  "entries": [
    {"cache_key": "` + key(1) + `", "crate_name": "serde", "compile_time_ms": 5000, "artifact_size": 1048576},
    {"cache_key": "` + key(2) + `", "crate_name": "proc_macro2", "compile_time_ms": 800, "artifact_size": 4096}
  ]
}`
	tests := []struct {
		name string
		rel  string
		body string
		kind kind
	}{
		{name: "kache_manifest", rel: "x86_64-unknown-linux-gnu.json", body: kacheManifest, kind: kindManifest},
		{name: "nested_key", rel: "ci/linux/x86_64-unknown-linux-gnu.json", body: kacheManifest, kind: kindManifest},
		{name: "identity_key", rel: "id/" + key(9) + "/aarch64-apple-darwin/release.json",
			body: `{"version":3,"manifest_key":"id/` + key(9) + `/aarch64-apple-darwin/release","entries":[{"cache_key":"` + key(3) + `","crate_name":"syn","compile_time_ms":1,"artifact_size":2}]}`, kind: kindManifest},
		{name: "identity_key_with_dims", rel: "id/" + key(9) + "/aarch64-apple-darwin/release.json",
			body: `{"version":3,"entries":[{"cache_key":"` + key(3) + `","crate_name":"syn","compile_time_ms":1,"artifact_size":2}],"target":"wasm32-unknown-unknown","profile":"dev"}`, kind: kindManifest},
		{name: "extended_manifest", rel: "team/build.json",
			body: `{"version":3,"manifest_key":"team/build","entries":[{"cache_key":"` + key(4) + `","crate_name":"tokio","compile_time_ms":9,"artifact_size":10}],` +
				`"namespace":"linux/abc/debug","cargo_lock_deps":[["tokio","1.40.0"]],"target":"x86_64-unknown-linux-gnu","profile":"debug","features":["full"],` +
				`"runner":{"repository":"other/repo"},"toolchain":"1.85.0"}`, kind: kindManifest},
		{name: "invalid_entries_left_out", rel: "x.json",
			body: `{"version":3,"manifest_key":"x","entries":[{"cache_key":"` + key(5) + `","crate_name":"ok","compile_time_ms":1,"artifact_size":1},` +
				`{"cache_key":"ABC","crate_name":"bad_key","compile_time_ms":1,"artifact_size":1},{"cache_key":"` + key(6) + `","crate_name":"../up","compile_time_ms":1,"artifact_size":1}]}`, kind: kindManifest},
		{name: "no_manifest_key", rel: "host.json", body: `{"entries":[]}`, kind: kindManifest},
		{name: "shard", rel: "v3/linux/abc/debug/shards/" + key(7) + ".json",
			body: `{"version":3,"entries":[{"cache_key":"` + key(8) + `","crate_name":"serde","compile_time_ms":700,"artifact_size":2048},` +
				`{"cache_key":"` + key(10) + `","crate_name":"itoa"},{"cache_key":"nope","crate_name":"bad"}]}`, kind: kindShard},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			r := newReporter(t, Config{}, f)
			start(t, r)
			body := []byte(tt.body)
			r.ManifestPut(tt.rel, body)
			clear(body) // the reporter kept a copy
			stop(t, r)
			golden(t, tt.name, f.received())
			if got := count(r, tt.kind, resultSent); got != 1 {
				t.Errorf("%s sent = %d, want 1", tt.kind, got)
			}
		})
	}
}

func TestManifestIdentityDims(t *testing.T) {
	tests := []struct {
		key             string
		target, profile string
		ok              bool
	}{
		{key: "id/d/x86_64-unknown-linux-gnu/release", target: "x86_64-unknown-linux-gnu", profile: "release", ok: true},
		{key: "id/d/t/p/extra"},
		{key: "id/d/t"},
		{key: "id/d//p"},
		{key: "id/d/t/"},
		{key: "ids/d/t/p"},
		{key: "x86_64-unknown-linux-gnu"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			target, profile, ok := identityDims(tt.key)
			if target != tt.target || profile != tt.profile || ok != tt.ok {
				t.Errorf("identityDims = %q %q %v, want %q %q %v", target, profile, ok, tt.target, tt.profile, tt.ok)
			}
		})
	}
}

func TestManifestKind(t *testing.T) {
	tests := []struct {
		rel  string
		want kind
	}{
		{"v3/ns/shards/abc.json", kindShard},
		{"v3/linux/hash/debug/shards/abc.json", kindShard},
		{"v3/shards/abc.json", kindManifest}, // no namespace
		{"v2/ns/shards/abc.json", kindManifest},
		{"x86_64-unknown-linux-gnu.json", kindManifest},
		{"id/d/t/p.json", kindManifest},
	}
	for _, tt := range tests {
		if got := manifestKind(tt.rel); got != tt.want {
			t.Errorf("manifestKind(%q) = %s, want %s", tt.rel, got, tt.want)
		}
	}
}

func TestInvalidReports(t *testing.T) {
	tests := []struct {
		name string
		rel  string
		body string
		kind kind
		want int   // counted invalid
		max  int64 // MaxBodyBytes; 100 when 0
	}{
		{name: "manifest not JSON", rel: "a.json", body: `{"entries":`, kind: kindManifest, want: 1},
		{name: "manifest of the wrong shape", rel: "a.json", body: `{"entries":{"a":1}}`, kind: kindManifest, want: 1},
		{name: "shard not JSON", rel: "v3/ns/shards/h.json", body: `[`, kind: kindShard, want: 1},
		{name: "too large", rel: "a.json", body: `{"entries":[]}` + strings.Repeat(" ", 100), kind: kindManifest, want: 1},
		{name: "not a .json key", rel: "README", body: `hello`, kind: kindManifest, want: 0},
		{name: "manifest whose every entry is invalid", rel: "a.json",
			body: `{"entries":[{"cache_key":"ABC","crate_name":"x"},{"cache_key":"` + key(1) + `","crate_name":"../up"}]}`, kind: kindManifest, want: 1, max: 1 << 20},
		{name: "shard whose every entry is invalid", rel: "v3/ns/shards/h.json",
			body: `{"version":3,"entries":[{"cache_key":"nope","crate_name":"bad"}]}`, kind: kindShard, want: 1, max: 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			limit := tt.max
			if limit == 0 {
				limit = 100
			}
			r := newReporter(t, Config{MaxBodyBytes: limit}, f)
			start(t, r)
			r.ManifestPut(tt.rel, []byte(tt.body))
			stop(t, r)
			if got := count(r, tt.kind, resultInvalid); got != tt.want {
				t.Errorf("invalid = %d, want %d", got, tt.want)
			}
			if n := len(f.received()); n != 0 {
				t.Errorf("central received %d manifests", n)
			}
		})
	}
}

func meta(c byte, crate, target, profile string, features ...string) packmeta.Meta {
	return packmeta.Meta{CacheKey: key(c), CrateName: crate, Target: target, Profile: profile, Features: features, CompileTimeMs: uint64(c) * 100}
}

func TestPacksBatchedByDims(t *testing.T) {
	f := newFake()
	r := newReporter(t, Config{FlushInterval: time.Hour}, f)
	start(t, r)
	const linux, mac = "x86_64-unknown-linux-gnu", "aarch64-apple-darwin"
	r.PackPut(meta(1, "serde", linux, "release", "derive", "std"), 1000)
	r.PackPut(meta(2, "serde_json", linux, "release", "std", "derive"), 2000) // same features, other order
	r.PackPut(meta(3, "syn", linux, "dev"), 3000)
	r.PackPut(meta(4, "libc", mac, "release", "derive", "std"), 4000)
	r.PackPut(meta(5, "quote", linux, "dev"), 5000)
	r.PackPut(packmeta.Meta{CacheKey: "short", CrateName: "bad"}, 1)
	stop(t, r) // flushes the pending batches
	golden(t, "packs_by_dims", f.received())
	if got := count(r, kindPack, resultSent); got != 5 {
		t.Errorf("packs sent = %d, want 5", got)
	}
	if got := count(r, kindPack, resultInvalid); got != 1 {
		t.Errorf("packs invalid = %d, want 1", got)
	}
}

func TestPackBatchSize(t *testing.T) {
	f := newFake()
	r := newReporter(t, Config{FlushInterval: time.Hour, BatchSize: 3}, f)
	start(t, r)
	for i := range 7 {
		r.PackPut(meta(byte(i+1), "c", "t", "p"), 1)
	}
	f.waitCalls(t, 2) // two full batches go at once
	stop(t, r)
	var sizes []int
	for _, raw := range f.received() {
		var m wire.BuildManifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(m.Entries))
	}
	if len(sizes) != 3 || sizes[0] != 3 || sizes[1] != 3 || sizes[2] != 1 {
		t.Errorf("batches of %v, want [3 3 1]", sizes)
	}
}

func TestPacksFlushedOnInterval(t *testing.T) {
	f := newFake()
	r := newReporter(t, Config{FlushInterval: 20 * time.Millisecond}, f)
	start(t, r)
	r.PackPut(meta(1, "serde", "t", "p"), 10)
	f.waitCalls(t, 1) // without Stop
	stop(t, r)
	if got := count(r, kindPack, resultSent); got != 1 {
		t.Errorf("packs sent = %d, want 1", got)
	}
}

func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	f := newFake()
	f.set(true, nil)
	r := newReporter(t, Config{}, f)
	start(t, r)
	body := []byte(`{"version":3,"entries":[]}`)
	const calls = 10000
	began := time.Now()
	for i := range calls {
		if i%2 == 0 {
			r.ManifestPut("host.json", body)
		} else {
			r.PackPut(meta(1, "serde", "t", "p"), 1)
		}
	}
	if el := time.Since(began); el > time.Second {
		t.Errorf("%d reports took %v with central stalled", calls, el)
	}
	dropped := count(r, kindManifest, resultDroppedFull) + count(r, kindPack, resultDroppedFull)
	if dropped < calls-r.cfg.QueueLen-1 {
		t.Errorf("dropped_full = %d, want at least %d", dropped, calls-r.cfg.QueueLen-1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began = time.Now()
	err := r.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want deadline exceeded", err)
	}
	if el := time.Since(began); el > 2*time.Second {
		t.Errorf("Stop took %v with a 200ms context", el)
	}
	total := 0
	for _, k := range kinds {
		for _, res := range results {
			total += count(r, k, res)
		}
	}
	if total != calls || count(r, kindManifest, resultSent) != 0 {
		t.Errorf("%d reports counted (sent %d), want all %d dropped", total, count(r, kindManifest, resultSent), calls)
	}
	if q := queueLength(r); q != 0 {
		t.Errorf("queue length after Stop = %v", q)
	}
}

func TestQueuedBytesBounded(t *testing.T) {
	f := newFake()
	f.set(true, nil)
	r := newReporter(t, Config{MaxBodyBytes: 1 << 10, MaxQueuedBytes: 4 << 10}, f)
	start(t, r)
	body := []byte(`{"entries":[]}` + strings.Repeat(" ", 1000))
	for range 20 {
		r.ManifestPut("a.json", body)
	}
	// At most one in flight plus four queued.
	if got := count(r, kindManifest, resultDroppedFull); got < 15 {
		t.Errorf("dropped_full = %d, want at least 15", got)
	}
	if q := r.queuedBytes.Load(); q > 4<<10 {
		t.Errorf("queued %d bytes, over the budget", q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r.Stop(ctx)
}

func TestStopDrainsQueue(t *testing.T) {
	f := newFake()
	r := newReporter(t, Config{FlushInterval: time.Hour}, f)
	for i := range 50 { // queued before Start
		r.ManifestPut("host.json", []byte(`{"entries":[{"cache_key":"`+key(byte(i))+`","crate_name":"c","compile_time_ms":1,"artifact_size":1}]}`))
		r.PackPut(meta(byte(i), "c", "t", "p"), 1)
	}
	start(t, r)
	stop(t, r)
	if got := count(r, kindManifest, resultSent); got != 50 {
		t.Errorf("manifests sent = %d, want 50", got)
	}
	if got := count(r, kindPack, resultSent); got != 50 {
		t.Errorf("packs sent = %d, want 50", got)
	}
	r.ManifestPut("host.json", []byte(`{}`))
	r.PackPut(meta(1, "c", "t", "p"), 1)
	if count(r, kindManifest, resultDroppedShutdown) != 1 || count(r, kindPack, resultDroppedShutdown) != 1 {
		t.Error("reports after Stop were not counted as dropped_shutdown")
	}
	if err := r.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop = %v, want ErrStopped", err)
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Errorf("second Stop = %v", err)
	}
}

func TestStopWithoutStart(t *testing.T) {
	r := newReporter(t, Config{}, newFake())
	r.ManifestPut("host.json", []byte(`{}`))
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := count(r, kindManifest, resultDroppedShutdown); got != 1 {
		t.Errorf("dropped_shutdown = %d, want 1", got)
	}
}

// statusErr is central's answer with a status, as central.StatusError
// reports it.
type statusErr int

func (e statusErr) Error() string   { return fmt.Sprintf("central answered %d", int(e)) }
func (e statusErr) HTTPStatus() int { return int(e) }

// manifestKeys are the manifest keys central received, in order.
func (f *fakeCentral) manifestKeys() []string {
	var keys []string
	for _, raw := range f.received() {
		var m wire.BuildManifest
		_ = json.Unmarshal(raw, &m)
		keys = append(keys, m.ManifestKey)
	}
	return keys
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached in 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// What central could not take while it failed reaches it, in order, once
// it answers again; a refusal (4xx) is not sent again.
func TestHeldReportsReachCentralWhenItRecovers(t *testing.T) {
	var logs bytes.Buffer
	f := newFake()
	f.set(false, errors.New("connection refused"))
	r, err := New(Config{FlushInterval: 10 * time.Millisecond}, Deps{Central: f, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	for _, k := range []string{"a", "b", "c"} {
		r.ManifestPut(k+".json", []byte(`{"entries":[]}`))
	}
	eventually(t, "three reports held", func() bool { return r.heldEntries.Load() == 3 })
	f.set(false, nil)
	eventually(t, "held reports sent", func() bool { return len(f.received()) == 3 })
	if got := f.manifestKeys(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("central received %v, want a, b, c in order", got)
	}
	f.set(false, statusErr(422))
	r.ManifestPut("refused.json", []byte(`{"entries":[]}`))
	eventually(t, "refusal counted", func() bool { return count(r, kindManifest, resultDroppedError) == 1 })
	f.set(false, nil)
	r.ManifestPut("d.json", []byte(`{"entries":[]}`))
	eventually(t, "next report sent", func() bool { return len(f.received()) == 4 })
	stop(t, r)
	if got := f.manifestKeys(); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("central received %v: the refused report was sent again", got)
	}
	if got := count(r, kindManifest, resultSent); got != 4 {
		t.Errorf("sent = %d, want 4", got)
	}
	if warns := strings.Count(logs.String(), "level=WARN"); warns != 2 {
		t.Errorf("%d warnings (one failure streak, one refusal), want 2:\n%s", warns, logs.String())
	}
	if !strings.Contains(logs.String(), "held_and_sent=3") {
		t.Errorf("recovery not logged with its count:\n%s", logs.String())
	}
}

// Held reports are bounded: past HeldEntries the oldest go, counted; what
// is still held when the reporter stops with central down is counted too.
func TestHeldReportsAreBounded(t *testing.T) {
	f := newFake()
	f.set(false, statusErr(503))
	r := newReporter(t, Config{FlushInterval: time.Hour, HeldEntries: 3}, f)
	start(t, r)
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		r.ManifestPut(k+".json", []byte(`{"entries":[]}`))
	}
	eventually(t, "two oldest dropped", func() bool { return count(r, kindManifest, resultDroppedError) == 2 })
	if got := r.heldEntries.Load(); got != 3 {
		t.Errorf("%d entries held, want 3", got)
	}
	stop(t, r)
	if got := count(r, kindManifest, resultDroppedShutdown); got != 3 {
		t.Errorf("dropped_shutdown = %d, want the 3 held", got)
	}
	if len(f.received()) != 0 || r.heldEntries.Load() != 0 {
		t.Errorf("received %d, %d still held", len(f.received()), r.heldEntries.Load())
	}
}

// Stop gives central one last chance with what is held.
func TestStopSendsHeldReports(t *testing.T) {
	f := newFake()
	f.set(false, errors.New("connection refused"))
	r := newReporter(t, Config{FlushInterval: time.Hour}, f)
	start(t, r)
	r.ManifestPut("a.json", []byte(`{"entries":[]}`))
	r.ManifestPut("b.json", []byte(`{"entries":[]}`))
	eventually(t, "two held", func() bool { return r.heldEntries.Load() == 2 })
	f.set(false, nil)
	stop(t, r)
	if got := f.manifestKeys(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("central received %v at Stop, want a, b", got)
	}
}

func TestNoCentral(t *testing.T) {
	r, err := New(Config{}, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.ManifestPut("host.json", []byte(`{}`))
	r.ManifestPut("v3/ns/shards/h.json", []byte(`{}`))
	r.PackPut(meta(1, "serde", "t", "p"), 1)
	o := r.Pack()
	if n, err := o.Write([]byte("anything")); n != 8 || err != nil {
		t.Errorf("Write = %d, %v", n, err)
	}
	o.Done(8, "serde", key(1))
	for _, k := range kinds {
		want := 1
		if k == kindPack {
			want = 2
		}
		if got := count(r, k, resultDroppedNoCentral); got != want {
			t.Errorf("%s dropped_no_central = %d, want %d", k, got, want)
		}
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNilReporter(t *testing.T) {
	var r *Reporter
	r.ManifestPut("host.json", []byte(`{}`))
	r.PackPut(meta(1, "serde", "t", "p"), 1)
	o := r.Pack()
	o.Write([]byte("x"))
	o.Done(1, "serde", key(1))
	o.Abort()
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{QueueLen: -1}, Deps{}); err == nil {
		t.Error("negative QueueLen accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, Deps{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, Deps{Registerer: reg}); err == nil {
		t.Error("second registration on one registry accepted")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["kache_sidecar_report_total"] || !names["kache_sidecar_report_queue_length"] {
		t.Errorf("registered %v", names)
	}
}

// testPack is a kache pack: meta.json first, then one file.
func testPack(t *testing.T, m map[string]any, file []byte) []byte {
	t.Helper()
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range []struct {
		name string
		data []byte
	}{{"meta.json", js}, {"lib.rlib", file}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw.Bytes(), nil)
}

func TestPackObserver(t *testing.T) {
	file := bytes.Repeat([]byte("rlib"), 64<<10)
	pack := testPack(t, map[string]any{
		"cache_key": key(1), "key_schema": 1, "crate_name": "serde", "crate_types": []string{"lib"},
		"files":  []map[string]any{{"name": "lib.rlib", "size": len(file), "hash": key(2), "executable": false}},
		"stdout": "", "stderr": "", "features": []string{"std", "derive"}, "target": "x86_64-unknown-linux-gnu",
		"profile": "release", "compile_time_ms": 1234, "emit_kinds": []string{"link"},
	}, file)
	f := newFake()
	r := newReporter(t, Config{FlushInterval: time.Hour}, f)
	start(t, r)
	write := func(o *PackObserver, b []byte) {
		for len(b) > 0 {
			n := min(1000, len(b))
			if w, err := o.Write(b[:n]); w != n || err != nil {
				t.Fatalf("Write = %d, %v", w, err)
			}
			b = b[n:]
		}
	}

	ok := r.Pack()
	write(ok, pack)
	ok.Done(int64(len(pack)), "serde", key(1))

	garbage := r.Pack()
	write(garbage, bytes.Repeat([]byte{0xaa}, 5000))
	garbage.Done(5000, "serde", key(3))

	// A whole pack whose meta.json names another entry than the object
	// it was uploaded as: central must not learn a key the bucket lacks.
	for _, at := range [][2]string{{"serde", key(4)}, {"serde_json", key(1)}} {
		foreign := r.Pack()
		write(foreign, pack)
		foreign.Done(int64(len(pack)), at[0], at[1])
	}

	// Cut after its meta.json: stored by the bucket, not reported.
	cut := r.Pack()
	write(cut, pack[:len(pack)-3])
	cut.Done(int64(len(pack)-3), "serde", key(1))

	aborted := r.Pack()
	write(aborted, pack[:len(pack)/2])
	aborted.Abort()

	stop(t, r)
	got := f.received()
	if len(got) != 1 {
		t.Fatalf("central received %d manifests, want 1", len(got))
	}
	var m wire.BuildManifest
	if err := json.Unmarshal(got[0], &m); err != nil {
		t.Fatal(err)
	}
	want := wire.ManifestEntry{CacheKey: key(1), CrateName: "serde", CompileTimeMs: 1234, ArtifactSize: uint64(len(pack))}
	if len(m.Entries) != 1 || m.Entries[0] != want || m.ManifestKey != ObservedManifestKey || m.Target != "x86_64-unknown-linux-gnu" ||
		m.Profile != "release" || strings.Join(m.Features, ",") != "derive,std" || m.Runner == nil || m.Created == "" {
		t.Errorf("observed manifest %s", got[0])
	}
	if count(r, kindPack, resultSent) != 1 || count(r, kindPack, resultInvalid) != 4 {
		t.Errorf("packs sent %d invalid %d, want 1 and 4", count(r, kindPack, resultSent), count(r, kindPack, resultInvalid))
	}
}
