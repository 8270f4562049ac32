package bearer

import "testing"

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		header string
		absent bool
		want   Result
	}{
		{name: "disabled, no header", token: "", absent: true, want: OK},
		{name: "blank token disables auth", token: " \n\t", header: "Bearer anything", want: OK},
		{name: "no header", token: "s3cret", absent: true, want: Missing},
		{name: "empty header", token: "s3cret", header: "", want: Missing},
		{name: "right token", token: "s3cret", header: "Bearer s3cret", want: OK},
		{name: "configured token is trimmed", token: " s3cret \n", header: "Bearer s3cret", want: OK},
		{name: "presented token is not trimmed", token: "s3cret", header: "Bearer s3cret ", want: Wrong},
		{name: "two spaces after the scheme", token: "s3cret", header: "Bearer  s3cret", want: Wrong},
		{name: "wrong token", token: "s3cret", header: "Bearer nope", want: Wrong},
		{name: "empty bearer token", token: "s3cret", header: "Bearer ", want: Wrong},
		{name: "lowercase scheme", token: "s3cret", header: "bearer s3cret", want: Missing},
		{name: "no space after the scheme", token: "s3cret", header: "Bearers3cret", want: Missing},
		{name: "other scheme", token: "s3cret", header: "Basic czNjcmV0", want: Missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header []byte
			if !tt.absent {
				header = []byte(tt.header)
			}
			if got := New(tt.token).Check(header); got != tt.want {
				t.Errorf("New(%q).Check(%q) = %v, want %v", tt.token, tt.header, got, tt.want)
			}
		})
	}
}

func TestEnabled(t *testing.T) {
	tests := []struct {
		token string
		want  bool
	}{
		{token: "", want: false},
		{token: "  \n", want: false},
		{token: "s3cret", want: true},
		{token: " s3cret ", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			if got := New(tt.token).Enabled(); got != tt.want {
				t.Errorf("New(%q).Enabled() = %v, want %v", tt.token, got, tt.want)
			}
		})
	}
	if (Checker{}).Enabled() {
		t.Error("the zero Checker requires a token")
	}
}
