package wire

import "encoding/json"

// UnmarshalJSON decodes an intent. kache's own intents (crate_names,
// namespace and cargo_lock_deps of plain strings: kache-protocol.md 1.1),
// which every plan request carries with hundreds of names, are read
// directly, every string cut from one copy of the body; anything else
// (another field, an escape, non-ASCII, a null list) is left to
// encoding/json, with the same result (FuzzBuildIntent).
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
		names, deps bool
		ns          bool
		out         BuildIntent
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
		switch {
		case key == "crate_names" && !names:
			names = true
			if out.CrateNames, i, ok = plainStrings(s, i); !ok {
				return false
			}
		case key == "namespace" && !ns:
			ns = true
			if len(s) >= i+4 && s[i:i+4] == "null" {
				i += 4
				break
			}
			v, j, ok := plainSlice(s, i)
			if !ok {
				return false
			}
			out.Namespace, i = &v, j
		case key == "cargo_lock_deps" && !deps:
			deps = true
			if out.CargoLockDeps, i, ok = plainPairs(s, i); !ok {
				return false
			}
		default:
			return false // other fields, repeated fields: encoding/json's rules
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
	if names {
		in.CrateNames = out.CrateNames
	}
	if ns {
		in.Namespace = out.Namespace
	}
	if deps {
		in.CargoLockDeps = out.CargoLockDeps
	}
	return true
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
	out := make([]string, 0, 64)
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
	out := make([]LockDep, 0, 64)
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

func skipSpaceString(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}
