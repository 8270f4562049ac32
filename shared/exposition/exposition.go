// Package exposition encodes gathered metrics in the Prometheus text format
// with the exact content type kache-service serves, so central's and the
// sidecar's /metrics answer alike.
package exposition

import (
	"bytes"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// ContentType is the type of a /metrics body, kache-service's.
const ContentType = "text/plain; version=0.0.4"

// Encode returns mfs in the text format.
func Encode(mfs []*dto.MetricFamily) ([]byte, error) {
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("encode metrics: %w", err)
		}
	}
	return buf.Bytes(), nil
}
