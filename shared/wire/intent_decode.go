package wire

import "encoding/json"

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
	end, ok := eachMember(s, skipSpaceString(s, 0), func(key string, i int) (int, bool) {
		bit := intentField[key]
		if bit == 0 || seen&bit != 0 {
			return i, false // other fields, repeated fields: encoding/json's rules
		}
		seen |= bit
		if len(s) >= i+4 && s[i:i+4] == "null" && (bit == fieldNames || bit == fieldNamespace || bit == fieldDeps) {
			// null empties a list or the namespace pointer, as
			// encoding/json does; the zero value is already in out.
			return i + 4, true
		}
		var ok bool
		switch bit {
		case fieldNames:
			out.CrateNames, i, ok = plainStrings(s, i)
		case fieldDeps:
			out.CargoLockDeps, i, ok = plainPairs(s, i)
		default:
			// A null target, profile or toolchain leaves the field as it
			// was (encoding/json), which only the slow path keeps.
			var v string
			if v, i, ok = plainSlice(s, i); !ok {
				break
			}
			switch bit {
			case fieldNamespace:
				out.Namespace = &v
			case fieldTarget:
				out.Target = v
			case fieldProfile:
				out.Profile = v
			case fieldToolchain:
				out.Toolchain = v
			}
		}
		return i, ok
	})
	if !ok || skipSpaceString(s, end) != len(s) {
		return false
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

// plainStrings reads an array of plain strings at s[i]; an empty array is
// an empty slice, as encoding/json makes it.
func plainStrings(s string, i int) ([]string, int, bool) {
	out := make([]string, 0, listCap(s, i, "]", ","))
	end, ok := eachElement(s, i, func(i int) (int, bool) {
		v, j, ok := plainSlice(s, i)
		out = append(out, v)
		return j, ok
	})
	return out, end, ok
}

// plainPairs reads an array of [name, version] pairs of plain strings.
func plainPairs(s string, i int) ([]LockDep, int, bool) {
	out := make([]LockDep, 0, listCap(s, i, "]]", "["))
	end, ok := eachElement(s, i, func(i int) (int, bool) {
		var pair [2]string
		n := 0
		j, ok := eachElement(s, i, func(i int) (int, bool) {
			if n == 2 {
				return i, false
			}
			v, j, ok := plainSlice(s, i)
			pair[n] = v
			n++
			return j, ok
		})
		out = append(out, LockDep{Name: pair[0], Version: pair[1]})
		return j, ok && n == 2
	})
	return out, end, ok
}
