package replay

// Schedule says when each commit is built and which branch it belongs to.
type Schedule struct {
	// Order lists the commits in the order they are built: by committer
	// time, parents first.
	Order []int
	// StartMs[i] is when commit i's jobs start, in unix milliseconds: its
	// committer time, pushed forward so that builds never go back in time
	// (rebases and clock skew leave commits older than their parents).
	StartMs []int64
	// Built[i] is false for a commit CI never builds on its own: one
	// followed, on the same line, by its child with the same committer time.
	// Such runs are rebased or applied in one go and pushed together, and CI
	// builds the pushed head.
	Built []bool
	// Branch[i] is the branch of commit i, or -1 on the first-parent line.
	Branch []int
	// FirstOfBranch[i] is true for the earliest built commit of each
	// branch: its build is the first build of the branch, on runners that
	// have never seen it.
	FirstOfBranch []bool
	// Branches is the number of branches.
	Branches int
}

// NewSchedule builds commits when they were committed: in committer-time
// order, a commit never before its parents (ties in file order), except the
// inner commits of same-time runs (see Built). File order alone would build
// a branch's commits when it was merged, long after they were pushed. A
// branch is the set of off-main commits a first-parent merge brought in:
// everything reachable from its second parent that is not on the
// first-parent line and was not brought in by an earlier merge. Off-main
// commits no merge reaches join the branch of an off-main parent, or start
// their own.
func NewSchedule(t *Trace) Schedule {
	n := len(t.Commits)
	s := Schedule{StartMs: make([]int64, n), Built: make([]bool, n), Branch: make([]int, n), FirstOfBranch: make([]bool, n)}
	for i, c := range t.Commits {
		s.Branch[i] = -1
		s.Built[i] = true
		if len(c.Parents) > 0 {
			if j, ok := t.index[c.Parents[0]]; ok {
				p := &t.Commits[j]
				if p.Time == c.Time && p.FirstParent == c.FirstParent {
					s.Built[j] = false
				}
			}
		}
	}
	s.Order = timeOrder(t)
	var clock int64
	for _, i := range s.Order {
		clock = max(t.Commits[i].Time*1000, clock+1)
		s.StartMs[i] = clock
	}
	assigned := make([]bool, n)
	for _, c := range t.Commits {
		if !c.FirstParent || len(c.Parents) < 2 {
			continue
		}
		for _, p := range c.Parents[1:] {
			if s.collect(t, p, assigned) {
				s.Branches++
			}
		}
	}
	for i, c := range t.Commits {
		if c.FirstParent || assigned[i] {
			continue
		}
		b := -1
		for _, p := range c.Parents {
			if j, ok := t.index[p]; ok && assigned[j] && s.Branch[j] >= 0 {
				b = s.Branch[j]
				break
			}
		}
		if b < 0 {
			b = s.Branches
			s.Branches++
		}
		s.Branch[i] = b
		assigned[i] = true
	}
	first := make([]int, s.Branches)
	for i := range first {
		first[i] = -1
	}
	for _, i := range s.Order {
		if b := s.Branch[i]; b >= 0 && s.Built[i] && first[b] < 0 {
			first[b] = i
			s.FirstOfBranch[i] = true
		}
	}
	return s
}

// collect assigns the next branch id to the unassigned off-main commits
// reachable from tip and reports whether it found any.
func (s *Schedule) collect(t *Trace, tip string, assigned []bool) bool {
	id := s.Branches
	found := false
	stack := []string{tip}
	for len(stack) > 0 {
		sha := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		i, ok := t.index[sha]
		if !ok || assigned[i] || t.Commits[i].FirstParent {
			continue
		}
		assigned[i] = true
		s.Branch[i] = id
		found = true
		stack = append(stack, t.Commits[i].Parents...)
	}
	return found
}

// timeOrder is a topological order of the commits that takes the earliest
// committed ready commit first (Kahn's algorithm over a heap); ties keep file
// order.
func timeOrder(t *Trace) []int {
	n := len(t.Commits)
	pending := make([]int, n)
	children := make([][]int, n)
	for i, c := range t.Commits {
		seen := map[int]bool{}
		for _, p := range c.Parents {
			if j, ok := t.index[p]; ok && !seen[j] {
				seen[j] = true
				pending[i]++
				children[j] = append(children[j], i)
			}
		}
	}
	ready := newHeap(func(a, b int) bool {
		ta, tb := t.Commits[a].Time, t.Commits[b].Time
		return ta < tb || ta == tb && a < b
	})
	for i := range n {
		if pending[i] == 0 {
			ready.Push(i)
		}
	}
	order := make([]int, 0, n)
	for ready.Len() > 0 {
		i := ready.Pop()
		order = append(order, i)
		for _, c := range children[i] {
			if pending[c]--; pending[c] == 0 {
				ready.Push(c)
			}
		}
	}
	return order
}
