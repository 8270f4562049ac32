package replay

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
)

// CostModel draws each crate's compile time and artifact size from a
// heavy-tailed (log-normal) distribution. The draw is a function of the seed
// and the crate's name, so a crate is consistently cheap or expensive across
// the history; its version perturbs it a little, its profile scales it, and
// each build adds jitter to the compile time it reports (sizes belong to the
// key: the same key is the same artifact).
type CostModel struct {
	Seed uint64 `json:"seed"`
	// CompileMedianMs and CompileSigma: compile time is
	// median * exp(sigma * z) for a standard normal z.
	CompileMedianMs float64 `json:"compile_median_ms"`
	CompileSigma    float64 `json:"compile_sigma"`
	// SizeMedianBytes and SizeSigma: the compressed artifact size, the same
	// way, with its z correlated with the compile time's by SizeCorrelation.
	SizeMedianBytes float64 `json:"size_median_bytes"`
	SizeSigma       float64 `json:"size_sigma"`
	SizeCorrelation float64 `json:"size_correlation"`
	// VersionSigma perturbs both per crate version.
	VersionSigma float64 `json:"version_sigma"`
	// ReleaseCompile and ReleaseSize scale release builds (optimisation
	// costs time, dropping debuginfo shrinks the rlib).
	ReleaseCompile float64 `json:"release_compile"`
	ReleaseSize    float64 `json:"release_size"`
	// JitterSigma is each build's noise on compile time.
	JitterSigma float64 `json:"jitter_sigma"`
}

// DefaultCostModel returns the documented defaults.
func DefaultCostModel(seed uint64) CostModel {
	return CostModel{
		Seed:            seed,
		CompileMedianMs: 1500,
		CompileSigma:    1.2,
		SizeMedianBytes: 350 << 10,
		SizeSigma:       1.3,
		SizeCorrelation: 0.7,
		VersionSigma:    0.2,
		ReleaseCompile:  2.0,
		ReleaseSize:     0.6,
		JitterSigma:     0.1,
	}
}

// Bounds keep a draw from the far tail within what real builds produce.
const (
	minCompileMs = 20
	maxCompileMs = 20 * 60 * 1000
	minSize      = 2 << 10
	maxSize      = 1 << 30
)

// Unit returns the expected compile time and the artifact size of a crate
// version built for a job.
func (m CostModel) Unit(name, version string, job Job) (compileMs, sizeBytes uint64) {
	r := m.rng(name)
	zc := r.NormFloat64()
	zs := m.SizeCorrelation*zc + math.Sqrt(1-m.SizeCorrelation*m.SizeCorrelation)*r.NormFloat64()
	v := m.rng(name + "@" + version).NormFloat64()
	c := m.CompileMedianMs * math.Exp(m.CompileSigma*zc+m.VersionSigma*v)
	s := m.SizeMedianBytes * math.Exp(m.SizeSigma*zs+m.VersionSigma*v)
	if job.Profile == "release" {
		c *= m.ReleaseCompile
		s *= m.ReleaseSize
	}
	return clamp(c, minCompileMs, maxCompileMs), clamp(s, minSize, maxSize)
}

// Observed is the compile time one build reports for a unit: the expected
// time with per-build jitter, keyed by the build's sequence number.
func (m CostModel) Observed(compileMs uint64, key string, build int) uint64 {
	r := rand.New(rand.NewPCG(m.Seed^uint64(build)*0x9e3779b97f4a7c15, hashString(key)))
	return clamp(float64(compileMs)*math.Exp(m.JitterSigma*r.NormFloat64()), minCompileMs, maxCompileMs)
}

func (m CostModel) rng(s string) *rand.Rand {
	return rand.New(rand.NewPCG(m.Seed, hashString(s)))
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func clamp(v, lo, hi float64) uint64 {
	return uint64(math.Round(math.Min(math.Max(v, lo), hi)))
}
