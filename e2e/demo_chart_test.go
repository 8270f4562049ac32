//go:build e2e && demo

package e2e

import (
	"image"
	"image/color"
	"image/png"
	"os"
)

// writeHitRateChart draws the demo's local hit rate over the builds as a
// PNG, one line per run (with the planner blue, without orange), each point
// the hits over the units of the builds around it. It has no text (the
// standard library draws none; the demo prints the legend): grid lines at
// 0, 25, 50, 75 and 100 %, and a gray tick under the plot at each first
// build of a branch.
func writeHitRateChart(path string, planner, baseline []buildResult) error {
	const (
		w, h                  = 1000, 420
		left, right, top, bot = 30, w - 30, 20, h - 40
	)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fill := func(x0, y0, x1, y1 int, c color.Color) {
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				img.Set(x, y, c)
			}
		}
	}
	fill(0, 0, w, h, color.White)
	yOf := func(rate float64) int { return bot - int(rate*float64(bot-top)+0.5) }
	for q := range 5 {
		y := yOf(float64(q) / 4)
		fill(left, y, right, y+1, color.Gray{Y: 215})
	}
	n := len(planner)
	xOf := func(i int) int {
		if n < 2 {
			return left
		}
		return left + i*(right-left)/(n-1)
	}
	for i, r := range planner {
		if r.First {
			fill(xOf(i), bot+8, xOf(i)+2, bot+22, color.Gray{Y: 150})
		}
	}
	window := max(n/40, 3)
	for _, s := range []struct {
		results []buildResult
		c       color.RGBA
	}{{baseline, color.RGBA{235, 130, 0, 255}}, {planner, color.RGBA{30, 90, 225, 255}}} {
		px, py := -1, -1
		for i := range s.results {
			hits, units := 0, 0
			for _, r := range s.results[max(i-window/2, 0):min(i+window/2+1, len(s.results))] {
				hits += r.LocalHits
				units += r.Units
			}
			x, y := xOf(i), yOf(ratio(hits, units))
			if px >= 0 {
				for dy := range 3 {
					demoLine(img, px, py+dy-1, x, y+dy-1, s.c)
				}
			}
			px, py = x, y
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// demoLine draws a one-pixel line from (x0, y0) to (x1, y1) (Bresenham).
func demoLine(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := x1-x0, y1-y0
	sx, sy := 1, 1
	if dx < 0 {
		dx, sx = -dx, -1
	}
	if dy < 0 {
		dy, sy = -dy, -1
	}
	e := dx - dy
	for {
		img.SetRGBA(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 > -dy {
			e -= dy
			x0 += sx
		}
		if e2 < dx {
			e += dx
			y0 += sy
		}
	}
}
