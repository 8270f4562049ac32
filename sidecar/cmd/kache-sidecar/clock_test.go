package main

import (
	"context"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/api"
	"github.com/kache-planner/kache-planner/sidecar/internal/config"
	"github.com/kache-planner/kache-planner/sidecar/internal/s3api"
)

func TestNewClock(t *testing.T) {
	for _, off := range []time.Duration{0, 10 * time.Minute, -10 * time.Minute} {
		now := newClock(config.Config{ClockOffset: off})
		before := time.Now()
		got := now()
		after := time.Now()
		if got.Before(before.Add(off)) || got.After(after.Add(off)) {
			t.Errorf("offset %s: clock read %s, want between %s and %s", off, got, before.Add(off), after.Add(off))
		}
	}
}

// A sidecar serving with --clock-offset 10m checks SigV4 request dates and
// dates its own plans by its clock, not the host's.
func TestClockOffsetWiring(t *testing.T) {
	const offset = 10 * time.Minute
	// The bucket answers nothing; the requests below never need it.
	upstream := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(upstream.Close)
	env := map[string]string{
		"KACHE_SIDECAR_LOCAL_ACCESS_KEY": "local-ak",
		"KACHE_SIDECAR_LOCAL_SECRET_KEY": "local-sk",
		"KACHE_SIDECAR_CLOCK_OFFSET":     offset.String(),
	}
	cfg, err := config.Parse("serve", []string{"--store-dir", t.TempDir(), "--planner-listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0",
		"--s3-bucket", "kache", "--s3-endpoint", upstream.URL}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	must(t, err)
	must(t, cfg.Validate())
	var (
		srv   *api.Server
		s3srv *s3api.Server
		now   wallClock
	)
	app := fxtest.New(t, opts(cfg, slog.New(slog.DiscardHandler)), fx.Populate(&srv, &s3srv, &now))
	app.RequireStart()
	defer app.RequireStop()

	if d := time.Until(now()); d < offset-time.Second || d > offset+time.Second {
		t.Fatalf("the sidecar's clock is %s from the host's, want %s", d, offset)
	}

	// The planner's own plan (no central, nothing in the bucket) is dated
	// by the sidecar's clock.
	resp, err := http.Post("http://"+srv.Addr()+"/v2/prefetch-plan", "application/json",
		strings.NewReader(`{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[]}`))
	must(t, err)
	plan, err := wire.DecodePlan(mustRead(t, resp.Body))
	resp.Body.Close()
	must(t, err)
	// plan-{unix ms}, made unique by the surface with a .{n} suffix.
	stamp, _, _ := strings.Cut(strings.TrimPrefix(plan.PlanID, "plan-"), ".")
	ms, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		t.Fatalf("plan id %q: %v", plan.PlanID, err)
	}
	if d := time.Until(time.UnixMilli(ms)); d < offset-5*time.Second || d > offset+time.Second {
		t.Fatalf("plan %s dated %s from the host's clock, want %s", plan.PlanID, d, offset)
	}

	// SigV4: S3's 15 minutes either way of the sidecar's clock.
	cases := []struct {
		name   string
		signed time.Duration // from the host's clock
		code   string        // S3 error code, "" for a 200
	}{
		{"the host's clock", 0, ""},
		{"20 minutes ahead of the host", 20 * time.Minute, ""},
		{"6 minutes behind the host", -6 * time.Minute, "RequestTimeTooSkewed"},
		{"20 minutes behind the host", -20 * time.Minute, "RequestTimeTooSkewed"},
	}
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: "local-ak", SecretAccessKey: "local-sk"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+s3srv.Addr()+"/", nil)
			must(t, err)
			const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
			req.Header.Set("x-amz-content-sha256", emptySHA256)
			must(t, signer.SignHTTP(context.Background(), creds, req, emptySHA256, "s3", "us-east-1", time.Now().Add(tc.signed)))
			resp, err := http.DefaultClient.Do(req)
			must(t, err)
			body := mustRead(t, resp.Body)
			resp.Body.Close()
			var e struct {
				Code string `xml:"Code"`
			}
			_ = xml.Unmarshal(body, &e)
			if tc.code == "" && resp.StatusCode != http.StatusOK || tc.code != "" && (resp.StatusCode != http.StatusForbidden || e.Code != tc.code) {
				t.Fatalf("status %d %s, want %q: %s", resp.StatusCode, e.Code, tc.code, body)
			}
		})
	}
}
