package replay

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
)

// Chart geometry, in pixels.
const (
	chartW      = 1200
	chartH      = 1060
	plotLeft    = 70
	plotRight   = chartW - 20
	panelTop1   = 60
	panelHeight = 250
	panelGap    = 70
	panels      = 3
	legendTop   = panelTop1 + panels*panelHeight + (panels-1)*panelGap + 45
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	black     = color.RGBA{0, 0, 0, 255}
	gridGray  = color.RGBA{225, 225, 225, 255}
	textGray  = color.RGBA{90, 90, 90, 255}
	firstMark = color.RGBA{200, 200, 200, 255}
)

// policyColors gives every policy a fixed color.
var policyColors = map[string]color.RGBA{
	PolicyNone:          {150, 150, 150, 255},
	PolicyKacheFallback: {235, 130, 0, 255},
	PolicyKacheService:  {150, 60, 200, 255},
	PolicyLockfileAll:   {140, 90, 40, 255},
	PolicyPlanner:       {30, 90, 225, 255},
	PolicyOracle:        {30, 165, 60, 255},
	PolicyOracleLead:    {120, 210, 140, 255},
	PolicyAllLocal:      {0, 0, 0, 255},
}

// WriteChart draws recall (top), byte precision and wall time (bottom) over
// the history as a PNG: one line per policy (all_local, the bound, in
// black), each point a rolling micro average over the surrounding builds,
// with the first builds of branches marked as ticks under each panel.
func WriteChart(path string, res *Result) error {
	img := image.NewRGBA(image.Rect(0, 0, chartW, chartH))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	window := max(res.Builds/60, 8)
	drawText(img, plotLeft, 15, 2, fmt.Sprintf("%s: %d builds, rolling mean over %d builds", res.Project, res.Builds, window), black)

	wall := func(s []BuildScore) (float64, float64) {
		var n float64
		for i := range s {
			n += s[i].WallMs / 1000
		}
		return n, float64(len(s))
	}
	wallMax := 0.0
	for _, name := range res.Order {
		wallMax = max(wallMax, seriesMax(res.Scores[name], window, wall))
	}
	panels := []struct {
		title  string
		top    float64
		metric func(s []BuildScore) (num, den float64)
	}{
		{"recall (needed and available keys fetched)", 1, func(s []BuildScore) (float64, float64) {
			var n, d float64
			for i := range s {
				n += float64(s[i].Useful)
				d += float64(s[i].Available)
			}
			return n, d
		}},
		{"byte precision (useful / fetched bytes)", 1, func(s []BuildScore) (float64, float64) {
			var n, d float64
			for i := range s {
				n += float64(s[i].UsefulBytes)
				d += float64(s[i].FetchedBytes)
			}
			return n, d
		}},
		{"wall time per build (s, from the first rustc)", niceCeil(wallMax), wall},
	}
	for pi, panel := range panels {
		top := panelTop1 + pi*(panelHeight+panelGap)
		drawAxes(img, top, panel.title, panel.top, res)
		// The oracle first, so the policies close to it stay visible.
		for _, name := range drawOrder(res.Order) {
			drawSeries(img, top, panel.top, res.Scores[name], window, panel.metric, policyColors[name])
		}
	}
	drawLegend(img, res.Order)

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create chart: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("encode chart: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}

func drawOrder(order []string) []string {
	out := make([]string, 0, len(order))
	for _, n := range order {
		if n == PolicyOracle {
			out = append(out, n)
		}
	}
	for _, n := range order {
		if n != PolicyOracle && n != PolicyAllLocal {
			out = append(out, n)
		}
	}
	// The bound last, on top.
	for _, n := range order {
		if n == PolicyAllLocal {
			out = append(out, n)
		}
	}
	return out
}

// seriesMax is the largest rolling ratio drawSeries would plot.
func seriesMax(s []BuildScore, window int, metric func([]BuildScore) (float64, float64)) float64 {
	m := 0.0
	step := max(len(s)/(plotRight-plotLeft), 1)
	for i := 0; i < len(s); i += step {
		lo, hi := max(i-window/2, 0), min(i+window/2+1, len(s))
		if num, den := metric(s[lo:hi]); den > 0 {
			m = max(m, num/den)
		}
	}
	return m
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, f := range []float64{1, 2, 5, 10} {
		if v <= f*p {
			return f * p
		}
	}
	return 10 * p
}

func drawAxes(img *image.RGBA, top int, title string, yMax float64, res *Result) {
	bottom := top + panelHeight
	drawText(img, plotLeft, top-16, 1, title, textGray)
	for i := 0; i <= 4; i++ {
		y := bottom - i*panelHeight/4
		fillRect(img, image.Rect(plotLeft, y, plotRight, y+1), gridGray)
		label := fmt.Sprintf("%.2f", yMax*float64(i)/4)
		if yMax > 4 {
			label = fmt.Sprintf("%.1f", yMax*float64(i)/4)
		}
		drawText(img, plotLeft-8-textWidth(label, 1), y-3, 1, label, textGray)
	}
	fillRect(img, image.Rect(plotLeft, top, plotLeft+1, bottom+1), black)
	fillRect(img, image.Rect(plotLeft, bottom, plotRight, bottom+1), black)
	if len(res.Order) == 0 || res.Builds == 0 {
		return
	}
	// First builds of branches as ticks under the axis.
	for i, s := range res.Scores[res.Order[0]] {
		if s.First {
			x := xOf(i, res.Builds)
			fillRect(img, image.Rect(x, bottom+2, x+1, bottom+7), firstMark)
		}
	}
	for i := 0; i <= 4; i++ {
		b := i * (res.Builds - 1) / 4
		label := fmt.Sprintf("%d", b)
		drawText(img, xOf(b, res.Builds)-textWidth(label, 1)/2, bottom+10, 1, label, textGray)
	}
	if top == panelTop1+(panels-1)*(panelHeight+panelGap) {
		drawText(img, plotRight-textWidth("build (start order); ticks: first builds of branches", 1), bottom+24, 1, "build (start order); ticks: first builds of branches", textGray)
	}
}

func xOf(i, n int) int {
	if n <= 1 {
		return plotLeft
	}
	return plotLeft + i*(plotRight-plotLeft)/(n-1)
}

// drawSeries draws the rolling ratio of metric over a centred window; points
// whose window has a zero denominator are gaps.
func drawSeries(img *image.RGBA, top int, yMax float64, s []BuildScore, window int, metric func([]BuildScore) (float64, float64), c color.RGBA) {
	bottom := top + panelHeight
	prevOK := false
	var px, py int
	step := max(len(s)/(plotRight-plotLeft), 1)
	for i := 0; i < len(s); i += step {
		lo, hi := max(i-window/2, 0), min(i+window/2+1, len(s))
		num, den := metric(s[lo:hi])
		if den == 0 {
			prevOK = false
			continue
		}
		x := xOf(i, len(s))
		y := bottom - int(num/den/yMax*float64(panelHeight)+0.5)
		if prevOK {
			drawLine(img, px, py, x, y, c)
			drawLine(img, px, py+1, x, y+1, c)
		}
		px, py, prevOK = x, y, true
	}
}

func drawLegend(img *image.RGBA, order []string) {
	x, y := plotLeft, legendTop
	for _, name := range order {
		w := 24 + textWidth(name, 2) + 30
		if x+w > plotRight {
			x, y = plotLeft, y+26
		}
		fillRect(img, image.Rect(x, y, x+18, y+14), policyColors[name])
		drawText(img, x+24, y, 2, name, black)
		x += w
	}
}

func fillRect(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}

// drawLine is Bresenham's line.
func drawLine(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
