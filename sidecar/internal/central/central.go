// Package central is the sidecar's client of the central planner: plan
// requests carrying the sidecar's runner context, and build-timeline and
// build-manifest uploads.
package central

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Errors returned by the client; transport errors and context errors are
// wrapped as they come.
var (
	// ErrStatus is wrapped for every non-2xx answer (see StatusError).
	ErrStatus = errors.New("central returned an error status")
	// ErrTooLarge is wrapped when a response exceeds MaxResponseBytes.
	ErrTooLarge = errors.New("central response too large")
	// ErrNotConfigured is returned by New for an empty endpoint.
	ErrNotConfigured = errors.New("central endpoint not configured")
)

// StatusError carries the status of a non-2xx answer.
type StatusError struct {
	Code int
	// Message is central's {"error": ...} text when it sent one.
	Message string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s: %d: %s", ErrStatus, e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %d", ErrStatus, e.Code)
}

// Unwrap makes errors.Is(err, ErrStatus) hold.
func (e *StatusError) Unwrap() error { return ErrStatus }

// Config configures the client.
type Config struct {
	// Endpoint is central's base URL, or a full plan URL ending in
	// /v1/prefetch-plan or /v2/prefetch-plan (kache's rule, see PlanURL).
	Endpoint string
	// Token is sent as `Authorization: Bearer <token>` when non-blank.
	Token string
	// PlanTimeout bounds one plan request on top of the caller's context.
	// Default 2 s; the sidecar's planner passes a much shorter context.
	PlanTimeout time.Duration
	// TimelineTimeout bounds one timeline or manifest upload. Default 30 s,
	// kache's floor for timelines.
	TimelineTimeout time.Duration
	// MaxResponseBytes bounds a response body. Default 16 MiB.
	MaxResponseBytes int64
	// MaxIdleConnsPerHost keeps connections to central warm. Default 4.
	MaxIdleConnsPerHost int
	// UserAgent identifies the sidecar, e.g. "kache-sidecar/1.2.3".
	UserAgent string
}

func (c Config) withDefaults() Config {
	if c.PlanTimeout <= 0 {
		c.PlanTimeout = 2 * time.Second
	}
	if c.TimelineTimeout <= 0 {
		c.TimelineTimeout = 30 * time.Second
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = 16 << 20
	}
	if c.MaxIdleConnsPerHost <= 0 {
		c.MaxIdleConnsPerHost = 4
	}
	if c.UserAgent == "" {
		c.UserAgent = "kache-sidecar"
	}
	return c
}

// Client talks to central. It is safe for concurrent use and reuses one
// http.Client and its connections.
type Client struct {
	cfg         Config
	planURL     string
	timelineURL string
	manifestURL string
	auth        string
	http        *http.Client
	enc         *zstd.Encoder
	log         *slog.Logger
}

// New builds a client; nothing is contacted until the first request.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	cfg = cfg.withDefaults()
	if strings.TrimSpace(cfg.Endpoint) == "" {
		return nil, fmt.Errorf("create central client: %w", ErrNotConfigured)
	}
	planURL, timelineURL := PlanURL(cfg.Endpoint), TimelineURL(cfg.Endpoint)
	if !strings.HasPrefix(planURL, "http://") && !strings.HasPrefix(planURL, "https://") {
		return nil, fmt.Errorf("create central client: endpoint %q is not an http(s) URL", cfg.Endpoint)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Level 3 is kache's timeline level. EncodeAll with concurrency 1
	// starts no goroutines and is safe for concurrent use.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(3)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("create zstd encoder: %w", err)
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          cfg.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		MaxConnsPerHost:       4 * cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   3 * time.Second,
		ResponseHeaderTimeout: cfg.TimelineTimeout,
		ExpectContinueTimeout: time.Second,
	}
	c := &Client{
		cfg:         cfg,
		planURL:     planURL,
		timelineURL: timelineURL,
		manifestURL: ManifestURL(cfg.Endpoint),
		http:        &http.Client{Transport: tr},
		enc:         enc,
		log:         logger.With("component", "central_client"),
	}
	if tok := strings.TrimSpace(cfg.Token); tok != "" {
		c.auth = "Bearer " + tok
	}
	return c, nil
}

// Close releases idle connections and the encoder.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return c.enc.Close()
}

// PlanURL applies kache's rule (kache-protocol.md 3.3): trailing slashes are
// removed; an endpoint already ending in /v1/prefetch-plan or
// /v2/prefetch-plan is used as is, anything else gets /v2/prefetch-plan.
func PlanURL(endpoint string) string {
	e := strings.TrimRight(strings.TrimSpace(endpoint), "/")
	if strings.HasSuffix(e, "/v1/prefetch-plan") || strings.HasSuffix(e, "/v2/prefetch-plan") {
		return e
	}
	return e + "/v2/prefetch-plan"
}

// ManifestURL is central's manifest route on the same base as TimelineURL:
// {base}/v1/manifests.
func ManifestURL(endpoint string) string {
	return strings.TrimSuffix(TimelineURL(endpoint), "/v1/build-timelines") + "/v1/manifests"
}

// TimelineURL derives the timeline route as kache does (section 7): strip a
// trailing /v{1,2}/prefetch-plan, keep any path prefix, append
// /v1/build-timelines.
func TimelineURL(endpoint string) string {
	e := strings.TrimRight(strings.TrimSpace(endpoint), "/")
	e = strings.TrimSuffix(e, "/v1/prefetch-plan")
	e = strings.TrimSuffix(e, "/v2/prefetch-plan")
	return strings.TrimRight(e, "/") + "/v1/build-timelines"
}

// Plan posts intent (with its additive fields) and decodes the answer with
// the kache client's rules; a plan a kache client would reject is an error.
func (c *Client) Plan(ctx context.Context, intent *wire.BuildIntent) (wire.PrefetchPlan, error) {
	body, err := json.Marshal(intent)
	if err != nil {
		return wire.PrefetchPlan{}, fmt.Errorf("encode intent: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PlanTimeout)
	defer cancel()
	raw, err := c.post(ctx, c.planURL, body, "")
	if err != nil {
		return wire.PrefetchPlan{}, fmt.Errorf("request plan: %w", err)
	}
	plan, err := wire.DecodePlan(raw)
	if err != nil {
		return wire.PrefetchPlan{}, fmt.Errorf("decode plan: %w", err)
	}
	return plan, nil
}

// PostTimeline uploads one build timeline as zstd-compressed JSON
// (kache-protocol.md 7) and returns central's verdict.
func (c *Client) PostTimeline(ctx context.Context, t *wire.BuildTimeline) (wire.TimelineStored, error) {
	js, err := json.Marshal(t)
	if err != nil {
		return wire.TimelineStored{}, fmt.Errorf("encode timeline: %w", err)
	}
	body := c.enc.EncodeAll(js, make([]byte, 0, len(js)/4+64))
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TimelineTimeout)
	defer cancel()
	raw, err := c.post(ctx, c.timelineURL, body, "zstd")
	if err != nil {
		return wire.TimelineStored{}, fmt.Errorf("post timeline: %w", err)
	}
	var out wire.TimelineStored
	if err := json.Unmarshal(raw, &out); err != nil {
		return wire.TimelineStored{}, fmt.Errorf("decode timeline answer: %w", err)
	}
	return out, nil
}

// PostManifest posts one build manifest as JSON to central's
// POST /v1/manifests (on the endpoint's base, as for timelines) and returns
// what central stored. It is bounded by TimelineTimeout, the client's
// timeout for uploads.
func (c *Client) PostManifest(ctx context.Context, m *wire.BuildManifest) (wire.IngestResult, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return wire.IngestResult{}, fmt.Errorf("encode manifest: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TimelineTimeout)
	defer cancel()
	raw, err := c.post(ctx, c.manifestURL, body, "")
	if err != nil {
		return wire.IngestResult{}, fmt.Errorf("post manifest: %w", err)
	}
	var out wire.IngestResult
	if err := json.Unmarshal(raw, &out); err != nil {
		return wire.IngestResult{}, fmt.Errorf("decode manifest answer: %w", err)
	}
	return out, nil
}

// RelayTimeline forwards a zstd-compressed timeline body as received from a
// kache client, byte for byte (wire.BuildTimeline is only a subset of the
// record, so decoding and re-encoding would lose fields). Central's status and
// body come back whatever the status; err is set only when central could not
// be reached or its answer read.
func (c *Client) RelayTimeline(ctx context.Context, zstdBody []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TimelineTimeout)
	defer cancel()
	resp, err := c.do(ctx, c.timelineURL, zstdBody, "zstd")
	if err != nil {
		return 0, nil, fmt.Errorf("relay timeline: %w", err)
	}
	defer resp.Body.Close()
	data, err := c.readBody(resp)
	if err != nil {
		return 0, nil, fmt.Errorf("relay timeline: %w", err)
	}
	return resp.StatusCode, data, nil
}

// post sends one JSON body and returns a 2xx response body, read up to the
// size limit.
func (c *Client) post(ctx context.Context, url string, body []byte, encoding string) ([]byte, error) {
	resp, err := c.do(ctx, url, body, encoding)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := c.readBody(resp)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &StatusError{Code: resp.StatusCode}
		var e wire.Error
		if json.Unmarshal(data, &e) == nil {
			se.Message = e.Error
		}
		return nil, se
	}
	return data, nil
}

// readBody reads a response body up to the size limit.
func (c *Client) readBody(resp *http.Response) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, c.cfg.MaxResponseBytes)
	}
	return data, nil
}

// do sends one POST with the sidecar's headers.
func (c *Client) do(ctx context.Context, url string, body []byte, encoding string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	return c.http.Do(req)
}

// HTTPStatus is the answer's status, for callers that tell a refusal (4xx)
// from a failure without importing this package.
func (e *StatusError) HTTPStatus() int { return e.Code }
