// Package report tells central what the sidecar's S3 surface saw uploaded,
// seconds after the bucket acknowledged it, so central plans with a build's
// data before its next bucket crawl: build manifests and Cargo.lock shards
// PUT under `{prefix}/_manifests/` are forwarded as they are, and uploaded
// packs' meta.json (target, profile, features, compile time) are batched
// into observed manifests.
//
// Reporting never slows a request: the surface's calls only enqueue, and one
// worker goroutine talks to central. While central fails, what it could not
// take is held (up to Config.HeldEntries manifest entries) and sent again,
// oldest first, once it answers; what cannot be queued or held is dropped
// and counted, and the bucket crawl remains the source of truth. Held
// reports matter: the crawl learns a pack's key but not its target and
// profile, so a build that landed during an outage would otherwise lose to
// older, tagged keys in central's plans.
package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/packmeta"
)

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("reporter stopped")

// Central is where reports go (central.Client). PostManifest must return
// once ctx is done.
type Central interface {
	PostManifest(ctx context.Context, m *wire.BuildManifest) (wire.IngestResult, error)
}

// Config configures a Reporter. Zero values take the defaults noted;
// negative ones are refused.
type Config struct {
	// QueueLen bounds the reports waiting for the worker. Default 256.
	QueueLen int
	// MaxBodyBytes bounds a forwarded manifest or shard body; larger ones
	// are counted invalid (central refuses them too). Default 16 MiB.
	MaxBodyBytes int64
	// MaxQueuedBytes bounds the manifest bodies held in the queue together.
	// Default 64 MiB.
	MaxQueuedBytes int64
	// FlushInterval is how long observed packs wait to be batched with
	// others of the same target, profile and features. Default 2 s.
	FlushInterval time.Duration
	// BatchSize sends a batch of observed packs at once when it reaches
	// this many. Default 500.
	BatchSize int
	// SendTimeout bounds one request to central. Default 10 s.
	SendTimeout time.Duration
	// Runner is the CI context added to every report that has none.
	Runner *wire.RunnerContext
	// HeldEntries bounds the manifest entries held for another try while
	// central fails (about 200 bytes each); the oldest reports go first.
	// Default 50,000.
	HeldEntries int
}

func (c Config) withDefaults() (Config, error) {
	if c.QueueLen < 0 || c.MaxBodyBytes < 0 || c.MaxQueuedBytes < 0 || c.FlushInterval < 0 || c.BatchSize < 0 || c.SendTimeout < 0 || c.HeldEntries < 0 {
		return c, fmt.Errorf("report config: negative value in %+v", c)
	}
	if c.QueueLen == 0 {
		c.QueueLen = 256
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 16 << 20
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = 64 << 20
	}
	c.MaxQueuedBytes = max(c.MaxQueuedBytes, c.MaxBodyBytes)
	if c.FlushInterval == 0 {
		c.FlushInterval = 2 * time.Second
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 10 * time.Second
	}
	if c.HeldEntries == 0 {
		c.HeldEntries = 50_000
	}
	return c, nil
}

// Deps are a Reporter's collaborators. Central nil (untyped) makes a
// Reporter that counts every report as dropped_no_central; Registerer nil
// registers no metrics.
type Deps struct {
	Central    Central
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock that dates observed-pack manifests; nil means
	// time.Now.
	Now func() time.Time
}

// item is one queued report.
type item struct {
	kind kind
	rel  string // below _manifests/, for manifests and shards
	body []byte
	meta packmeta.Meta // for packs
	size int64         // the pack's bytes
}

// Reporter queues what uploads teach and sends it to central from one
// worker goroutine, owned by Start and Stop. Its reporting methods are safe
// for concurrent use, never block, and do nothing on a nil *Reporter.
type Reporter struct {
	cfg     Config
	central Central
	runner  *wire.RunnerContext
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	queue       chan item
	queuedBytes atomic.Int64

	// mu guards the lifecycle; enqueues hold it shared so none lands in
	// the queue after Stop has begun.
	mu      sync.RWMutex
	started bool
	stopped bool
	quit    chan struct{}
	done    chan struct{}
	cancel  context.CancelFunc

	// Worker state.
	pending  map[string]*wire.BuildManifest // observed packs by dims key
	failing  bool
	failures int
	// held are the reports central could not take, oldest first, with
	// their entries counted in heldEntries (read by the gauge); they are
	// tried again at retryAt, backing off while central keeps failing.
	held        []heldReport
	heldEntries atomic.Int64
	retryAt     time.Time
	backoff     time.Duration
}

// heldReport is a manifest standing for n reports of one kind.
type heldReport struct {
	kind kind
	m    *wire.BuildManifest
	n    int
}

// maxBackoff bounds the wait between two tries while central fails.
const maxBackoff = 30 * time.Second

// New builds a Reporter; nothing is sent before Start.
func New(cfg Config, deps Deps) (*Reporter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	r := &Reporter{
		cfg:     cfg,
		central: deps.Central,
		runner:  cloneRunner(cfg.Runner),
		log:     log.With("component", "report"),
		now:     now,
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		pending: map[string]*wire.BuildManifest{},
	}
	if r.central != nil {
		r.queue = make(chan item, cfg.QueueLen)
	}
	r.metrics, err = newMetrics(deps.Registerer, func() float64 { return float64(len(r.queue)) },
		func() float64 { return float64(r.heldEntries.Load()) })
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Start launches the worker. Without a central it does nothing.
func (r *Reporter) Start(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.stopped:
		return fmt.Errorf("start reporter: %w", ErrStopped)
	case r.started || r.central == nil:
		return nil
	}
	r.started = true
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(ctx)
	return nil
}

// Stop refuses new reports, then sends what is queued and the pending
// packs within ctx; when ctx ends first, the send in flight is cancelled
// and the rest is dropped and counted. It waits for the worker.
func (r *Reporter) Stop(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	started := r.started
	r.mu.Unlock()
	if !started {
		r.dropQueued()
		return nil
	}
	close(r.quit)
	defer r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.cancel()
		<-r.done
		return fmt.Errorf("stop reporter: %w", ctx.Err())
	}
}

// ManifestPut reports an acknowledged PUT under `{prefix}/_manifests/`; rel
// is the key below it. body is copied. Keys not ending in .json are
// ignored, as central's crawler ignores them.
func (r *Reporter) ManifestPut(rel string, body []byte) {
	if r == nil || !strings.HasSuffix(rel, ".json") {
		return
	}
	k := manifestKind(rel)
	if r.central != nil && int64(len(body)) > r.cfg.MaxBodyBytes {
		r.metrics.count(k, resultInvalid, 1)
		return
	}
	r.enqueue(item{kind: k, rel: rel, body: body})
}

// PackPut reports an acknowledged pack of packBytes bytes whose meta.json
// says meta. Packs of the same target, profile and features reach central
// together, as one observed manifest per FlushInterval (or BatchSize).
func (r *Reporter) PackPut(meta packmeta.Meta, packBytes int64) {
	if r == nil {
		return
	}
	if r.central != nil && !validEntry(meta.CacheKey, meta.CrateName) {
		r.metrics.count(kindPack, resultInvalid, 1)
		return
	}
	r.enqueue(item{kind: kindPack, meta: meta, size: max(packBytes, 0)})
}

// enqueue queues it without blocking, or counts why not. A body is copied
// only once it has room.
func (r *Reporter) enqueue(it item) {
	if r.central == nil {
		r.metrics.count(it.kind, resultDroppedNoCentral, 1)
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.stopped {
		r.metrics.count(it.kind, resultDroppedShutdown, 1)
		return
	}
	n := int64(len(it.body))
	if r.queuedBytes.Add(n) > r.cfg.MaxQueuedBytes {
		r.queuedBytes.Add(-n)
		r.metrics.count(it.kind, resultDroppedFull, 1)
		return
	}
	if n > 0 {
		it.body = bytes.Clone(it.body)
	}
	select {
	case r.queue <- it:
	default:
		r.queuedBytes.Add(-n)
		r.metrics.count(it.kind, resultDroppedFull, 1)
	}
}

// run is the worker.
func (r *Reporter) run(ctx context.Context) {
	defer close(r.done)
	tick := time.NewTicker(r.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case it := <-r.queue:
			r.handle(ctx, it)
		case <-tick.C:
			r.flushPacks(ctx)
			r.retryHeld(ctx, false)
		case <-r.quit:
			r.drain(ctx)
			return
		}
	}
}

// drain handles what is queued (Stop has closed the door), then flushes
// the pending packs. Once ctx is cancelled everything left is counted as
// dropped without a request.
func (r *Reporter) drain(ctx context.Context) {
	for {
		select {
		case it := <-r.queue:
			r.handle(ctx, it)
		default:
			r.flushPacks(ctx)
			r.retryHeld(ctx, true)
			for _, h := range r.held {
				r.metrics.count(h.kind, resultDroppedShutdown, h.n)
			}
			r.held = nil
			r.heldEntries.Store(0)
			return
		}
	}
}

// dropQueued counts what a Reporter stopped before it started had queued.
func (r *Reporter) dropQueued() {
	for {
		select {
		case it := <-r.queue:
			r.metrics.count(it.kind, resultDroppedShutdown, 1)
		default:
			return
		}
	}
}

func (r *Reporter) handle(ctx context.Context, it item) {
	if it.kind == kindPack {
		r.addPack(ctx, it)
		return
	}
	r.queuedBytes.Add(-int64(len(it.body)))
	var (
		m       *wire.BuildManifest
		skipped int
		err     error
	)
	if it.kind == kindShard {
		m, skipped, err = shardManifest(it.rel, it.body, r.created())
	} else {
		m, skipped, err = buildManifest(it.rel, it.body)
	}
	if err != nil {
		r.metrics.count(it.kind, resultInvalid, 1)
		r.log.Debug("not reporting an invalid manifest", "kind", it.kind, "key", it.rel, "error", err)
		return
	}
	if skipped > 0 && len(m.Entries) == 0 {
		// Nothing valid is left: forwarding an empty manifest would have
		// central store a build made of malformed input.
		r.metrics.count(it.kind, resultInvalid, 1)
		r.log.Debug("not reporting a manifest whose every entry is invalid", "kind", it.kind, "key", it.rel, "skipped", skipped)
		return
	}
	if skipped > 0 {
		r.log.Debug("left out invalid manifest entries", "kind", it.kind, "key", it.rel, "skipped", skipped)
	}
	if m.Runner == nil {
		m.Runner = r.runner
	}
	r.send(ctx, it.kind, m, 1)
}

// addPack adds an observed pack to the batch of its dims, sending the batch
// when it is full.
func (r *Reporter) addPack(ctx context.Context, it item) {
	d := dimsOf(it.meta)
	key := d.key()
	m := r.pending[key]
	if m == nil {
		m = &wire.BuildManifest{Version: 3, ManifestKey: ObservedManifestKey, Target: d.target, Profile: d.profile, Features: d.features, Runner: r.runner}
		r.pending[key] = m
	}
	m.Entries = append(m.Entries, wire.ManifestEntry{
		CacheKey: it.meta.CacheKey, CrateName: it.meta.CrateName, CompileTimeMs: it.meta.CompileTimeMs, ArtifactSize: uint64(it.size),
	})
	if len(m.Entries) >= r.cfg.BatchSize {
		delete(r.pending, key)
		r.sendPacks(ctx, m)
	}
}

// flushPacks sends every pending batch, in a stable order.
func (r *Reporter) flushPacks(ctx context.Context) {
	for _, key := range slices.Sorted(maps.Keys(r.pending)) {
		m := r.pending[key]
		delete(r.pending, key)
		r.sendPacks(ctx, m)
	}
}

func (r *Reporter) sendPacks(ctx context.Context, m *wire.BuildManifest) {
	m.Created = r.created()
	r.send(ctx, kindPack, m, len(m.Entries))
}

// send posts m, which stands for n reports of kind k, and counts the
// outcome. While reports are held (central failing) it joins them instead,
// so they reach central in order and a failing central is not asked more
// often than the backoff allows.
func (r *Reporter) send(ctx context.Context, k kind, m *wire.BuildManifest, n int) {
	if ctx.Err() != nil {
		r.metrics.count(k, resultDroppedShutdown, n)
		return
	}
	if len(r.held) == 0 && r.post(ctx, k, m, n) {
		return
	}
	if len(r.held) == 0 {
		r.backoff = r.cfg.FlushInterval
		r.retryAt = r.now().Add(r.backoff)
	}
	r.failures += n
	r.hold(k, m, n)
}

// post sends one report and counts its outcome unless central failed
// (false): then the caller holds it.
func (r *Reporter) post(ctx context.Context, k kind, m *wire.BuildManifest, n int) bool {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SendTimeout)
	res, err := r.central.PostManifest(sctx, m)
	cancel()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.metrics.count(k, resultDroppedShutdown, n)
		return true
	case refused(err):
		// Central read it and said no: another try gets the same answer.
		r.metrics.count(k, resultDroppedError, n)
		r.log.Warn("central refused a report", "kind", k, "manifest_key", m.ManifestKey, "error", err)
		return true
	default:
		if !r.failing {
			r.failing = true
			r.log.Warn("reporting to central failed; holding reports until it works again", "kind", k, "manifest_key", m.ManifestKey, "error", err)
		}
		return false
	}
	r.metrics.count(k, resultSent, n)
	r.log.Debug("reported to central", "kind", k, "manifest_key", m.ManifestKey, "entries", len(m.Entries), "stored", res.Stored, "new", res.New)
	return true
}

// hold keeps a report for another try, dropping (and counting) the oldest
// when the held entries would pass HeldEntries.
func (r *Reporter) hold(k kind, m *wire.BuildManifest, n int) {
	r.held = append(r.held, heldReport{kind: k, m: m, n: n})
	total := r.heldEntries.Add(weight(m))
	for total > int64(r.cfg.HeldEntries) && len(r.held) > 0 {
		old := r.held[0]
		r.held = r.held[1:]
		total = r.heldEntries.Add(-weight(old.m))
		r.metrics.count(old.kind, resultDroppedError, old.n)
	}
}

// weight is what a held manifest counts against HeldEntries.
func weight(m *wire.BuildManifest) int64 { return int64(len(m.Entries) + 1) }

// retryHeld sends the held reports, oldest first, until central fails
// again (then it backs off, doubling up to maxBackoff). force ignores the
// backoff (Stop gives central one last chance).
func (r *Reporter) retryHeld(ctx context.Context, force bool) {
	if len(r.held) == 0 || !force && r.now().Before(r.retryAt) {
		return
	}
	for len(r.held) > 0 && ctx.Err() == nil {
		h := r.held[0]
		if !r.post(ctx, h.kind, h.m, h.n) {
			r.backoff = min(max(2*r.backoff, r.cfg.FlushInterval), maxBackoff)
			r.retryAt = r.now().Add(r.backoff)
			return
		}
		r.held = r.held[1:]
		r.heldEntries.Add(-weight(h.m))
	}
	if len(r.held) == 0 && r.failing {
		r.log.Info("reporting to central works again", "held_and_sent", r.failures)
		r.failing, r.failures = false, 0
	}
}

// refused reports whether central answered the report with a client error
// other than 408 and 429: it read the report and will not take it.
func refused(err error) bool {
	var s interface{ HTTPStatus() int }
	if !errors.As(err, &s) {
		return false
	}
	c := s.HTTPStatus()
	return c >= 400 && c < 500 && c != 408 && c != 429
}

func (r *Reporter) created() string {
	return r.now().UTC().Format(time.RFC3339Nano)
}

func cloneRunner(rc *wire.RunnerContext) *wire.RunnerContext {
	if rc == nil {
		return nil
	}
	c := *rc
	c.Labels = maps.Clone(rc.Labels)
	return &c
}
