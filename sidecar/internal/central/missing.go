package central

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// MissingKeysURL is central's route for 404 reports, on the same base as
// TimelineURL: {base}/v1/missing-keys.
func MissingKeysURL(endpoint string) string {
	return strings.TrimSuffix(TimelineURL(endpoint), "/v1/build-timelines") + "/v1/missing-keys"
}

// ReportMissing tells central which planned keys the bucket answered 404
// for (at most wire.MaxMissingKeys at once) and returns what central did
// with them. It is bounded by TimelineTimeout, the client's timeout for
// uploads.
func (c *Client) ReportMissing(ctx context.Context, keys []wire.MissingKey) (wire.MissingKeysResult, error) {
	body, err := json.Marshal(wire.MissingKeys{Keys: keys})
	if err != nil {
		return wire.MissingKeysResult{}, fmt.Errorf("encode missing keys: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TimelineTimeout)
	defer cancel()
	raw, err := c.post(ctx, MissingKeysURL(c.cfg.Endpoint), body, "")
	if err != nil {
		return wire.MissingKeysResult{}, fmt.Errorf("report missing keys: %w", err)
	}
	var out wire.MissingKeysResult
	if err := json.Unmarshal(raw, &out); err != nil {
		return wire.MissingKeysResult{}, fmt.Errorf("decode missing keys answer: %w", err)
	}
	return out, nil
}
