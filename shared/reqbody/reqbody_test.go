package reqbody

import (
	"bytes"
	"errors"
	"testing"
)

type intent struct {
	CrateNames []string `json:"crate_names"`
}

func TestIsJSON(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{ct: "application/json", want: true},
		{ct: "Application/JSON", want: true},
		{ct: " application/json ", want: true},
		{ct: "application/json; charset=utf-8", want: true},
		{ct: "application/vnd.kache+json", want: true},
		{ct: "application/vnd.kache+json; charset=utf-8", want: true},
		{ct: "application/+json", want: false},
		{ct: "application/jsonx", want: false},
		{ct: "text/json", want: false},
		{ct: "text/plain", want: false},
		{ct: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			if got := IsJSON([]byte(tt.ct)); got != tt.want {
				t.Errorf("IsJSON(%q) = %v, want %v", tt.ct, got, tt.want)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name    string
		ct      string
		body    string
		limit   int
		want    error
		wantMsg string
		crates  []string
	}{
		{name: "ok", ct: "application/json", body: `{"crate_names":["a"]}`, limit: 64, crates: []string{"a"}},
		{name: "unknown keys", ct: "application/json", body: `{"x":1}`, limit: 64},
		{name: "at the limit", ct: "application/json", body: `{"crate_names":[]}`, limit: 18, crates: []string{}},
		{name: "wrong content type", ct: "text/plain", body: `{}`, limit: 64, want: ErrUnsupportedMedia,
			wantMsg: "unsupported media type: want Content-Type application/json"},
		{name: "content type before size", ct: "", body: `{"crate_names":["a"]}`, limit: 1, want: ErrUnsupportedMedia},
		{name: "over the limit", ct: "application/json", body: `{"crate_names":[]}`, limit: 17, want: ErrTooLarge,
			wantMsg: "request body too large: 18 bytes over the 17-byte limit"},
		{name: "syntax error", ct: "application/json", body: `{"crate_names":[`, limit: 64, want: ErrMalformed},
		{name: "empty body", ct: "application/json", body: ``, limit: 64, want: ErrMalformed,
			wantMsg: "malformed JSON: unexpected end of JSON input"},
		{name: "wrong type", ct: "application/json", body: `{"crate_names":"x"}`, limit: 64, want: ErrWrongShape},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v intent
			err := DecodeJSON([]byte(tt.ct), []byte(tt.body), tt.limit, &v)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("message %q, want %q", err, tt.wantMsg)
			}
			if tt.want == nil && (len(v.CrateNames) != len(tt.crates) || (tt.crates != nil) != (v.CrateNames != nil)) {
				t.Errorf("decoded %#v, want crate names %#v", v, tt.crates)
			}
		})
	}
}

func TestCheckZstd(t *testing.T) {
	tests := []struct {
		name    string
		enc     string
		size    int
		want    error
		wantMsg string
	}{
		{name: "zstd", enc: "zstd", size: 8},
		{name: "any case and space", enc: " ZStd\t", size: 8},
		{name: "at the limit", enc: "zstd", size: 10},
		{name: "no encoding", enc: "", size: 8, want: ErrUnsupportedMedia,
			wantMsg: "unsupported media type: build timelines must be sent with Content-Encoding: zstd"},
		{name: "gzip", enc: "gzip", size: 8, want: ErrUnsupportedMedia},
		{name: "encoding before size", enc: "gzip", size: 11, want: ErrUnsupportedMedia},
		{name: "over the limit", enc: "zstd", size: 11, want: ErrTooLarge,
			wantMsg: "request body too large: 11 compressed bytes over the 10-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckZstd([]byte(tt.enc), bytes.Repeat([]byte{0}, tt.size), 10)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("message %q, want %q", err, tt.wantMsg)
			}
		})
	}
}
