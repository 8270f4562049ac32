package hints

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Key identifies the plans of one intent on one kind of runner.
type Key [32]byte

// String is the key in hex, for logs.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// keyVersion is mixed into every key; bump it when KeyOf's inputs change so
// that old hints stop matching instead of matching the wrong intents.
const keyVersion = "kache-sidecar/hint-key/v2"

// KeyOf derives the hint key of an intent. The digest is blake3 over a
// canonical, length-prefixed encoding of what decides a plan:
//
//   - crate_names, in order (their order is the demand order of the plan);
//   - namespace, with null distinct from "";
//   - cargo_lock_deps, sorted (the client sends them sorted; shards do not
//     depend on their order);
//   - target, profile and features (sorted), which select variants;
//   - budget, which can only shorten a plan;
//   - the runner's repository, since two repositories with one Cargo.lock
//     still build different workspace crates.
//
// Left out on purpose: the commit, ref, run and job ids, runner name and
// labels. A new commit of the same Cargo.lock must hit the same hint; that
// is the whole point of the cache.
func KeyOf(in *wire.BuildIntent) Key {
	buf := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(buf)
	b := appendString((*buf)[:0], keyVersion)
	b = appendStrings(b, in.CrateNames)
	b = appendIntent(b, in)
	*buf = b
	return Key(blake3.Sum256(b))
}

// keyBufs holds the buffers keys are encoded into before hashing: every
// plan request derives a key per profile, of intents of hundreds of crates.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// jobKeyVersion versions JobKeyOf's inputs, as keyVersion does KeyOf's.
const jobKeyVersion = "kache-sidecar/job-hint-key/v1"

// JobKeyOf derives the hint key of an intent that carries a job's context
// (warm's, or kache's once the sidecar applied the job to it): KeyOf's
// inputs without the crate names. warm names every package of the
// workspace's Cargo.lock and kache only the closure of the package it
// builds, in its own order, so the crate names would keep kache's request
// from ever hitting warm's plan; the lock deps, which both carry then, say
// what the workspace builds. The plan served is put in the requester's
// demand order by the planner.
func JobKeyOf(in *wire.BuildIntent) Key {
	buf := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(buf)
	b := appendString((*buf)[:0], jobKeyVersion)
	b = appendIntent(b, in)
	*buf = b
	return Key(blake3.Sum256(b))
}

// appendIntent encodes everything KeyOf hashes after the crate names.
func appendIntent(b []byte, in *wire.BuildIntent) []byte {
	if in.Namespace == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = appendString(b, *in.Namespace)
	}
	// kache sends its lock deps sorted: a copy is sorted only otherwise.
	deps := in.CargoLockDeps
	if !slices.IsSortedFunc(deps, compareDeps) {
		deps = slices.Clone(deps)
		slices.SortFunc(deps, compareDeps)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(deps)))
	for _, d := range deps {
		b = appendString(b, d.Name)
		b = appendString(b, d.Version)
	}
	b = appendString(b, in.Target)
	b = appendString(b, in.Profile)
	b = appendString(b, in.Toolchain)
	features := in.Features
	if !slices.IsSorted(features) {
		features = slices.Clone(features)
		slices.Sort(features)
	}
	b = appendStrings(b, features)
	var maxKeys, maxBytes uint64
	if in.Budget != nil {
		maxKeys, maxBytes = uint64(max(in.Budget.MaxKeys, 0)), in.Budget.MaxBytes
	}
	b = binary.BigEndian.AppendUint64(b, maxKeys)
	b = binary.BigEndian.AppendUint64(b, maxBytes)
	repo := ""
	if in.Runner != nil {
		repo = in.Runner.Repository
	}
	return appendString(b, repo)
}

func compareDeps(x, y wire.LockDep) int {
	if c := strings.Compare(x.Name, y.Name); c != 0 {
		return c
	}
	return strings.Compare(x.Version, y.Version)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// Database layout. One byte of prefix per record kind:
//
//	'h' + Key                     -> value (encodeValue)
//	't' + storedAt (u64 BE ns) + Key -> empty; the eviction order
//	'm' + "schema_version"        -> u32 BE
const (
	prefixHint  = 'h'
	prefixTime  = 't'
	prefixMeta  = 'm'
	valueFormat = 1
)

var schemaKey = []byte("mschema_version")

const schemaVersion = 1

func hintKey(k Key) []byte {
	return append([]byte{prefixHint}, k[:]...)
}

func timeKey(at time.Time, k Key) []byte {
	b := make([]byte, 0, 1+8+len(k))
	b = append(b, prefixTime)
	b = binary.BigEndian.AppendUint64(b, uint64(max(at.UnixNano(), 0)))
	return append(b, k[:]...)
}

// keyOfHintKey returns the key of an 'h' record.
func keyOfHintKey(b []byte) (Key, bool) {
	var k Key
	if len(b) != 1+len(k) || b[0] != prefixHint {
		return k, false
	}
	copy(k[:], b[1:])
	return k, true
}

// keyOfTimeKey returns the hint key a 't' record points at.
func keyOfTimeKey(b []byte) (Key, bool) {
	var k Key
	if len(b) != 1+8+len(k) || b[0] != prefixTime {
		return k, false
	}
	copy(k[:], b[9:])
	return k, true
}

// errCorrupt is wrapped for values this package cannot read.
var errCorrupt = errors.New("corrupt hint")

// encodeValue lays a hint out as: format byte, storedAt (i64 BE unix ns),
// source (u16 BE length + bytes), then the plan bytes to the end.
func encodeValue(h Hint) []byte {
	b := make([]byte, 0, 1+8+2+len(h.Source)+len(h.Plan))
	b = append(b, valueFormat)
	b = binary.BigEndian.AppendUint64(b, uint64(h.StoredAt.UnixNano()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Source)))
	b = append(b, h.Source...)
	return append(b, h.Plan...)
}

// decodeValue reads encodeValue's layout; the returned hint owns its bytes.
func decodeValue(b []byte) (Hint, error) {
	if len(b) < 11 || b[0] != valueFormat {
		return Hint{}, fmt.Errorf("decode hint: %w: bad header", errCorrupt)
	}
	at := int64(binary.BigEndian.Uint64(b[1:9]))
	n := int(binary.BigEndian.Uint16(b[9:11]))
	if len(b) < 11+n {
		return Hint{}, fmt.Errorf("decode hint: %w: source overruns value", errCorrupt)
	}
	return Hint{
		StoredAt: time.Unix(0, at),
		Source:   string(b[11 : 11+n]),
		Plan:     slices.Clone(b[11+n:]),
	}, nil
}
