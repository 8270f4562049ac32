package prefetch

import (
	"context"
	"slices"

	"github.com/kache-planner/kache-planner/shared/s3source"
	"github.com/kache-planner/kache-planner/sidecar/internal/store"
)

// Lanes are the engine's Concurrency speculative connections streaming a
// body. Workers (Concurrency + Lookahead of them) send a candidate's GETs as
// soon as they take it, so its response is usually there when a lane frees;
// the body then waits for the lane in plan order, which keeps the bandwidth
// on what the build asks for first. Entry manifests (a few hundred bytes)
// and demand downloads (their own lanes) never wait for one.

// awaitLane returns once f's body may stream: 1 when it took a lane (give
// it back with releaseLanes), 0 when it streams without one. A planned
// pack's body waits until it is the earliest dispatched body waiting and a
// lane is idle; once a build waits on it (a demand joined), it takes an
// idle lane or streams at once without one.
func (e *Engine) awaitLane(ctx context.Context, f *flight) (int, error) {
	if f.demand || f.ref.Kind != store.Pack {
		return 0, nil
	}
	// Cancellation (the last waiter left, Stop) must wake the wait.
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		e.wake.Broadcast()
		e.mu.Unlock()
	})
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.laneWait = append(e.laneWait, f.seq)
	defer e.leaveLaneWaitLocked(f.seq)
	for {
		switch {
		case ctx.Err() != nil:
			return 0, ctx.Err()
		case e.idleLanes > 0 && (f.demands > 0 || slices.Min(e.laneWait) == f.seq):
			e.idleLanes--
			return 1, nil
		case f.demands > 0:
			return 0, nil
		}
		e.wake.Wait()
	}
}

// leaveLaneWaitLocked removes seq from the waiting bodies and wakes the
// others: the next in line may take an idle lane now.
func (e *Engine) leaveLaneWaitLocked(seq uint64) {
	if i := slices.Index(e.laneWait, seq); i >= 0 {
		e.laneWait = slices.Delete(e.laneWait, i, i+1)
	}
	if len(e.laneWait) > 0 && e.idleLanes > 0 {
		e.wake.Broadcast()
	}
}

// takeParts decides how many parts obj is fetched in, taking the idle
// lanes its extra parts use (give them back with releaseLanes(parts-1)). A
// download never waits for extra lanes: with none idle it is one part.
func (e *Engine) takeParts(obj s3source.Object) int {
	if !e.splits() || obj.Size <= e.cfg.SplitBytes || obj.ETag == "" {
		return 1
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	extra := min(int(min(int64(e.cfg.SplitParts), obj.Size))-1, e.idleLanes)
	e.idleLanes -= extra
	return 1 + extra
}

// releaseLanes gives n lanes back and wakes the bodies waiting for one.
func (e *Engine) releaseLanes(n int) {
	if n == 0 {
		return
	}
	e.mu.Lock()
	e.idleLanes += n
	e.wake.Broadcast()
	e.mu.Unlock()
}
