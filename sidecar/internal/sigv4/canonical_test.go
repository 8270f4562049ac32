package sigv4

import (
	"slices"
	"testing"
)

func TestURIEncode(t *testing.T) {
	tests := []struct {
		name, in  string
		keepSlash bool
		want      string
	}{
		{name: "unreserved kept", in: "AZaz09-._~", want: "AZaz09-._~"},
		{name: "space is %20", in: "a b", want: "a%20b"},
		{name: "plus and equals", in: "a+b=c", want: "a%2Bb%3Dc"},
		{name: "slash in query", in: "a/b", want: "a%2Fb"},
		{name: "slash in path", in: "a/b", keepSlash: true, want: "a/b"},
		{name: "reserved", in: "!*'();:@&$,?#[]%", want: "%21%2A%27%28%29%3B%3A%40%26%24%2C%3F%23%5B%5D%25"},
		{name: "utf-8 uppercase hex", in: "✓é", want: "%E2%9C%93%C3%A9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := uriEncode(tt.in, tt.keepSlash); got != tt.want {
				t.Errorf("uriEncode(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCanonicalURIs(t *testing.T) {
	tests := []struct {
		name, raw string
		want      []string
	}{
		{name: "empty is root", raw: "", want: []string{"/"}},
		{name: "already canonical", raw: "/b/a%20b%2B", want: []string{"/b/a%20b%2B"}},
		{name: "raw plus", raw: "/b/a+b", want: []string{"/b/a%2Bb", "/b/a+b"}},
		{name: "lowercase escape", raw: "/b/a%3ab", want: []string{"/b/a%3Ab", "/b/a%3ab"}},
		{name: "over-encoded unreserved", raw: "/b/%7Ea", want: []string{"/b/~a", "/b/%7Ea"}},
		{name: "bad escape kept as sent", raw: "/b/%zz", want: []string{"/b/%zz"}},
		{name: "not double-encoded", raw: "/b/a%2520", want: []string{"/b/a%2520"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := canonicalURIs(tt.raw); !slices.Equal(got, tt.want) {
				t.Errorf("canonicalURIs(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
}

func TestCanonicalQueries(t *testing.T) {
	tests := []struct {
		name, raw, skip string
		want            []string
	}{
		{name: "empty", raw: "", want: []string{""}},
		{name: "sorted and encoded", raw: "prefix=a+b%2Fc&list-type=2&delimiter=/", want: []string{"delimiter=%2F&list-type=2&prefix=a%20b%2Fc"}},
		{name: "no value", raw: "uploads", want: []string{"uploads="}},
		{name: "empty parts dropped", raw: "&a=1&&b=2&", want: []string{"a=1&b=2"}},
		{name: "skip signature", raw: "X-Amz-Signature=abc&X-Amz-Date=x", skip: "X-Amz-Signature", want: []string{"X-Amz-Date=x"}},
		{name: "first equals splits", raw: "a=b=c", want: []string{"a=b%3Dc"}},
		{
			name: "repeated key: encoded order, then arrival order",
			raw:  "k=a-b&k=a%2Fb", want: []string{"k=a%2Fb&k=a-b", "k=a-b&k=a%2Fb"},
		},
		{
			name: "non-ascii key: encoded order, then decoded order",
			raw:  "%C3%A9=2&a=1", want: []string{"%C3%A9=2&a=1", "a=1&%C3%A9=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params, err := parseQuery(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := canonicalQueries(params, tt.skip); !slices.Equal(got, tt.want) {
				t.Errorf("canonicalQueries(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
	if _, err := parseQuery("a=%4"); err == nil {
		t.Error("parseQuery of a cut escape: want an error")
	}
}

func TestCanonicalHeaderValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "plain", want: "plain"},
		{in: "  \ttrimmed\t  ", want: "trimmed"},
		{in: "a    b  c", want: "a b c"},
		{in: "a \t b", want: "a \t b"},
		{in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := canonicalHeaderValue(tt.in); got != tt.want {
				t.Errorf("canonicalHeaderValue(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestPayloadString(t *testing.T) {
	for p := PayloadSHA256; p <= PayloadStreamingUnsignedTrailer; p++ {
		if got, _, err := parsePayload(p.String()); p != PayloadSHA256 && (err != nil || got != p) {
			t.Errorf("parsePayload(%s) = %v, %v", p, got, err)
		}
	}
	if Payload(0).String() != "Payload(0)" {
		t.Errorf("zero Payload = %s", Payload(0))
	}
}
