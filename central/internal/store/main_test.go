package store

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine this package starts must be stopped by its owner. The
// ignored ones are library timers that end on their own tick after Close or
// Shutdown (goleveldb's memdb pool drain, fasthttp's idle-worker and
// idle-connection cleaners), not goroutines of ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}
