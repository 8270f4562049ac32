package store

import (
	"encoding/binary"
	"slices"

	"github.com/syndtr/goleveldb/leveldb/opt"
)

// Group commit: Apply calls that wait for the write lock at the same time
// are written as one batch with one fsync. Each still gets its own result,
// and an invalid observation fails alone. Ingest posts arrive from many
// runners at once and the fsync, not the work, bounds a serial writer.

// pendingApply is one Apply waiting for its group.
type pendingApply struct {
	obs  *Observation
	res  ApplyResult
	err  error
	done bool // set under writeMu
}

// Group limits: a group holds its observations' batch in memory.
const (
	maxGroupApplies   = 32
	maxGroupArtifacts = 16 << 10 // about 7 MiB of batch
	// A reused batch that grew past this is dropped after its write.
	maxKeptBatchRecords = 256 << 10
)

// Apply writes an observation in one synced batch (unless obs.NoSync): all
// of it or none. Concurrent calls share batches and syncs.
func (s *Store) Apply(obs Observation) (ApplyResult, error) {
	p := &pendingApply{obs: &obs}
	s.queueMu.Lock()
	s.queue = append(s.queue, p)
	s.queueMu.Unlock()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for !p.done {
		// p is queued: whoever took the queue with it in has applied it
		// and marked it done before letting go of writeMu.
		s.applyGroup(s.takeGroup())
	}
	return p.res, p.err
}

// takeGroup takes the oldest queued applies, within the group limits.
func (s *Store) takeGroup() []*pendingApply {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	n, artifacts := 0, 0
	for n < len(s.queue) && n < maxGroupApplies {
		artifacts += len(s.queue[n].obs.Artifacts)
		if n > 0 && artifacts > maxGroupArtifacts {
			break
		}
		n++
	}
	group := make([]*pendingApply, n)
	copy(group, s.queue)
	s.queue = append(s.queue[:0], s.queue[n:]...)
	return group
}

// applyGroup writes a group under writeMu. An observation that fails is
// answered with its error and the rest are prepared again without it.
func (s *Store) applyGroup(group []*pendingApply) {
	defer func() {
		for _, p := range group {
			p.done = true
		}
	}()
	if s.closed.Load() {
		for _, p := range group {
			p.err = ErrClosed
		}
		return
	}
	if s.ws == nil {
		s.ws = newWriteSet()
	}
	w := s.ws
	live := slices.Clone(group)
	for len(live) > 0 {
		w.reset()
		w.noSync = true
		failed := -1
		for i, p := range live {
			p.res, p.err = s.add(w, p.obs)
			if p.err != nil {
				failed = i
				break
			}
			w.noSync = w.noSync && p.obs.NoSync
		}
		if failed < 0 {
			break
		}
		p := live[failed]
		p.res = ApplyResult{}
		live = append(live[:failed], live[failed+1:]...)
	}
	if len(live) == 0 {
		return
	}
	s.finish(w)
	err := s.commit(w)
	if w.batch.Len() > maxKeptBatchRecords {
		s.ws = nil
	}
	if err != nil {
		for _, p := range live {
			p.res, p.err = ApplyResult{}, err
		}
	}
}

// writeOptions syncs a batch unless every observation in it said NoSync.
func (s *Store) writeOptions(w *writeSet) *opt.WriteOptions {
	if w.noSync && s.wo.Sync {
		return &opt.WriteOptions{}
	}
	return s.wo
}

// scratch returns the value buffer, emptied; Put copies what it is given.
func (w *writeSet) scratch() []byte {
	if cap(w.val) < 1024 {
		w.val = make([]byte, 0, 1024)
	}
	return w.val[:0]
}

// recent builds an index key (prefix, inverted time, key) in the key buffer.
func (w *writeSet) recent(prefix []byte, atMs int64, k rawKey) []byte {
	w.key = append(w.key[:0], prefix...)
	w.key = binary.BigEndian.AppendUint64(w.key, ^uint64(atMs))
	w.key = append(w.key, k[:]...)
	return w.key
}
