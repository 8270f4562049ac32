package wire

import "strings"

// The fast decoders (intents, plans) read one shape of JSON: objects whose
// keys are plain strings, arrays, plain strings and unsigned integers. These
// walk its objects and arrays; anything else makes them report false, and
// the caller leaves the document to encoding/json.

// eachMember walks the object at s[i], calling member with each key and the
// index of its value; member returns the index just after the value. It
// returns the index after the object's closing brace.
func eachMember(s string, i int, member func(key string, i int) (int, bool)) (int, bool) {
	if i >= len(s) || s[i] != '{' {
		return i, false
	}
	i = skipSpaceString(s, i+1)
	if i < len(s) && s[i] == '}' {
		return i + 1, true
	}
	for {
		key, j, ok := plainSlice(s, i)
		if !ok {
			return i, false
		}
		if i = skipSpaceString(s, j); i >= len(s) || s[i] != ':' {
			return i, false
		}
		if i, ok = member(key, skipSpaceString(s, i+1)); !ok {
			return i, false
		}
		i = skipSpaceString(s, i)
		switch {
		case i < len(s) && s[i] == ',':
			i = skipSpaceString(s, i+1)
		case i < len(s) && s[i] == '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// eachElement walks the array at s[i], calling elem with the index of each
// element; elem returns the index just after it. It returns the index after
// the closing bracket.
func eachElement(s string, i int, elem func(i int) (int, bool)) (int, bool) {
	if i >= len(s) || s[i] != '[' {
		return i, false
	}
	i = skipSpaceString(s, i+1)
	if i < len(s) && s[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = elem(i); !ok {
			return i, false
		}
		i = skipSpaceString(s, i)
		switch {
		case i < len(s) && s[i] == ',':
			i = skipSpaceString(s, i+1)
		case i < len(s) && s[i] == ']':
			return i + 1, true
		default:
			return i, false
		}
	}
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
