//go:build e2e

package e2e

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy is a loopback TCP proxy in front of a server (the bucket)
// that the fault scenarios use to make it slow or cut it off. It adds
// nothing until shaped:
//   - shape: the first bytes of each request (the first sent on a
//     connection, or after an answer came back on it) wait latency before
//     they go on, and every byte it carries, both ways and over all its
//     connections, shares one bandwidth cap;
//   - capEachConn: each connection's bytes from the target are held to a
//     rate of their own.
//
// When the target's side of a connection ends (MinIO killed), the
// client's side is closed at once, as MinIO's own would be; when the
// client stops sending, the target's side is half-closed and the answer
// still flows. A connection the target refuses is closed before a byte is
// read. close ends every connection and waits for them.
type faultProxy struct {
	ln     net.Listener
	target string
	done   chan struct{}
	wg     sync.WaitGroup

	latency  atomic.Int64 // time.Duration
	rate     atomic.Int64 // bytes per second over all connections; 0: no cap
	connRate atomic.Int64 // bytes per second from the target, per connection; 0: no cap

	capMu   sync.Mutex
	capNext time.Time // when the shared link is free again

	// requests are the requests delayed (or passed, without latency);
	// bytes the bytes carried; putsOpen the PUT requests sent on whose
	// answer has not begun.
	requests, bytes, putsOpen atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// startFaultProxy starts a proxy to target (host:port) that adds nothing
// until shaped; it is closed when the test ends.
func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &faultProxy{ln: ln, target: target, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) endpoint() string { return "http://" + p.ln.Addr().String() }

// shape sets the latency added to each request and the shared bandwidth
// cap (bytes per second, 0 for none), for connections open and new.
func (p *faultProxy) shape(latency time.Duration, rate int64) {
	p.latency.Store(int64(latency))
	p.rate.Store(rate)
}

// capEachConn holds each connection's bytes from the target to rate per
// second (0 for no cap), for connections open and new.
func (p *faultProxy) capEachConn(rate int64) { p.connRate.Store(rate) }

// close kills every connection, stops accepting and waits for the
// connections' goroutines.
func (p *faultProxy) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.done)
		p.ln.Close()
		for c := range p.conns {
			c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// track registers a connection to close with the proxy; false when the
// proxy is closed already (c is closed then).
func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *faultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Go(func() { p.handle(c) })
	}
}

func (p *faultProxy) handle(c net.Conn) {
	defer p.untrack(c)
	up, err := net.DialTimeout("tcp", p.target, 3*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	// answered is set when bytes came back since the client last sent:
	// the next bytes the client sends start a new request. put is set
	// while a PUT request waits for its answer.
	var answered, put atomic.Bool
	answered.Store(true)
	answer := func() {
		if put.Swap(false) {
			p.putsOpen.Add(-1)
		}
	}
	defer answer()
	var once sync.Once
	end := func() { once.Do(func() { c.Close(); up.Close() }) }
	var connNext time.Time // this connection's own link from the target
	var wg sync.WaitGroup
	wg.Go(func() {
		if p.pump(up, c, func(chunk []byte) {
			if answered.Swap(false) {
				p.requests.Add(1)
				if strings.HasPrefix(string(chunk[:min(len(chunk), 4)]), "PUT ") && !put.Swap(true) {
					p.putsOpen.Add(1)
				}
				p.wait(time.Duration(p.latency.Load()))
			}
		}) {
			// The client is done sending: let the answer finish.
			if tc, ok := up.(*net.TCPConn); ok && tc.CloseWrite() == nil {
				return
			}
		}
		end()
	})
	wg.Go(func() {
		defer end()
		p.pump(c, up, func(chunk []byte) {
			answered.Store(true)
			answer()
			if rate := p.connRate.Load(); rate > 0 {
				now := time.Now()
				if connNext.Before(now) {
					connNext = now
				}
				connNext = connNext.Add(time.Duration(int64(len(chunk)) * int64(time.Second) / rate))
				p.wait(connNext.Sub(now))
			}
		})
	})
	wg.Wait()
}

// pump copies src to dst, calling before with each chunk ahead of
// forwarding it and holding each chunk to the shared bandwidth cap, until
// either side fails; true when src ended cleanly (EOF).
func (p *faultProxy) pump(dst, src net.Conn, before func(chunk []byte)) (eof bool) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			before(buf[:n])
			p.wait(p.reserve(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return false
			}
			p.bytes.Add(int64(n))
		}
		if err != nil {
			return err == io.EOF
		}
	}
}

// reserve books n bytes on the shared capped link and returns how long
// to wait for the slot.
func (p *faultProxy) reserve(n int) time.Duration {
	rate := p.rate.Load()
	if rate <= 0 {
		return 0
	}
	p.capMu.Lock()
	defer p.capMu.Unlock()
	now := time.Now()
	if p.capNext.Before(now) {
		p.capNext = now
	}
	wait := p.capNext.Sub(now)
	p.capNext = p.capNext.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
	return wait
}

// wait sleeps d, or until the proxy closes.
func (p *faultProxy) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-p.done:
	}
}
