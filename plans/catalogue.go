package plans

import (
	"fmt"
	"sort"
)

// MaxPlans bounds the number of plans in a catalogue.
const MaxPlans = 1000

// Catalogue is a validated set of plans with unique names, looked up by
// name. It is immutable once built; the zero value is an empty catalogue.
type Catalogue struct {
	plans  []Plan // normalized, sorted by name
	byName map[string]int
}

// NewCatalogue validates every plan, refuses duplicate names and more than
// MaxPlans plans, and returns the catalogue of the plans normalized and
// sorted by name. Errors name the plan (and its index in ps).
func NewCatalogue(ps []Plan) (*Catalogue, error) {
	if len(ps) > MaxPlans {
		return nil, fmt.Errorf("catalogue: %d plans (at most %d)", len(ps), MaxPlans)
	}
	c := &Catalogue{plans: make([]Plan, 0, len(ps)), byName: make(map[string]int, len(ps))}
	first := make(map[string]int, len(ps))
	for i, p := range ps {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("plans[%d]: %w", i, err)
		}
		if j, dup := first[p.Name]; dup {
			return nil, fmt.Errorf("plans[%d]: plan name %q already used by plans[%d]", i, p.Name, j)
		}
		first[p.Name] = i
		c.plans = append(c.plans, p.Normalized())
	}
	sort.Slice(c.plans, func(i, j int) bool { return c.plans[i].Name < c.plans[j].Name })
	for i, p := range c.plans {
		c.byName[p.Name] = i
	}
	return c, nil
}

// Lookup returns the plan named name (a copy; its slices are shared and
// must not be modified).
func (c *Catalogue) Lookup(name string) (Plan, bool) {
	if c == nil {
		return Plan{}, false
	}
	i, ok := c.byName[name]
	if !ok {
		return Plan{}, false
	}
	return c.plans[i], true
}

// Plans returns the plans sorted by name, in a new slice (the plans' own
// slices are shared and must not be modified).
func (c *Catalogue) Plans() []Plan {
	if c == nil {
		return nil
	}
	return append([]Plan(nil), c.plans...)
}

// Len is the number of plans.
func (c *Catalogue) Len() int {
	if c == nil {
		return 0
	}
	return len(c.plans)
}
