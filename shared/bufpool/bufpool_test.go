package bufpool

import "testing"

func TestPool(t *testing.T) {
	tests := []struct {
		name    string
		putCap  int
		maxSeen int
	}{
		{name: "kept size comes back", putCap: maxKeptCap, maxSeen: maxKeptCap},
		{name: "oversize is dropped", putCap: maxKeptCap + 1, maxSeen: maxKeptCap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, 0, tt.putCap)
			Put(&b)
			for range 4 {
				got := Get()
				if c := cap(*got); c < initialCap || c > tt.maxSeen {
					t.Fatalf("Get returned a buffer of cap %d, want %d to %d", c, initialCap, tt.maxSeen)
				}
			}
		})
	}
}
