package report

import "github.com/kache-planner/kache-planner/sidecar/internal/packmeta"

// PackObserver reads one uploaded pack's meta.json from its bytes as they
// stream to the bucket (a packmeta.Sniffer) and reports the pack once the
// bucket acknowledged it. It is used by one request at a time; exactly one
// of Done and Abort must be called.
type PackObserver struct {
	r *Reporter
	s *packmeta.Sniffer // nil when the pack would not be reported anyway
}

// Pack returns the observer for one pack upload. Without a central, or
// after Stop, it reads nothing.
func (r *Reporter) Pack() *PackObserver {
	o := &PackObserver{r: r}
	if r == nil || r.central == nil {
		return o
	}
	r.mu.RLock()
	stopped := r.stopped
	r.mu.RUnlock()
	if !stopped {
		o.s = packmeta.NewSniffer(packmeta.DefaultLimit)
	}
	return o
}

// Write feeds the pack's bytes in order; it always returns len(p), nil and
// stops reading once it has the meta (packmeta.Sniffer).
func (o *PackObserver) Write(p []byte) (int, error) {
	if o.s == nil {
		return len(p), nil
	}
	return o.s.Write(p)
}

// Done says the bucket acknowledged the pack of packBytes bytes stored as
// crate's entry cacheKey: it is reported (PackPut) when its meta was found
// and names that entry, counted invalid otherwise (a meta.json naming
// another entry would tell central of a pack the bucket does not hold).
func (o *PackObserver) Done(packBytes int64, crate, cacheKey string) {
	if o.r == nil {
		return
	}
	if o.s == nil {
		o.r.enqueue(item{kind: kindPack}) // counted: no central, or stopped
		return
	}
	o.s.Close()
	m, ok := o.s.Meta()
	if !ok {
		o.r.metrics.count(kindPack, resultInvalid, 1)
		o.r.log.Debug("uploaded pack has no usable meta.json", "error", o.s.Err())
		return
	}
	if m.CacheKey != cacheKey || m.CrateName != crate {
		o.r.metrics.count(kindPack, resultInvalid, 1)
		o.r.log.Debug("uploaded pack's meta.json names another entry", "crate", crate, "cache_key", cacheKey,
			"meta_crate", m.CrateName, "meta_cache_key", m.CacheKey)
		return
	}
	o.r.PackPut(m, packBytes)
}

// Abort says the upload failed: nothing is reported.
func (o *PackObserver) Abort() {
	if o.s != nil {
		o.s.Close()
	}
}
