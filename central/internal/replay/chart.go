package replay

// WriteChart draws the chart.
func WriteChart(path string, res *Result) error { return nil }
