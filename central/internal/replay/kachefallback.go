package replay

import (
	"github.com/kache-planner/kache-planner/shared/compose"
	"github.com/kache-planner/kache-planner/shared/layout"
	"github.com/kache-planner/kache-planner/shared/wire"
)

// kacheFallback is the kache daemon's local fallback planner
// (kache-protocol.md 3.6): kache's composition over shards read from the
// bucket, the runner's local history and the bucket LIST, with kache's caps.
// Every build runs on a cold runner, so local history is always empty; the
// LIST is assumed already loaded when the plan is made (in kache it loads in
// the background and may still be empty), which favours this policy.
type kacheFallback struct {
	bucket *Bucket
}

func (*kacheFallback) Name() string { return PolicyKacheFallback }

func (p *kacheFallback) Plan(b *Build) (wire.PrefetchPlan, error) {
	src := &fallbackSource{bucket: p.bucket, shards: b.Lock.Shards}
	cands, _, err := compose.Compose(&b.Intent, src, compose.DefaultLimits())
	if err != nil {
		return wire.PrefetchPlan{}, err
	}
	return executePlan("fallback", cands), nil
}

func (*kacheFallback) Learn(*Build, *wire.BuildManifest, int64) error { return nil }

// fallbackSource is the fallback planner's data source. Its lookups use the
// intent's names as kache does: shard entries carry the manifest's crate
// names, and the LIST is keyed by crate directory, so hyphenated package
// names find nothing there (kache-protocol.md 4.7).
type fallbackSource struct {
	bucket *Bucket
	// shards is layout.Shards of the intent's deps, computed once per lock
	// file.
	shards []layout.Shard
}

func (s *fallbackSource) ShardCandidates(namespace string, _ []wire.LockDep) ([]wire.PrefetchCandidate, error) {
	var out []wire.PrefetchCandidate
	for _, sh := range s.shards {
		entries, ok := s.bucket.Shard(namespace, sh.Hash)
		if !ok {
			continue
		}
		for _, e := range entries {
			out = append(out, e.Candidate())
		}
	}
	return out, nil
}

// HistoryCandidates: a cold runner's local store is empty.
func (*fallbackSource) HistoryCandidates([]string) ([]wire.PrefetchCandidate, error) {
	return nil, nil
}

// KeyCacheKeys returns the LIST under the crate directory, in key order.
func (s *fallbackSource) KeyCacheKeys(crate string) ([]string, error) {
	return s.bucket.List(crate), nil
}
