package replay

// BuildScore is one policy's outcome on one build.
type BuildScore struct {
	Commit int
	First  bool
	// Available counts the build's needed keys the bucket held when it
	// started: the most any plan can usefully fetch.
	Available int
	// Useful counts downloads of needed, available keys; UsefulBytes their
	// bytes.
	Useful      int
	UsefulBytes uint64
	// FetchedBytes sums every download's bytes (a 404 fetches none);
	// Requests counts every GET the plan launched, 404s included.
	FetchedBytes uint64
	Requests     int
	// OnTime counts needed artifacts that were local before rustc asked for
	// them; CompileMsSaved sums their compile times.
	OnTime         int
	CompileMsSaved uint64
	WallMs         float64
	// Waste splits the fetched bytes that were not useful by cause, and
	// MissedBytes sums the available needed artifacts not fetched.
	Waste       Waste
	MissedBytes uint64
}

// Waste is fetched-but-useless bytes by cause, for tuning planners.
type Waste struct {
	// Stale: the crate is in the build but none of its needed keys was in
	// the bucket (it changed: a bump below it, a member edit, a toolchain
	// update), so any variant fetched was useless.
	Stale uint64 `json:"stale"`
	// ExtraVariant: the crate's needed keys were all fetched; this was one
	// more variant.
	ExtraVariant uint64 `json:"extra_variant"`
	// WrongVariant: a needed, available key of the crate was not fetched
	// and this variant was fetched instead.
	WrongVariant uint64 `json:"wrong_variant"`
	// Foreign: the crate is not in the build at all.
	Foreign uint64 `json:"foreign"`
}

func (w *Waste) add(o Waste) {
	w.Stale += o.Stale
	w.ExtraVariant += o.ExtraVariant
	w.WrongVariant += o.WrongVariant
	w.Foreign += o.Foreign
}

// scoreBuild scores a plan's downloads and the build run they fed.
func scoreBuild(b *Build, downloads []Download, sim SimResult) BuildScore {
	s := BuildScore{Commit: b.Commit, First: b.First, Requests: len(downloads), OnTime: sim.OnTime, CompileMsSaved: sim.CompileMsSaved, WallMs: sim.WallMs}
	needed := make(map[string]bool, len(b.Units))
	for i := range b.Units {
		if b.Units[i].Available {
			s.Available++
			needed[b.Units[i].Key] = true
		}
	}
	var wasted []*Download
	for i := range downloads {
		d := &downloads[i]
		if !d.Exists {
			continue
		}
		s.FetchedBytes += d.Size
		if needed[d.Key] {
			s.Useful++
			s.UsefulBytes += d.Size
			needed[d.Key] = false // a key counts once
		} else {
			wasted = append(wasted, d)
		}
	}
	// What is left true in needed was missed.
	byCrate := make(map[string][]*Unit, len(b.Units))
	for i := range b.Units {
		u := &b.Units[i]
		byCrate[u.Crate] = append(byCrate[u.Crate], u)
		if needed[u.Key] {
			s.MissedBytes += u.SizeBytes
		}
	}
	for _, d := range wasted {
		units, ok := byCrate[d.Crate]
		if !ok {
			s.Waste.Foreign += d.Size
			continue
		}
		available, missed := false, false
		for _, u := range units {
			available = available || u.Available
			missed = missed || needed[u.Key]
		}
		switch {
		case !available:
			s.Waste.Stale += d.Size
		case missed:
			s.Waste.WrongVariant += d.Size
		default:
			s.Waste.ExtraVariant += d.Size
		}
	}
	return s
}

// prefetchedUnits maps each unit to the download that brought its artifact,
// nil when none did.
func prefetchedUnits(b *Build, downloads []Download) []*Download {
	byKey := make(map[string]*Download, len(downloads))
	for i := range downloads {
		if downloads[i].Exists {
			if _, dup := byKey[downloads[i].Key]; !dup {
				byKey[downloads[i].Key] = &downloads[i]
			}
		}
	}
	out := make([]*Download, len(b.Units))
	for i := range b.Units {
		out[i] = byKey[b.Units[i].Key]
	}
	return out
}

// Summary aggregates builds. Ratios are over sums (micro averages), so a
// build with nothing available weighs nothing rather than counting as 0 or
// 1; a ratio with a zero denominator is 0.
type Summary struct {
	Builds int `json:"builds"`
	// Recall is useful downloads over needed-and-available keys.
	Recall float64 `json:"recall"`
	// BytePrecision is useful bytes over fetched bytes.
	BytePrecision float64 `json:"byte_precision"`
	BytesFetched  uint64  `json:"bytes_fetched"`
	Requests      int     `json:"requests"`
	// OnTime is the share of needed-and-available artifacts that were local
	// before their demand.
	OnTime         float64 `json:"on_time"`
	CompileMsSaved uint64  `json:"compile_ms_saved"`

	NeededAvailable int     `json:"needed_available"`
	Useful          int     `json:"useful"`
	UsefulBytes     uint64  `json:"useful_bytes"`
	MissedBytes     uint64  `json:"missed_bytes"`
	WasteBytes      Waste   `json:"waste_bytes"`
	MeanBuildMs     float64 `json:"mean_build_ms"`
}

// Summarize aggregates the scores keep selects (all when keep is nil).
func Summarize(scores []BuildScore, keep func(*BuildScore) bool) Summary {
	var s Summary
	var onTime int
	var wall float64
	for i := range scores {
		b := &scores[i]
		if keep != nil && !keep(b) {
			continue
		}
		s.Builds++
		s.NeededAvailable += b.Available
		s.Useful += b.Useful
		s.UsefulBytes += b.UsefulBytes
		s.MissedBytes += b.MissedBytes
		s.WasteBytes.add(b.Waste)
		s.BytesFetched += b.FetchedBytes
		s.Requests += b.Requests
		s.CompileMsSaved += b.CompileMsSaved
		onTime += b.OnTime
		wall += b.WallMs
	}
	s.Recall = ratio(float64(s.Useful), float64(s.NeededAvailable))
	s.BytePrecision = ratio(float64(s.UsefulBytes), float64(s.BytesFetched))
	s.OnTime = ratio(float64(onTime), float64(s.NeededAvailable))
	s.MeanBuildMs = ratio(wall, float64(s.Builds))
	return s
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
