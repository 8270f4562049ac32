package replay

// newProto returns the prototype planner policy.
func newProto() (*central, error) {
	c, err := newCentral()
	if err != nil {
		return nil, err
	}
	c.name = PolicyPlannerProto
	return c, nil
}
