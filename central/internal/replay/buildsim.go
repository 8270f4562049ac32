package replay

// BuildModel is how a build runs once cargo starts: a fixed number of rustc
// slots fed in dependency order, where each crate either is restored from a
// prefetched artifact, waits for one in flight, fetches its artifact on
// demand, or compiles.
type BuildModel struct {
	// Slots is how many crates compile at once (the runner's cores).
	Slots int `json:"slots"`
	// RestoreMs and RestoreBytesPerMs: importing a local artifact costs
	// RestoreMs + size/RestoreBytesPerMs.
	RestoreMs         float64 `json:"restore_ms"`
	RestoreBytesPerMs float64 `json:"restore_bytes_per_ms"`
}

// DefaultBuildModel is a 4-core runner restoring at 400 MiB/s.
func DefaultBuildModel() BuildModel {
	return BuildModel{Slots: 4, RestoreMs: 10, RestoreBytesPerMs: 400 * 1024 * 1024 / 1000.0}
}

// SimResult is one build's run under one plan.
type SimResult struct {
	WallMs float64
	// OnTime counts available units whose prefetched artifact was local when
	// rustc asked for it; CompileMsSaved sums their compile times.
	OnTime         int
	CompileMsSaved uint64
	// DemandMs[i] is when unit i was asked for.
	DemandMs []float64
}

// Simulate runs the build. prefetched[i] is unit i's prefetch download, nil
// when the plan did not fetch it. Ready crates start in demand order (their
// position in crate_names), the order the intent promises.
func (m BuildModel) Simulate(b *Build, prefetched []*Download, tm TransferModel) SimResult {
	n := len(b.Units)
	res := SimResult{DemandMs: make([]float64, n)}
	pending := make([]int, n)
	dependents := make([][]int, n)
	for i := range b.Units {
		pending[i] = len(b.Units[i].Deps)
		for _, d := range b.Units[i].Deps {
			dependents[d] = append(dependents[d], i)
		}
	}
	// Ready crates go by demand index, then unit order; -1 sorts last.
	units := b.Units
	ready := newHeap(func(x, y int) bool {
		dx, dy := uint(units[x].Demand), uint(units[y].Demand)
		if dx != dy {
			return dx < dy
		}
		return x < y
	})
	for i := range b.Units {
		if pending[i] == 0 {
			ready.Push(i)
		}
	}
	type run struct {
		end  float64
		unit int
	}
	running := newHeap(func(a, b run) bool { return a.end < b.end || a.end == b.end && a.unit < b.unit })
	free := max(m.Slots, 1)
	t := 0.0
	for done := 0; done < n; {
		for free > 0 && ready.Len() > 0 {
			u := ready.Pop()
			res.DemandMs[u] = t
			running.Push(run{end: t + m.duration(&b.Units[u], prefetched[u], t, tm, &res), unit: u})
			free--
		}
		if running.Len() == 0 {
			break // unreachable: Units is cycle-free
		}
		f := running.Pop()
		t = f.end
		res.WallMs = t
		free++
		done++
		for _, d := range dependents[f.unit] {
			if pending[d]--; pending[d] == 0 {
				ready.Push(d)
			}
		}
	}
	return res
}

func (m BuildModel) duration(u *Unit, d *Download, t float64, tm TransferModel, res *SimResult) float64 {
	restore := m.RestoreMs + float64(u.SizeBytes)/m.RestoreBytesPerMs
	switch {
	case d != nil && d.EndMs <= t:
		res.OnTime++
		res.CompileMsSaved += u.CompileMs
		return restore
	case d != nil && d.StartMs <= t:
		return d.EndMs - t + restore
	case u.Available:
		return tm.Duration(u.SizeBytes) + restore
	}
	return float64(u.CompileMs)
}
