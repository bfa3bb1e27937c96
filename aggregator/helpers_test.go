package aggregator

import (
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

func jsonBody(s string) io.Reader { return strings.NewReader(s) }

// t0 is the time the state machine's own tests start at.
var t0 = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

// userSet is an agent's set of tenant's users of a day, hashed as agents do.
func userSet(tenant string, day uint32, users ...string) wire.UserSet {
	us := wire.UserSet{Tenant: tenant, Day: day}
	for _, u := range users {
		us.Hashes = append(us.Hashes, xxhash.Sum64String(u))
	}
	return us
}

// cutAt stamps an agent batch with the time it was cut at.
func cutAt(b *wire.DeltaBatch, at time.Time) *wire.DeltaBatch {
	b.AgentTime = at.UnixMilli()
	return b
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
