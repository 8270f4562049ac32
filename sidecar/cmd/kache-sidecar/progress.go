package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/kache-planner/kache-planner/sidecar/internal/prefetch"
)

// progressView shows a prefetch's progress: a one-line bar redrawn in place
// on a terminal, a log line every few seconds otherwise (CI logs).
type progressView struct {
	w        io.Writer
	bar      bool
	log      *slog.Logger
	lastLine time.Time
	drawn    bool
	now      func() time.Time
}

func newProgressView(w io.Writer, mode string, log *slog.Logger) *progressView {
	bar := mode == "always" || (mode == "auto" || mode == "") && isTerminal(w)
	if mode == "never" {
		bar = false
	}
	return &progressView{w: w, bar: bar, log: log, now: time.Now}
}

const logEvery = 5 * time.Second

func (v *progressView) update(p prefetch.Progress) {
	if v.bar {
		fmt.Fprintf(v.w, "\r%s", renderBar(p, 28))
		v.drawn = true
		return
	}
	if now := v.now(); now.Sub(v.lastLine) >= logEvery {
		v.lastLine = now
		v.log.Info("prefetch progress", "done", p.Done, "keys", p.Keys, "bytes", p.Bytes,
			"rate_bytes_per_second", rate(p), "eta_seconds", eta(p).Seconds())
	}
}

func (v *progressView) finish(p prefetch.Progress) {
	if v.bar && v.drawn {
		fmt.Fprintf(v.w, "\r%s\n", renderBar(p, 28))
	}
}

// rate is the bytes per second received so far.
func rate(p prefetch.Progress) float64 {
	if p.ElapsedMs <= 0 {
		return 0
	}
	return float64(p.Bytes) / (float64(p.ElapsedMs) / 1000)
}

// eta estimates the time left from the bytes still expected when the plan
// gave sizes, else from the keys left.
func eta(p prefetch.Progress) time.Duration {
	elapsed := time.Duration(p.ElapsedMs) * time.Millisecond
	switch {
	case p.Finished || elapsed <= 0:
		return 0
	case p.ExpectBytes > 0 && p.Bytes > 0 && p.Bytes < p.ExpectBytes:
		return time.Duration(float64(elapsed) * float64(p.ExpectBytes-p.Bytes) / float64(p.Bytes))
	case p.Done > 0 && p.Done < p.Keys:
		return time.Duration(float64(elapsed) * float64(p.Keys-p.Done) / float64(p.Done))
	}
	return 0
}

// renderBar draws `[#####.....]  42%  123/700 keys  1.2 GiB  85.0 MiB/s  ETA 12s`.
func renderBar(p prefetch.Progress, width int) string {
	frac := 0.0
	if p.Keys > 0 {
		frac = float64(p.Done) / float64(p.Keys)
	}
	if p.ExpectBytes > 0 {
		frac = min(1, float64(p.Bytes)/float64(p.ExpectBytes))
		if p.Finished {
			frac = 1
		}
	}
	fill := int(frac * float64(width))
	bar := strings.Repeat("#", fill) + strings.Repeat(".", width-fill)
	size := humanBytes(p.Bytes)
	if p.ExpectBytes > 0 {
		size += "/" + humanBytes(p.ExpectBytes)
	}
	s := fmt.Sprintf("[%s] %3.0f%%  %d/%d keys  %s  %s/s", bar, frac*100, p.Done, p.Keys, size, humanBytes(int64(rate(p))))
	if d := eta(p); d > 0 {
		s += "  ETA " + d.Round(time.Second).String()
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
