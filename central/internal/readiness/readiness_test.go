package readiness

import "testing"

func TestConditions(t *testing.T) {
	var changes []bool
	f := New(func(r bool) { changes = append(changes, r) }, Started, Lease)
	steps := []struct {
		cond string
		ok   bool
		want bool
	}{
		{Started, true, false},
		{Lease, true, true},
		{Lease, false, false},
		{Lease, true, true},
	}
	for i, s := range steps {
		f.SetCondition(s.cond, s.ok)
		if f.Ready() != s.want {
			t.Fatalf("step %d: ready %v", i, f.Ready())
		}
	}
	f.Require(Bucket)
	if f.Ready() {
		t.Fatal("a new condition must start false")
	}
	if want := []bool{false, true, false, true, false}; len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	if New(nil).Ready() {
		t.Fatal("no conditions must not be ready")
	}
}
