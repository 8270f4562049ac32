package wire

import (
	"encoding/json"
	"strings"
)

// UnmarshalJSON decodes an intent. kache's own intents (crate_names,
// namespace and cargo_lock_deps of plain strings: kache-protocol.md 1.1, and
// the sidecar's target, profile and toolchain), which every plan request
// carries with hundreds of names, are read directly, every string cut from
// one copy of the body; anything else (another field, an escape, non-ASCII,
// a repeated field) is left to encoding/json, with the same result
// (FuzzBuildIntent).
func (in *BuildIntent) UnmarshalJSON(b []byte) error {
	if plainIntent(b, in) {
		return nil
	}
	type buildIntent BuildIntent // the same fields, without this method
	return json.Unmarshal(b, (*buildIntent)(in))
}

// DecodePlainIntent decodes b into in when it is a plain kache intent (see
// UnmarshalJSON) and says whether it did; in is not modified otherwise. b
// need not have been checked: what it accepts is valid JSON. A plan
// handler calls it before encoding/json, which scans a body twice before
// UnmarshalJSON sees it.
func DecodePlainIntent(b []byte, in *BuildIntent) bool { return plainIntent(b, in) }

// plainIntent decodes b into in when it is a plain kache intent, and says
// whether it did; in is not modified otherwise. It accepts nothing that is
// not valid JSON.
func plainIntent(b []byte, in *BuildIntent) bool {
	var (
		// seen has a bit per field read: a repeated field is left to
		// encoding/json, whose rule (the last wins, merged) is not worth
		// repeating here.
		seen uint8
		out  BuildIntent
	)
	// One copy of the body: the names and versions are slices of it.
	s := string(b)
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := plainSlice(s, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		bit := intentField[key]
		if bit == 0 || seen&bit != 0 {
			return false // other fields, repeated fields: encoding/json's rules
		}
		seen |= bit
		null := len(s) >= i+4 && s[i:i+4] == "null"
		switch {
		case null && (bit == fieldNames || bit == fieldNamespace || bit == fieldDeps):
			// null empties a list or the namespace pointer, as
			// encoding/json does; the zero value is already in out.
			i += 4
		case bit == fieldNames:
			if out.CrateNames, i, ok = plainStrings(s, i); !ok {
				return false
			}
		case bit == fieldNamespace:
			v, j, ok := plainSlice(s, i)
			if !ok {
				return false
			}
			out.Namespace, i = &v, j
		case bit == fieldDeps:
			if out.CargoLockDeps, i, ok = plainPairs(s, i); !ok {
				return false
			}
		default:
			// target, profile, toolchain: a null leaves the field as it
			// was (encoding/json), which only the slow path keeps.
			v, j, ok := plainSlice(s, i)
			if !ok {
				return false
			}
			switch bit {
			case fieldTarget:
				out.Target = v
			case fieldProfile:
				out.Profile = v
			case fieldToolchain:
				out.Toolchain = v
			}
			i = j
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i >= len(b) || b[i] != '}' || skipSpace(b, i+1) != len(b) {
			return false
		}
		break
	}
	if seen&fieldNames != 0 {
		in.CrateNames = out.CrateNames
	}
	if seen&fieldNamespace != 0 {
		in.Namespace = out.Namespace
	}
	if seen&fieldDeps != 0 {
		in.CargoLockDeps = out.CargoLockDeps
	}
	if seen&fieldTarget != 0 {
		in.Target = out.Target
	}
	if seen&fieldProfile != 0 {
		in.Profile = out.Profile
	}
	if seen&fieldToolchain != 0 {
		in.Toolchain = out.Toolchain
	}
	return true
}

// The fields plainIntent reads, a bit each.
const (
	fieldNames uint8 = 1 << iota
	fieldNamespace
	fieldDeps
	fieldTarget
	fieldProfile
	fieldToolchain
)

var intentField = map[string]uint8{
	"crate_names": fieldNames, "namespace": fieldNamespace, "cargo_lock_deps": fieldDeps,
	"target": fieldTarget, "profile": fieldProfile, "toolchain": fieldToolchain,
}

// plainSlice reads a string at s[i] without escapes, control characters or
// non-ASCII bytes, as a slice of s.
func plainSlice(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", i, false
		}
	}
	return "", i, false
}

// plainStrings reads an array of plain strings at s[i]; an empty array is
// an empty slice, as encoding/json makes it.
func plainStrings(s string, i int) ([]string, int, bool) {
	if i >= len(s) || s[i] != '[' {
		return nil, i, false
	}
	out := make([]string, 0, listCap(s, i, "]", ","))
	i = skipSpaceString(s, i+1)
	if i < len(s) && s[i] == ']' {
		return out, i + 1, true
	}
	for {
		v, j, ok := plainSlice(s, i)
		if !ok {
			return nil, i, false
		}
		out = append(out, v)
		i = skipSpaceString(s, j)
		if i < len(s) && s[i] == ',' {
			i = skipSpaceString(s, i+1)
			continue
		}
		if i < len(s) && s[i] == ']' {
			return out, i + 1, true
		}
		return nil, i, false
	}
}

// plainPairs reads an array of [name, version] pairs of plain strings.
func plainPairs(s string, i int) ([]LockDep, int, bool) {
	if i >= len(s) || s[i] != '[' {
		return nil, i, false
	}
	out := make([]LockDep, 0, listCap(s, i, "]]", "["))
	i = skipSpaceString(s, i+1)
	if i < len(s) && s[i] == ']' {
		return out, i + 1, true
	}
	for {
		if i >= len(s) || s[i] != '[' {
			return nil, i, false
		}
		name, j, ok := plainSlice(s, skipSpaceString(s, i+1))
		if !ok {
			return nil, i, false
		}
		i = skipSpaceString(s, j)
		if i >= len(s) || s[i] != ',' {
			return nil, i, false
		}
		version, j, ok := plainSlice(s, skipSpaceString(s, i+1))
		if !ok {
			return nil, i, false
		}
		i = skipSpaceString(s, j)
		if i >= len(s) || s[i] != ']' {
			return nil, i, false
		}
		out = append(out, LockDep{Name: name, Version: version})
		i = skipSpaceString(s, i+1)
		if i < len(s) && s[i] == ',' {
			i = skipSpaceString(s, i+1)
			continue
		}
		if i < len(s) && s[i] == ']' {
			return out, i + 1, true
		}
		return nil, i, false
	}
}

// listCap guesses the length of the array at s[i] for a capacity: the
// count of sep before the first end (one per element, give or take one; a
// string holding either only spoils the guess). One fast pass over the
// bytes saves the slice growing from empty through half a dozen copies.
func listCap(s string, i int, end, sep string) int {
	j := strings.Index(s[i:], end)
	if j < 0 {
		return 0
	}
	return strings.Count(s[i:i+j], sep) + 1
}

func skipSpaceString(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}
