package packmeta

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key64 = "acdc9e416dd3000f77b9711b73251f76805354b21f5623c0ab85ff5c5a82a320"

type file struct {
	name string
	data []byte
}

// entryJSON is kache's EntryMeta with every field, as kache writes it.
type entryJSON struct {
	CacheKey      string     `json:"cache_key"`
	KeySchema     uint32     `json:"key_schema"`
	CrateName     string     `json:"crate_name"`
	CrateTypes    []string   `json:"crate_types"`
	Files         []fileJSON `json:"files"`
	Stdout        string     `json:"stdout"`
	Stderr        string     `json:"stderr"`
	Features      []string   `json:"features"`
	Target        string     `json:"target"`
	Profile       string     `json:"profile"`
	CompileTimeMs uint64     `json:"compile_time_ms"`
	EmitKinds     []string   `json:"emit_kinds"`
}

type fileJSON struct {
	Name       string `json:"name"`
	Size       uint64 `json:"size"`
	Hash       string `json:"hash"`
	Executable bool   `json:"executable"`
}

func metaFor(files []file, stderr string) entryJSON {
	m := entryJSON{
		CacheKey: key64, KeySchema: 1, CrateName: "serde", CrateTypes: []string{"lib"},
		Stderr: stderr, Features: []string{"default", "derive"}, Target: "x86_64-unknown-linux-gnu",
		Profile: "release", CompileTimeMs: 5000, EmitKinds: []string{"link", "metadata"},
	}
	for _, f := range files {
		m.Files = append(m.Files, fileJSON{Name: f.name, Size: uint64(len(f.data)), Hash: strings.Repeat("ab", 32)})
	}
	return m
}

// tarOf writes entries in order; the first is usually meta.json.
func tarOf(t testing.TB, entries ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compress makes one zstd frame; window 0 means EncodeAll (single segment
// with the content size), anything else a stream with that window.
func compress(t testing.TB, raw []byte, window int) []byte {
	t.Helper()
	if window == 0 {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		return enc.EncodeAll(raw, nil)
	}
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(window), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pack builds a kache pack: meta.json first, then the files.
func pack(t testing.TB, files []file, stderr string, window int) []byte {
	t.Helper()
	meta, err := json.Marshal(metaFor(files, stderr))
	if err != nil {
		t.Fatal(err)
	}
	return compress(t, tarOf(t, append([]file{{"meta.json", meta}}, files...)...), window)
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// feed writes data in random chunk sizes (1 byte to 64 KiB), checking
// that every Write reports all of it, then closes.
func feed(t testing.TB, s *Sniffer, data []byte, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	for len(data) > 0 {
		n := 1 + r.IntN(64<<10)
		if r.IntN(8) == 0 {
			n = 1 + r.IntN(16)
		}
		n = min(n, len(data))
		if w, err := s.Write(data[:n]); w != n || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", n, w, err)
		}
		data = data[n:]
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func wantMeta(files []file) Meta {
	var total uint64
	for _, f := range files {
		total += uint64(len(f.data))
	}
	return Meta{CacheKey: key64, CrateName: "serde", Target: "x86_64-unknown-linux-gnu", Profile: "release",
		Features: []string{"default", "derive"}, CompileTimeMs: 5000, OriginalBytes: total, FileCount: len(files)}
}

func TestSnifferFindsMeta(t *testing.T) {
	small := []file{{"libserde-1.rlib", []byte("rlib")}}
	medium := []file{{"libserde-1.rlib", randomBytes(1, 300<<10)}, {"libserde-1.rmeta", bytes.Repeat([]byte("meta"), 50<<10)}}
	large := []file{{"libserde-1.rlib", randomBytes(2, 9<<20)}} // 9 MiB incompressible: over the 4 MiB limit
	tests := []struct {
		name   string
		files  []file
		stderr string
		window int
	}{
		{name: "one tiny file", files: small, window: 1 << 20},
		{name: "empty pack", files: nil, window: 1 << 20},
		{name: "single segment with content size", files: medium},
		{name: "stream of medium files", files: medium, window: 1 << 21},
		{name: "larger than the limit", files: large, window: 1 << 22},
		{name: "window-log 27", files: medium, window: 1 << 27},
		{name: "meta near its bound", files: medium, stderr: string(randomHex(900 << 10)), window: 1 << 23},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pack(t, tt.files, tt.stderr, tt.window)
			for seed := range uint64(4) {
				s := NewSniffer(0)
				feed(t, s, p, seed)
				got, ok := s.Meta()
				if !ok {
					t.Fatalf("seed %d: no meta: %v", seed, s.Err())
				}
				if want := wantMeta(tt.files); !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d: meta = %+v, want %+v", seed, got, want)
				}
				if s.Err() != nil {
					t.Errorf("Err = %v with a meta", s.Err())
				}
				if s.Consumed() > DefaultLimit {
					t.Errorf("consumed %d bytes, over the limit", s.Consumed())
				}
			}
		})
	}
}

func randomHex(n int) []byte {
	const hex = "0123456789abcdef"
	b := randomBytes(9, n)
	for i := range b {
		b[i] = hex[b[i]&15]
	}
	return b
}

// A pack stops being consumed once its meta is read: a 9 MiB pack costs
// its first block or so.
func TestSnifferStopsConsuming(t *testing.T) {
	p := pack(t, []file{{"big", randomBytes(3, 9<<20)}}, "", 1<<22)
	s := NewSniffer(0)
	feed(t, s, p, 1)
	if _, ok := s.Meta(); !ok {
		t.Fatal(s.Err())
	}
	if s.Consumed() > 512<<10 {
		t.Errorf("consumed %d of %d bytes; want only the start", s.Consumed(), len(p))
	}
}

// Packs compressed by the zstd CLI (libzstd, as kache's are); see
// testdata/make-fixtures.sh.
func TestSnifferLibzstdPacks(t *testing.T) {
	want := Meta{CacheKey: strings.Repeat("3f", 32), CrateName: "serde_derive", Target: "x86_64-unknown-linux-gnu",
		Profile: "release", Features: []string{"default", "std"}, CompileTimeMs: 4321, OriginalBytes: 3001200, FileCount: 2}
	tests := []struct {
		file    string
		wantErr error
	}{
		{file: "level3.tar.zst"},
		{file: "long27.tar.zst"},
		{file: "sized.tar.zst"},
		{file: "long28.tar.zst", wantErr: ErrNotPack},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			s := NewSniffer(0)
			feed(t, s, p, 3)
			got, ok := s.Meta()
			if tt.wantErr != nil {
				if ok || !errors.Is(s.Err(), tt.wantErr) {
					t.Fatalf("Meta = %v, Err = %v; want %v", ok, s.Err(), tt.wantErr)
				}
				return
			}
			if !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("Meta = %+v, %v (%v); want %+v", got, ok, s.Err(), want)
			}
		})
	}
}

func TestSnifferGivesUp(t *testing.T) {
	files := []file{{"libserde-1.rlib", randomBytes(4, 256<<10)}}
	meta, err := json.Marshal(metaFor(files, ""))
	if err != nil {
		t.Fatal(err)
	}
	good := pack(t, files, "", 1<<20)
	hugeMeta := append(append([]byte(`{"cache_key":"`+key64+`","crate_name":"serde","stderr":"`), randomHex(MaxMetaBytes)...), `"}`...)
	tests := []struct {
		name  string
		data  []byte
		limit int64
		want  error
	}{
		{name: "nothing", data: nil, want: ErrTruncated},
		{name: "garbage", data: randomBytes(5, 1<<20), want: ErrNotPack},
		{name: "gzip", data: []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3}, want: ErrNotPack},
		{name: "plain tar", data: tarOf(t, file{"meta.json", meta}), want: ErrNotPack},
		{name: "zstd of random bytes", data: compress(t, randomBytes(6, 256<<10), 1<<20), want: ErrNotPack},
		{name: "first entry not meta.json", data: compress(t, tarOf(t, append(files, file{"meta.json", meta})...), 1<<20), want: ErrNotPack},
		{name: "meta.json in a directory", data: compress(t, tarOf(t, file{"x/meta.json", meta}), 1<<20), want: ErrNotPack},
		{name: "meta.json not JSON", data: compress(t, tarOf(t, file{"meta.json", []byte("{cache_key")}), 1<<20), want: ErrNotPack},
		{name: "meta.json without a key", data: compress(t, tarOf(t, file{"meta.json", []byte(`{"crate_name":"serde"}`)}), 1<<20), want: ErrNotPack},
		{name: "meta.json over its bound", data: compress(t, tarOf(t, file{"meta.json", hugeMeta}), 1<<20), want: ErrNotPack},
		{name: "window over kache's", data: withWindowLog(good, 28), want: ErrNotPack},
		{name: "truncated in the frame header", data: good[:5], want: ErrTruncated},
		{name: "truncated in the tar header", data: good[:40], want: ErrTruncated},
		{name: "truncated in meta.json", data: compress(t, tarOf(t, file{"meta.json", meta}), 1<<20)[:300], want: ErrTruncated},
		{name: "meta past the limit", data: compress(t, tarOf(t, file{"meta.json", append(append(meta[:len(meta)-1:len(meta)-1], `,"x":"`...), append(randomHex(64<<10), `"}`...)...)}), 1<<20), limit: 16 << 10, want: ErrLimit},
		{name: "limit inside the frame header", data: good, limit: 3, want: ErrLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSniffer(tt.limit)
			feed(t, s, tt.data, 5)
			if m, ok := s.Meta(); ok {
				t.Fatalf("found meta %+v", m)
			}
			if !errors.Is(s.Err(), tt.want) {
				t.Errorf("Err = %v, want %v", s.Err(), tt.want)
			}
		})
	}
}

// A meta.json is reported only from a whole pack: one zstd frame that ends
// where the stream does. A pack cut anywhere after its meta.json (a
// correctly signed upload of a truncated pack is still stored) or followed
// by other bytes is not reported.
func TestSnifferWholeFrameOnly(t *testing.T) {
	files := []file{{"libserde-1.rlib", randomBytes(8, 1<<20)}, {"zeros", make([]byte, 300<<10)}, {"empty", nil}}
	for _, window := range []int{0, 1 << 20} {
		p := pack(t, files, "", window)
		for _, cut := range []int{len(p) / 4, len(p) / 2, len(p) - 5, len(p) - 1} {
			s := NewSniffer(0)
			feed(t, s, p[:cut], uint64(cut))
			if m, ok := s.Meta(); ok || !errors.Is(s.Err(), ErrTruncated) {
				t.Errorf("window %d, pack cut at %d of %d: meta %+v, %v, Err %v; want ErrTruncated", window, cut, len(p), m, ok, s.Err())
			}
		}
		for _, extra := range [][]byte{{0}, randomBytes(9, 4096), p} {
			s := NewSniffer(0)
			feed(t, s, append(bytes.Clone(p), extra...), 9)
			if m, ok := s.Meta(); ok || !errors.Is(s.Err(), ErrNotPack) {
				t.Errorf("window %d, %d bytes after the frame: meta %+v, %v, Err %v; want ErrNotPack", window, len(extra), m, ok, s.Err())
			}
		}
		s := NewSniffer(0)
		feed(t, s, p, 10)
		if m, ok := s.Meta(); !ok || !reflect.DeepEqual(m, wantMeta(files)) {
			t.Errorf("window %d, whole pack: meta %+v, %v, Err %v", window, m, ok, s.Err())
		}
	}
}

// withWindowLog returns a copy of a streamed pack with its window
// descriptor set to 2^log.
func withWindowLog(p []byte, log int) []byte {
	p = bytes.Clone(p)
	if p[4]&0x20 != 0 {
		panic("single-segment frame has no window descriptor")
	}
	p[5] = byte(log-10) << 3
	return p
}

func TestSnifferLifecycle(t *testing.T) {
	t.Run("close without writes", func(t *testing.T) {
		s := NewSniffer(0)
		s.Close()
		s.Close()
		if _, ok := s.Meta(); ok || !errors.Is(s.Err(), ErrTruncated) {
			t.Errorf("Meta ok = %v, Err = %v", ok, s.Err())
		}
	})
	t.Run("meta only after close", func(t *testing.T) {
		s := NewSniffer(0)
		p := pack(t, nil, "", 1<<20)
		s.Write(p)
		if _, ok := s.Meta(); ok {
			t.Error("Meta before Close")
		}
		s.Close()
		if _, ok := s.Meta(); !ok {
			t.Error(s.Err())
		}
		if n, err := s.Write(p); n != len(p) || err != nil {
			t.Errorf("Write after Close = %d, %v", n, err)
		}
	})
	t.Run("abandoned mid-meta", func(t *testing.T) {
		s := NewSniffer(0)
		p := pack(t, nil, string(randomHex(200<<10)), 1<<20)
		s.Write(p[:len(p)/2])
		done := make(chan struct{})
		go func() { s.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Close blocked")
		}
		if !errors.Is(s.Err(), ErrTruncated) {
			t.Errorf("Err = %v", s.Err())
		}
	})
}

// The decoding goroutine ends by itself once it has the meta, on garbage and
// past the limit; Close ends it otherwise.
func TestSnifferGoroutineEnds(t *testing.T) {
	p := pack(t, []file{{"lib", randomBytes(10, 256<<10)}}, "", 1<<20)
	hdrLen, err := frameHeaderLen(p)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		data  []byte
		limit int64
		close bool
	}{
		{name: "meta read", data: p},
		{name: "garbage after the frame header", data: append(bytes.Clone(p[:hdrLen]), randomBytes(11, 4096)...)},
		{name: "limit passed", data: p[:hdrLen+10], limit: int64(hdrLen + 5)},
		{name: "closed mid-stream", data: p[:hdrLen+10], close: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSniffer(tt.limit)
			s.Write(tt.data)
			if !s.started {
				t.Fatal("decoder not started")
			}
			if tt.close {
				s.Close()
			}
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				t.Fatal("decoding goroutine still running")
			}
			s.Close()
		})
	}
}

func TestFrameHeader(t *testing.T) {
	magic := []byte{0x28, 0xb5, 0x2f, 0xfd}
	hdr := func(b ...byte) []byte { return append(bytes.Clone(magic), b...) }
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	tests := []struct {
		name    string
		in      []byte
		wantLen int
		want    []byte // after clampWindow; nil = unchanged
		wantErr error
	}{
		{name: "window-log 20 kept", in: hdr(0x00, 10<<3), wantLen: 6},
		{name: "window-log 21 kept", in: hdr(0x00, 11<<3), wantLen: 6},
		{name: "window 2.25 MiB lowered", in: hdr(0x04, 11<<3|1), wantLen: 6, want: hdr(0x04, 11<<3)},
		{name: "window-log 27 lowered", in: hdr(0x00, 17<<3), wantLen: 6, want: hdr(0x00, 11<<3)},
		{name: "window-log 27 with a mantissa refused", in: hdr(0x00, 17<<3|1), wantLen: 6, wantErr: ErrNotPack},
		{name: "window-log 28 refused", in: hdr(0x00, 18<<3), wantLen: 6, wantErr: ErrNotPack},
		{name: "dictionary id and 8-byte size", in: append(hdr(0xc3, 17<<3, 1, 2, 3, 4), u64(1<<40)...), wantLen: 18, want: append(hdr(0xc3, 11<<3, 1, 2, 3, 4), u64(1<<40)...)},
		{name: "single segment 1-byte size", in: hdr(0x20, 200), wantLen: 6},
		{name: "single segment 2-byte size", in: hdr(0x60, 0xff, 0xff), wantLen: 7},
		{name: "single segment 4-byte size lowered", in: append(hdr(0xa0), u32(3<<20)...), wantLen: 9, want: append(hdr(0xa0), u32(2<<20)...)},
		{name: "single segment 8-byte size lowered", in: append(hdr(0xe0), u64(100<<20)...), wantLen: 13, want: append(hdr(0xe0), u64(2<<20)...)},
		{name: "single segment over kache's window", in: append(hdr(0xe0), u64(200<<20)...), wantLen: 13, wantErr: ErrNotPack},
		{name: "reserved bit", in: hdr(0x08, 0), wantErr: ErrNotPack},
		{name: "skippable frame", in: []byte{0x50, 0x2a, 0x4d, 0x18, 0, 0}, wantErr: ErrNotPack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := frameHeaderLen(tt.in)
			if err != nil {
				if !errors.Is(err, tt.wantErr) || tt.wantLen != 0 {
					t.Fatalf("frameHeaderLen error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if n != tt.wantLen || n != len(tt.in) {
				t.Fatalf("frameHeaderLen = %d, want %d (input %d bytes)", n, tt.wantLen, len(tt.in))
			}
			got := bytes.Clone(tt.in)
			err = clampWindow(got)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("clampWindow error = %v, want %v", err, tt.wantErr)
			}
			want := tt.want
			if want == nil {
				want = tt.in
			}
			if err == nil && !bytes.Equal(got, want) {
				t.Errorf("clampWindow = %x, want %x", got, want)
			}
		})
	}
}

func FuzzSniffer(f *testing.F) {
	p := pack(f, []file{{"a", []byte("hello")}}, "", 1<<20)
	f.Add(p, uint16(7))
	f.Add(p[:len(p)/2], uint16(1))
	f.Add(compress(f, []byte("not a tar at all"), 0), uint16(3))
	for _, name := range []string{"long27.tar.zst", "sized.tar.zst"} {
		fx, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fx, uint16(100))
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 5, 0, 0, 0}, uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		c := int(chunk%4096) + 1
		done := make(chan struct{})
		go func() {
			defer close(done)
			s := NewSniffer(int64(len(data)/2 + 1))
			for b := data; len(b) > 0; {
				n := min(c, len(b))
				if w, err := s.Write(b[:n]); w != n || err != nil {
					t.Errorf("Write = %d, %v", w, err)
				}
				b = b[n:]
			}
			s.Close()
			if _, ok := s.Meta(); !ok && s.Err() == nil {
				t.Error("no meta and no reason")
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("sniffer blocked")
		}
	})
}

// BenchmarkSniff64MiB feeds a 64 MiB pack in 32 KiB writes, as an upload
// tee would: B/op is what sniffing costs a pack of that size.
func BenchmarkSniff64MiB(b *testing.B) {
	p := pack(b, []file{{"libbig.rlib", randomBytes(8, 64<<20)}}, "", 1<<23)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	var consumed int64
	for b.Loop() {
		s := NewSniffer(0)
		for rest := p; len(rest) > 0; {
			n := min(32<<10, len(rest))
			s.Write(rest[:n])
			rest = rest[n:]
		}
		s.Close()
		if _, ok := s.Meta(); !ok {
			b.Fatal(s.Err())
		}
		consumed = s.Consumed()
	}
	b.ReportMetric(float64(consumed), "consumed-bytes/op")
}
