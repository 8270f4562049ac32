package httpserve

import (
	"net"
	"sync"

	"github.com/valyala/fasthttp"
)

// connTracker knows every open connection and which of them have a request
// being handled (from the handler's start until the answer is written), so
// Stop can let those finish and close the rest at once: fasthttp's own
// shutdown waits for connections stalled mid-request until their deadlines.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]bool // true while a request is being handled
	busyN int
}

func newConnTracker() *connTracker {
	return &connTracker{conns: make(map[net.Conn]bool)}
}

// setState is the server's ConnState hook.
func (t *connTracker) setState(c net.Conn, st fasthttp.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch st {
	case fasthttp.StateNew:
		t.conns[c] = false
	case fasthttp.StateIdle:
		if t.conns[c] {
			t.conns[c] = false
			t.busyN--
		}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		if t.conns[c] {
			t.busyN--
		}
		delete(t.conns, c)
	}
}

// handling marks c as having a request being handled.
func (t *connTracker) handling(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if busy, ok := t.conns[c]; ok && !busy {
		t.conns[c] = true
		t.busyN++
	}
}

// busy is the number of requests being handled.
func (t *connTracker) busy() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.busyN
}

// closeIdle closes every open connection that has no request being handled
// (idle, or still sending one) and reports how many there were. Their
// serving goroutines see the error and end.
func (t *connTracker) closeIdle() int {
	return t.close(false)
}

// closeAll closes every open connection and reports how many there were.
func (t *connTracker) closeAll() int {
	return t.close(true)
}

func (t *connTracker) close(busyToo bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for c, busy := range t.conns {
		if busyToo || !busy {
			_ = c.Close()
			n++
		}
	}
	return n
}
