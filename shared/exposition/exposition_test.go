package exposition

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		reg  func(*prometheus.Registry)
		want string
	}{
		{name: "no metrics", reg: func(*prometheus.Registry) {}, want: ""},
		{
			name: "counter",
			reg: func(r *prometheus.Registry) {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "kache_test_total", Help: "A test counter."})
				c.Add(3)
				r.MustRegister(c)
			},
			want: "# HELP kache_test_total A test counter.\n# TYPE kache_test_total counter\nkache_test_total 3\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tt.reg(reg)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Encode(mfs)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Encode = %q, want %q", got, tt.want)
			}
		})
	}
	if ContentType != "text/plain; version=0.0.4" {
		t.Errorf("ContentType %q is not kache-service's", ContentType)
	}
}
