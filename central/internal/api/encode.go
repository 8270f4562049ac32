package api

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// appendTail appends what wire.PrefetchPlan.AppendTail does, byte for byte.
// A plan's strings (hex cache keys, crate names, sources) are almost always
// plain ASCII that JSON takes as is; those are checked eight bytes at a time
// and copied, which halves the cost of encoding a plan. A plan with any
// other string is encoded by wire.
func appendTail(dst []byte, p *wire.PrefetchPlan) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `,"candidates":[`...)
	for i := range p.Candidates {
		c := &p.Candidates[i]
		src := string(c.Source)
		if src == "" {
			src = string(wire.SourceUnknown)
		}
		if !plain(c.CacheKey) || !plain(c.CrateName) || !plain(src) {
			return p.AppendTail(dst[:start])
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"cache_key":"`...)
		dst = append(dst, c.CacheKey...)
		dst = append(dst, `","crate_name":"`...)
		dst = append(dst, c.CrateName...)
		dst = append(dst, '"')
		if c.CompileTimeMs != 0 {
			dst = append(dst, `,"compile_time_ms":`...)
			dst = strconv.AppendUint(dst, c.CompileTimeMs, 10)
		}
		if c.SizeBytes != 0 {
			dst = append(dst, `,"size_bytes":`...)
			dst = strconv.AppendUint(dst, c.SizeBytes, 10)
		}
		dst = append(dst, `,"source":"`...)
		dst = append(dst, src...)
		dst = append(dst, '"')
		if c.DemandIndex != nil {
			dst = append(dst, `,"demand_index":`...)
			dst = strconv.AppendUint(dst, uint64(*c.DemandIndex), 10)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if p.Stats != nil {
		b, err := json.Marshal(p.Stats)
		if err != nil {
			return dst, fmt.Errorf("encode plan stats: %w", err)
		}
		dst = append(dst, `,"stats":`...)
		dst = append(dst, b...)
	}
	return append(dst, '}'), nil
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain reports whether JSON takes s as is: printable ASCII without '"',
// '\\' and the '<', '>' and '&' that encoding/json (and wire) escape.
func plain(s string) bool {
	b := unsafe.Slice(unsafe.StringData(s), len(s)) // read only
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		// Bytes at or over 0x80, under 0x20, or equal to one of the five.
		bad := w&highs | (w-ones*0x20)&^w&highs |
			zeroByte(w^ones*'"') | zeroByte(w^ones*'\\') | zeroByte(w^ones*'<') | zeroByte(w^ones*'>') | zeroByte(w^ones*'&')
		if bad != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x80, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// zeroByte is non-zero when a byte of w is zero.
func zeroByte(w uint64) uint64 { return (w - ones) &^ w & highs }
