package api

import (
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// userSet is an agent's set of tenant's users of a day, hashed as agents do.
func userSet(tenant string, day uint32, users ...string) wire.UserSet {
	us := wire.UserSet{Tenant: tenant, Day: day}
	for _, u := range users {
		us.Hashes = append(us.Hashes, xxhash.Sum64String(u))
	}
	return us
}

// defaultPlan is the default catalogue's plan name.
func defaultPlan(t interface{ Fatalf(string, ...any) }, name string) plans.Plan {
	i := slices.IndexFunc(plans.Defaults(), func(p plans.Plan) bool { return p.Name == name })
	if i < 0 {
		t.Fatalf("no default plan %q", name)
		return plans.Plan{}
	}
	return plans.Defaults()[i]
}

// t0 is the time the state machine's own tests start at.
var t0 = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
