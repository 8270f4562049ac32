// Package httpservetest helps the tests of surfaces built on httpserve
// check what they refuse before reading a body.
package httpservetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// SendHead writes a request's head declaring a body of length bytes, with
// headers as name, value pairs, then only the first byte of that body, and
// reads the answer, which must come within wait: a server that waited for
// the rest of the body would not answer at all.
func SendHead(c net.Conn, method, path string, length int, wait time.Duration, headers ...string) (*fasthttp.Response, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: test\r\n", method, path)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n{", length)
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("send request head: %w", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	resp := &fasthttp.Response{}
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		return nil, fmt.Errorf("no answer within %s: %w", wait, err)
	}
	return resp, nil
}

// Refused sends a POST's head on a new connection (SendHead) and checks that
// the answer is status with kache's JSON error body and closes the
// connection. It returns the error message.
func Refused(t testing.TB, dial func() (net.Conn, error), path string, length, status int, headers ...string) string {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := SendHead(c, "POST", path, length, 2*time.Second, headers...)
	if err != nil {
		t.Fatal(err)
	}
	var e wire.Error
	if resp.StatusCode() != status || json.Unmarshal(resp.Body(), &e) != nil || e.Error == "" || !resp.ConnectionClose() {
		t.Fatalf("POST %s declaring %d bytes: %d %s (connection close %v), want %d with a JSON error, closing",
			path, length, resp.StatusCode(), resp.Body(), resp.ConnectionClose(), status)
	}
	return e.Error
}
