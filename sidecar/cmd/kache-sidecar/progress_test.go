package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
)

func TestRenderBar(t *testing.T) {
	cases := []struct {
		name string
		p    prefetch.Progress
		want []string
	}{
		{"by bytes with ETA",
			prefetch.Progress{Keys: 10, Done: 2, Bytes: 25 << 20, ExpectBytes: 100 << 20, ElapsedMs: 1000},
			[]string{"[#######.....................]", " 25%", "2/10 keys", "25.0 MiB/100.0 MiB", "25.0 MiB/s", "ETA 3s"}},
		{"by keys without sizes",
			prefetch.Progress{Keys: 4, Done: 1, Bytes: 2048, ElapsedMs: 2000},
			[]string{" 25%", "1/4 keys", "2.0 KiB ", "1.0 KiB/s", "ETA 6s"}},
		{"finished", prefetch.Progress{Keys: 4, Done: 4, Bytes: 100, ExpectBytes: 200, ElapsedMs: 500, Finished: true},
			[]string{"[############################]", "100%", "4/4 keys"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := renderBar(tc.p, 28)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("renderBar = %q, missing %q", got, w)
				}
			}
			if tc.p.Finished && strings.Contains(got, "ETA") {
				t.Errorf("finished bar shows an ETA: %q", got)
			}
		})
	}
}

// Without a terminal, progress goes to the log at most every logEvery.
func TestProgressViewLogsWithoutTerminal(t *testing.T) {
	var out, logs bytes.Buffer
	v := newProgressView(&out, "auto", slog.New(slog.NewTextHandler(&logs, nil)))
	now := time.Unix(0, 0)
	v.now = func() time.Time { return now }
	for i := range 3 {
		v.update(prefetch.Progress{Keys: 3, Done: i})
		now = now.Add(time.Second)
	}
	v.finish(prefetch.Progress{Keys: 3, Done: 3, Finished: true})
	if out.Len() != 0 {
		t.Fatalf("bar drawn on a non-terminal: %q", out.String())
	}
	if n := strings.Count(logs.String(), "prefetch progress"); n != 1 {
		t.Fatalf("%d progress lines in 3 s, want 1:\n%s", n, logs.String())
	}
	v = newProgressView(&out, "always", slog.New(slog.DiscardHandler))
	v.update(prefetch.Progress{Keys: 3, Done: 1})
	v.finish(prefetch.Progress{Keys: 3, Done: 3, Finished: true})
	if !strings.HasPrefix(out.String(), "\r[") || !strings.HasSuffix(out.String(), "\n") {
		t.Fatalf("bar output %q", out.String())
	}
}
