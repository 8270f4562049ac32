package api

import (
	"context"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/central/internal/ingest"
	"github.com/kache-planner/kache-planner/shared/httpserve"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// MissingReporter takes runners' reports of planned keys the bucket
// answered 404 for (retention.Service).
type MissingReporter interface {
	ReportMissing(ctx context.Context, keys []wire.MissingKey) (wire.MissingKeysResult, error)
}

// missingKeysTimeout bounds the checks of one report (HEADs of the
// reported keys' objects).
const missingKeysTimeout = 15 * time.Second

func (c Config) missingKeysBytes() int {
	if c.MaxMissingKeysBytes > 0 {
		return c.MaxMissingKeysBytes
	}
	return 64 << 10
}

// missingKeys serves POST /v1/missing-keys: a sidecar reports planned keys
// whose objects its prefetch got 404s for, and central stops planning those
// the bucket confirms gone.
func (s *Server) missingKeys(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, "missing bearer token") {
		return
	}
	if s.deps.Missing == nil || !s.deps.Ready.Ready() {
		s.fail(ctx, fmt.Errorf("%w: this replica is not taking missing-key reports", errNotReady), "")
		return
	}
	var req wire.MissingKeys
	if err := s.decodeJSON(ctx, &req); err != nil {
		s.fail(ctx, err, "")
		return
	}
	keys, err := ingest.MissingKeys(&req)
	if err != nil {
		s.fail(ctx, err, "")
		return
	}
	// The request's context ends only at shutdown.
	rctx, cancel := context.WithTimeout(context.Background(), missingKeysTimeout)
	defer cancel()
	res, err := s.deps.Missing.ReportMissing(rctx, keys)
	if err != nil {
		s.fail(ctx, err, "handling the report failed")
		return
	}
	httpserve.WriteJSON(ctx, fasthttp.StatusOK, res)
}
