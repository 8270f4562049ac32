package api

import (
	"bytes"
	"encoding/binary"

	"github.com/kache-planner/kache-planner/shared/reqbody"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// decodeIntent decodes a plan request body exactly as reqbody.Unmarshal
// does. The shape kache sends (crate_names, namespace, cargo_lock_deps and
// the sidecar's target, profile and toolchain, every string plain ASCII) is
// read directly, into substrings of one copy of the body; anything else
// (escapes, other fields, duplicate keys, malformed JSON) goes to
// encoding/json, which decides. Decoding a 500-crate intent with
// encoding/json cost about half as much as planning it.
func decodeIntent(body []byte, in *wire.BuildIntent) error {
	if d, ok := scanIntent(body); ok {
		*in = d
		return nil
	}
	return reqbody.Unmarshal(body, in)
}

// intentScanner reads body; text is one string copy of it that every
// decoded string is a substring of.
type intentScanner struct {
	b    []byte
	text string
	i    int
}

// scanIntent reads the common shape of an intent; ok is false for anything
// it does not handle, valid or not.
func scanIntent(body []byte) (in wire.BuildIntent, ok bool) {
	s := intentScanner{b: body}
	s.space()
	if !s.eat('{') {
		return in, false
	}
	var seen uint8
	s.space()
	if !s.eat('}') {
		for {
			s.space()
			key, ok := s.rawString()
			if !ok {
				return in, false
			}
			s.space()
			if !s.eat(':') {
				return in, false
			}
			s.space()
			var bit uint8
			switch string(key) {
			case "crate_names":
				bit = 1
				in.CrateNames, ok = s.strings()
			case "namespace":
				bit = 2
				in.Namespace, ok = s.optString()
			case "cargo_lock_deps":
				bit = 4
				in.CargoLockDeps, ok = s.lockDeps()
			case "target":
				bit = 8
				in.Target, ok = s.str()
			case "profile":
				bit = 16
				in.Profile, ok = s.str()
			case "toolchain":
				bit = 32
				in.Toolchain, ok = s.str()
			default:
				return in, false
			}
			if !ok || seen&bit != 0 {
				return in, false
			}
			seen |= bit
			s.space()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				break
			}
			return in, false
		}
	}
	s.space()
	return in, s.i == len(s.b)
}

func (s *intentScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *intentScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *intentScanner) null() bool {
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// rawString reads a string of printable ASCII without escapes and returns
// its bytes in body.
func (s *intentScanner) rawString() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	// Eight bytes at a time while none is '"', '\\', a control or non-ASCII.
	for ; s.i+8 <= len(s.b); s.i += 8 {
		w := binary.LittleEndian.Uint64(s.b[s.i:])
		if w&highs|(w-ones*0x20)&^w&highs|zeroByte(w^ones*'"')|zeroByte(w^ones*'\\') != 0 {
			break
		}
	}
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// str reads a plain string as a substring of the body's copy.
func (s *intentScanner) str() (string, bool) {
	start := s.i + 1
	raw, ok := s.rawString()
	if !ok {
		return "", false
	}
	if s.text == "" {
		s.text = string(s.b)
	}
	return s.text[start : start+len(raw)], true
}

func (s *intentScanner) optString() (*string, bool) {
	if s.null() {
		return nil, true
	}
	v, ok := s.str()
	return &v, ok
}

// strings reads an array of plain strings, or null.
func (s *intentScanner) strings() ([]string, bool) {
	if s.null() {
		return nil, true
	}
	out := make([]string, 0, s.estimate(`]`, ','))
	ok := s.array(func() bool {
		v, ok := s.str()
		out = append(out, v)
		return ok
	})
	return out, ok
}

// lockDeps reads an array of [name, version] pairs of plain strings, or
// null.
func (s *intentScanner) lockDeps() ([]wire.LockDep, bool) {
	if s.null() {
		return nil, true
	}
	out := make([]wire.LockDep, 0, s.estimate(`]]`, '['))
	ok := s.array(func() bool {
		if !s.eat('[') {
			return false
		}
		s.space()
		name, ok := s.str()
		if !ok {
			return false
		}
		s.space()
		if !s.eat(',') {
			return false
		}
		s.space()
		version, ok := s.str()
		if !ok {
			return false
		}
		s.space()
		out = append(out, wire.LockDep{Name: name, Version: version})
		return s.eat(']')
	})
	return out, ok
}

// estimate guesses how many elements the array at s.i has, for a
// capacity: one more than the seps before the first end (a string may hold
// either, which only spoils the guess).
func (s *intentScanner) estimate(end string, sep byte) int {
	rest := s.b[s.i:]
	if i := bytes.Index(rest, []byte(end)); i >= 0 {
		rest = rest[:i]
	}
	return min(bytes.Count(rest, []byte{sep})+1, len(rest)/2+1)
}

// array reads `[elem, ...]`, calling elem at each element's first byte.
func (s *intentScanner) array(elem func() bool) bool {
	if !s.eat('[') {
		return false
	}
	s.space()
	if s.eat(']') {
		return true
	}
	for {
		s.space()
		if !elem() {
			return false
		}
		s.space()
		if s.eat(',') {
			continue
		}
		return s.eat(']')
	}
}
