package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// PrefetchCandidate is one artifact a plan asks the client to fetch
// (kache-protocol.md 1.2). Zero CompileTimeMs or SizeBytes means unknown and is
// omitted, as kache treats a stored 0 as unknown; DemandIndex nil means the
// crate is not in the intent.
type PrefetchCandidate struct {
	CacheKey      string  `json:"cache_key"`
	CrateName     string  `json:"crate_name"`
	CompileTimeMs uint64  `json:"compile_time_ms,omitempty"`
	SizeBytes     uint64  `json:"size_bytes,omitempty"`
	Source        Source  `json:"source"`
	DemandIndex   *uint32 `json:"demand_index,omitempty"`
}

// PrefetchPlan is the response of POST /v{1,2}/prefetch-plan (kache-protocol.md
// 1.4). Candidates is always emitted as an array. Stats is an additive
// extension.
type PrefetchPlan struct {
	PlanID      string              `json:"plan_id,omitempty"`
	Planner     string              `json:"planner,omitempty"`
	Disposition Disposition         `json:"disposition"`
	Candidates  []PrefetchCandidate `json:"candidates"`
	Stats       *PlanStats          `json:"stats,omitempty"`
}

// PlanStats says how a plan was composed and what it left out. A kache client
// ignores it; kache-sidecar and the replay harness read it.
type PlanStats struct {
	IntentCrates            int      `json:"intent_crates"`
	ResolvedCrates          int      `json:"resolved_crates"`
	FromShards              int      `json:"from_shards"`
	FromHistory             int      `json:"from_history"`
	FromKeyCache            int      `json:"from_key_cache"`
	DroppedHistoryPerCrate  int      `json:"dropped_history_per_crate"`
	DroppedKeyCachePerCrate int      `json:"dropped_key_cache_per_crate"`
	DroppedKeyCacheTotal    int      `json:"dropped_key_cache_total"`
	DroppedBudget           int      `json:"dropped_budget"`
	KnownBytes              uint64   `json:"known_bytes"`
	UnknownSizeCandidates   int      `json:"unknown_size_candidates"`
	CompileMsCovered        uint64   `json:"compile_ms_covered"`
	Truncated               []string `json:"truncated,omitempty"`
}

// MarshalJSON uses the same encoder as AppendJSON so both paths agree.
func (p PrefetchPlan) MarshalJSON() ([]byte, error) {
	return p.AppendJSON(nil)
}

// AppendJSON appends the plan's JSON to dst. It is the hot path of every plan
// response, so it avoids reflection; its output decodes with encoding/json to
// the same value (see the fuzz test).
func (p *PrefetchPlan) AppendJSON(dst []byte) ([]byte, error) {
	dst, err := p.AppendHead(dst)
	if err != nil {
		return dst, err
	}
	return p.AppendTail(dst)
}

// AppendHead appends the opening of the plan object up to its disposition:
// `{"plan_id":...,"planner":...,"disposition":...`. Head and tail are split so
// a cached tail can be served under a fresh plan id.
func (p *PrefetchPlan) AppendHead(dst []byte) ([]byte, error) {
	if !p.Disposition.Valid() {
		return dst, fmt.Errorf("encode plan: invalid disposition %q", p.Disposition)
	}
	dst = append(dst, '{')
	if p.PlanID != "" {
		dst = append(dst, `"plan_id":`...)
		dst = appendString(dst, p.PlanID)
		dst = append(dst, ',')
	}
	if p.Planner != "" {
		dst = append(dst, `"planner":`...)
		dst = appendString(dst, p.Planner)
		dst = append(dst, ',')
	}
	dst = append(dst, `"disposition":`...)
	return appendString(dst, string(p.Disposition)), nil
}

// AppendTail appends the rest: `,"candidates":[...]`, the stats and the
// closing brace.
func (p *PrefetchPlan) AppendTail(dst []byte) ([]byte, error) {
	dst = append(dst, `,"candidates":[`...)
	for i := range p.Candidates {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = p.Candidates[i].appendJSON(dst)
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

func (c *PrefetchCandidate) appendJSON(dst []byte) []byte {
	src := c.Source
	if src == "" {
		src = SourceUnknown
	}
	// The common case, every string plain, in as few appends as it takes.
	fast := plain(c.CacheKey) && plain(c.CrateName) && plain(string(src))
	if fast {
		dst = append(dst, `{"cache_key":"`...)
		dst = append(dst, c.CacheKey...)
		dst = append(dst, `","crate_name":"`...)
		dst = append(dst, c.CrateName...)
		dst = append(dst, '"')
	} else {
		dst = append(dst, `{"cache_key":`...)
		dst = appendString(dst, c.CacheKey)
		dst = append(dst, `,"crate_name":`...)
		dst = appendString(dst, c.CrateName)
	}
	if c.CompileTimeMs != 0 {
		dst = append(dst, `,"compile_time_ms":`...)
		dst = strconv.AppendUint(dst, c.CompileTimeMs, 10)
	}
	if c.SizeBytes != 0 {
		dst = append(dst, `,"size_bytes":`...)
		dst = strconv.AppendUint(dst, c.SizeBytes, 10)
	}
	if fast {
		dst = append(dst, `,"source":"`...)
		dst = append(dst, src...)
		dst = append(dst, '"')
	} else {
		dst = append(dst, `,"source":`...)
		dst = appendString(dst, string(src))
	}
	if c.DemandIndex != nil {
		dst = append(dst, `,"demand_index":`...)
		dst = strconv.AppendUint(dst, uint64(*c.DemandIndex), 10)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does. A plan's strings (hex cache keys, crate names,
// sources) are almost always plain, copied as they are after a check of
// eight bytes at a time: that halves the cost of encoding a plan.
func appendString(dst []byte, s string) []byte {
	if plain(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain reports whether JSON takes s as is: printable ASCII without '"',
// '\\' and the '<', '>' and '&' that encoding/json escapes.
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

// zeroByte is non-zero when a byte of w is zero (or, past the first zero
// byte, spuriously: plain only asks whether any is).
func zeroByte(w uint64) uint64 { return (w - ones) &^ w & highs }

// ErrPlanRejected is wrapped by DecodePlan for every plan a kache client would
// reject.
var ErrPlanRejected = errors.New("plan rejected")

// DecodePlan decodes a plan with the kache client's rules (kache-protocol.md
// 1.5): disposition required and valid, candidates absent or an array (never
// null), every candidate with cache_key and crate_name, numbers unsigned.
func DecodePlan(data []byte) (PrefetchPlan, error) {
	if p, ok := plainPlan(data); ok {
		return p, nil
	}
	return decodePlanJSON(data)
}

// decodePlanJSON is DecodePlan through encoding/json: every plan plainPlan
// does not take, and the reference it is fuzzed against.
func decodePlanJSON(data []byte) (PrefetchPlan, error) {
	var raw struct {
		PlanID      *string         `json:"plan_id"`
		Planner     *string         `json:"planner"`
		Disposition Disposition     `json:"disposition"`
		Candidates  json.RawMessage `json:"candidates"`
		Stats       *PlanStats      `json:"stats"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return PrefetchPlan{}, fmt.Errorf("%w: %w", ErrPlanRejected, err)
	}
	if raw.Disposition == "" {
		return PrefetchPlan{}, fmt.Errorf("%w: missing field `disposition`", ErrPlanRejected)
	}
	p := PrefetchPlan{Disposition: raw.Disposition, Stats: raw.Stats, Candidates: []PrefetchCandidate{}}
	if raw.PlanID != nil {
		p.PlanID = *raw.PlanID
	}
	if raw.Planner != nil {
		p.Planner = *raw.Planner
	}
	if len(raw.Candidates) > 0 {
		if bytes.Equal(bytes.TrimSpace(raw.Candidates), []byte("null")) {
			return PrefetchPlan{}, fmt.Errorf("%w: candidates is null", ErrPlanRejected)
		}
		var cands []struct {
			CacheKey      *string `json:"cache_key"`
			CrateName     *string `json:"crate_name"`
			CompileTimeMs *uint64 `json:"compile_time_ms"`
			SizeBytes     *uint64 `json:"size_bytes"`
			Source        Source  `json:"source"`
			DemandIndex   *uint32 `json:"demand_index"`
		}
		if err := json.Unmarshal(raw.Candidates, &cands); err != nil {
			return PrefetchPlan{}, fmt.Errorf("%w: %w", ErrPlanRejected, err)
		}
		p.Candidates = make([]PrefetchCandidate, 0, len(cands))
		for i, c := range cands {
			if c.CacheKey == nil || c.CrateName == nil {
				return PrefetchPlan{}, fmt.Errorf("%w: candidate %d lacks cache_key or crate_name", ErrPlanRejected, i)
			}
			pc := PrefetchCandidate{CacheKey: *c.CacheKey, CrateName: *c.CrateName, Source: SourceUnknown, DemandIndex: c.DemandIndex}
			if c.CompileTimeMs != nil {
				pc.CompileTimeMs = *c.CompileTimeMs
			}
			if c.SizeBytes != nil {
				pc.SizeBytes = *c.SizeBytes
			}
			if c.Source != "" {
				pc.Source = c.Source
			}
			p.Candidates = append(p.Candidates, pc)
		}
	}
	return p, nil
}
