package wire

import (
	"encoding/json"
	"math"
)

// plainPlan decodes the plans central writes (AppendJSON's shape: each
// known field once, plain strings, unsigned integers, no null) without
// reflection, every string cut from one copy of data; ok is false for
// anything else, which DecodePlan leaves to encoding/json. What it takes
// decodes exactly as encoding/json decodes it (FuzzDecodePlan). The sidecar
// decodes central's answer to every new intent, about 50 KB for a big
// workspace: through encoding/json that was a sixth of its CPU under load.
func plainPlan(data []byte) (PrefetchPlan, bool) {
	s := string(data)
	var (
		p    PrefetchPlan
		seen uint8
	)
	end, ok := eachMember(s, skipSpaceString(s, 0), func(key string, i int) (int, bool) {
		var bit uint8
		ok := false
		switch key {
		case "plan_id":
			bit = 1
			p.PlanID, i, ok = plainSlice(s, i)
		case "planner":
			bit = 2
			p.Planner, i, ok = plainSlice(s, i)
		case "disposition":
			bit = 4
			var d string
			d, i, ok = plainSlice(s, i)
			p.Disposition = Disposition(d)
			ok = ok && p.Disposition.Valid()
		case "candidates":
			bit = 8
			p.Candidates, i, ok = plainCandidates(data, s, i)
		case "stats":
			bit = 16
			p.Stats, i, ok = plainStats(s, i)
		}
		// Other fields, repeats and anything not plain: encoding/json's.
		ok = ok && seen&bit == 0
		seen |= bit
		return i, ok
	})
	if !ok || skipSpaceString(s, end) != len(s) || seen&4 == 0 {
		return p, false
	}
	if p.Candidates == nil {
		p.Candidates = []PrefetchCandidate{}
	}
	return p, true
}

// plainCandidates reads an array of candidates at s[i] (b is s's bytes).
func plainCandidates(b []byte, s string, i int) ([]PrefetchCandidate, int, bool) {
	n := listCap(s, i, "]", "{")
	out := make([]PrefetchCandidate, 0, n)
	// The demand indexes point into one array, not an allocation each (a
	// reallocation leaves earlier ones in the old array, still valid).
	demands := make([]uint32, 0, n)
	end, ok := eachElement(s, i, func(i int) (int, bool) {
		c, j, ok := plainCandidate(b, s, i, &demands)
		out = append(out, c)
		return j, ok
	})
	return out, end, ok
}

// plainCandidate reads one candidate object at s[i]: cache_key and
// crate_name required, as the client requires them. Its demand index goes
// into demands.
func plainCandidate(b []byte, s string, i int, demands *[]uint32) (PrefetchCandidate, int, bool) {
	c := PrefetchCandidate{Source: SourceUnknown}
	var seen uint8
	end, ok := eachMember(s, i, func(key string, i int) (int, bool) {
		var bit uint8
		ok := false
		switch key {
		case "cache_key":
			bit = 1
			c.CacheKey, i, ok = plainSlice(s, i)
		case "crate_name":
			bit = 2
			c.CrateName, i, ok = plainSlice(s, i)
		case "compile_time_ms":
			bit = 4
			c.CompileTimeMs, i, ok = plainUint(b, i)
		case "size_bytes":
			bit = 8
			c.SizeBytes, i, ok = plainUint(b, i)
		case "source":
			bit = 16
			var src string
			src, i, ok = plainSlice(s, i)
			switch Source(src) {
			case SourceShard, SourceHistory, SourceKeyCache:
				c.Source = Source(src)
			}
		case "demand_index":
			bit = 32
			var d uint64
			d, i, ok = plainUint(b, i)
			ok = ok && d <= math.MaxUint32
			*demands = append(*demands, uint32(d))
			c.DemandIndex = &(*demands)[len(*demands)-1]
		}
		ok = ok && seen&bit == 0
		seen |= bit
		return i, ok
	})
	return c, end, ok && seen&3 == 3
}

// plainStats reads the stats object at s[i] with encoding/json (a few
// numbers): it finds the object's end, whose content may hold only plain
// strings, and lets encoding/json decide the rest.
func plainStats(s string, i int) (*PlanStats, int, bool) {
	if i >= len(s) || s[i] != '{' {
		return nil, i, false
	}
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"':
			_, k, ok := plainSlice(s, j)
			if !ok {
				return nil, i, false
			}
			j = k - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				var st PlanStats
				if json.Unmarshal([]byte(s[i:j+1]), &st) != nil {
					return nil, i, false
				}
				return &st, j + 1, true
			}
		}
	}
	return nil, i, false
}
