package replay

// Schedule says when each commit is built and which branch it belongs to.
type Schedule struct {
	// StartMs[i] is when commit i's jobs start, in unix milliseconds: its
	// committer time, pushed forward so that builds never go back in time
	// (rebases and clock skew leave a few commits older than their parents).
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

// NewSchedule builds commits in file order (parents first), except the
// inner commits of same-time runs (see Built). A branch is the
// set of off-main commits a first-parent merge brought in: everything
// reachable from its second parent that is not on the first-parent line and
// was not brought in by an earlier merge. Off-main commits no merge reaches
// join the branch of an off-main parent, or start their own.
func NewSchedule(t *Trace) Schedule {
	n := len(t.Commits)
	s := Schedule{StartMs: make([]int64, n), Built: make([]bool, n), Branch: make([]int, n), FirstOfBranch: make([]bool, n)}
	var clock int64
	for i, c := range t.Commits {
		clock = max(c.Time*1000, clock+1)
		s.StartMs[i] = clock
		s.Branch[i] = -1
		s.Built[i] = true
		if i > 0 {
			prev := &t.Commits[i-1]
			if c.Time == prev.Time && c.FirstParent == prev.FirstParent && len(c.Parents) > 0 && c.Parents[0] == prev.Commit {
				s.Built[i-1] = false
			}
		}
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
	for i, b := range s.Branch {
		if b >= 0 && s.Built[i] && first[b] < 0 {
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
