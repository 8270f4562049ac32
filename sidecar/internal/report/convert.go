package report

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
	"github.com/kache-planner/kache-planner/sidecar/internal/packmeta"
)

// ObservedManifestKey is the manifest key of the packs the sidecar saw
// uploaded, reported in batches.
const ObservedManifestKey = "sidecar-observed"

// kind is what a report is about, the "kind" label.
type kind string

const (
	kindManifest kind = "manifest" // a build manifest under _manifests/
	kindShard    kind = "shard"    // a Cargo.lock shard under _manifests/v3/
	kindPack     kind = "pack"     // an uploaded pack's meta.json
)

// manifestKind tells a shard object from a build manifest by its key below
// `_manifests/`, as central's crawler does: shards are
// `v3/{namespace}/shards/{hash}.json`, everything else is a build manifest.
func manifestKind(rel string) kind {
	rest, ok := strings.CutPrefix(rel, "v3/")
	if ok && strings.LastIndex(rest, "/shards/") > 0 {
		return kindShard
	}
	return kindManifest
}

// buildManifest decodes a build manifest PUT at rel (below `_manifests/`)
// into what central ingests: entries central would refuse are left out
// (central refuses a whole manifest for one of them, the crawler skips
// them), a later kache's identity key `id/{lock digest}/{target}/{profile}`
// supplies target and profile when the manifest has neither, and a missing
// manifest key is taken from rel. It reports how many entries it left out.
func buildManifest(rel string, body []byte) (*wire.BuildManifest, int, error) {
	var m wire.BuildManifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, 0, fmt.Errorf("decode build manifest: %w", err)
	}
	name := strings.TrimSuffix(rel, ".json")
	if m.ManifestKey == "" {
		m.ManifestKey = name
	}
	if t, p, ok := identityDims(name); ok && m.Target == "" && m.Profile == "" {
		m.Target, m.Profile = t, p
	}
	dropped := len(m.Entries)
	m.Entries = slices.DeleteFunc(m.Entries, func(e wire.ManifestEntry) bool { return !validEntry(e.CacheKey, e.CrateName) })
	dropped -= len(m.Entries)
	if m.Entries == nil {
		m.Entries = []wire.ManifestEntry{}
	}
	return &m, dropped, nil
}

// shardManifest turns a shard object PUT at rel into a build manifest of
// its entries, unknown metadata as 0. A shard's name hashes its lock deps
// without listing them, so it cannot say which dep a key belongs to: the
// manifest has no namespace or lock deps and teaches central history only,
// as the crawler does with shards.
func shardManifest(rel string, body []byte, created string) (*wire.BuildManifest, int, error) {
	var sh wire.ShardObject
	if err := json.Unmarshal(body, &sh); err != nil {
		return nil, 0, fmt.Errorf("decode shard: %w", err)
	}
	m := &wire.BuildManifest{
		Version:     sh.Version,
		Created:     created,
		ManifestKey: strings.TrimSuffix(rel, ".json"),
		Entries:     make([]wire.ManifestEntry, 0, len(sh.Entries)),
	}
	for _, e := range sh.Entries {
		if !validEntry(e.CacheKey, e.CrateName) {
			continue
		}
		c := e.Candidate()
		m.Entries = append(m.Entries, wire.ManifestEntry{CacheKey: c.CacheKey, CrateName: c.CrateName, CompileTimeMs: c.CompileTimeMs, ArtifactSize: c.SizeBytes})
	}
	return m, len(sh.Entries) - len(m.Entries), nil
}

// identityDims reads target and profile from a later kache's identity
// manifest key, `id/{lock digest}/{target}/{profile}` (as central's crawler
// does).
func identityDims(manifestKey string) (target, profile string, ok bool) {
	parts := strings.Split(manifestKey, "/")
	if len(parts) != 4 || parts[0] != "id" || parts[2] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[2], parts[3], true
}

func validEntry(cacheKey, crate string) bool {
	return layout.ValidCacheKey(cacheKey) && layout.ValidCrateName(crate)
}

// dims are the build dimensions observed packs are grouped by.
type dims struct {
	target, profile string
	features        []string // sorted
}

func dimsOf(m packmeta.Meta) dims {
	f := slices.Clone(m.Features)
	slices.Sort(f)
	return dims{target: m.Target, profile: m.Profile, features: f}
}

// key is a map key for d; NUL cannot appear in a target, profile or
// feature kache wrote.
func (d dims) key() string {
	return d.target + "\x00" + d.profile + "\x00" + strings.Join(d.features, "\x00")
}
