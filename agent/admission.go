package agent

import (
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Refusal reasons, as returned in OpenResult.Reason and by the HTTP API.
const (
	ReasonUnknownTenant      = "unknown-tenant"
	ReasonSuspended          = "suspended"
	ReasonCeiling            = "ceiling"
	ReasonClassCeiling       = "class-ceiling"
	ReasonGrantTimeout       = "grant-timeout"
	ReasonClusterUnreachable = "cluster-unreachable"
	// ReasonClassUnsupported: the server the agent streams to is of a
	// version that does not count the class (a device session to a server
	// of before the device class): admitted, it would never be counted.
	ReasonClassUnsupported = "class-unsupported"
)

// retryAfter is what a refusal tells the caller to wait before trying
// again: short where a top-up or a reconnection may come any moment.
func retryAfter(reason string) time.Duration {
	switch reason {
	case ReasonGrantTimeout, ReasonClusterUnreachable:
		return time.Second
	case ReasonCeiling, ReasonClassCeiling:
		return 5 * time.Second
	}
	return 30 * time.Second
}

// verdict is the outcome of an admission decision.
type verdict uint8

const (
	admit  verdict = iota + 1
	refuse         // with a reason
	wait           // a strict share is used up but the ceiling has room: wait for a top-up
)

// decide applies the admission rules from the latest TenantState to a
// session of class cls of tenant te (nil: an entry the agent does not
// have) at now; live tells whether a stream to the leader is up:
//
//   - a tenant not in the state is refused (unknown-tenant);
//   - a suspended tenant is refused (suspended);
//   - mode meter admits everything;
//   - mode strict admits within the agent's live shares (grants.go);
//   - mode soft admits while estimate < limit, where limit = Ceiling +
//     Ceiling×BurstPct/100 and estimate = the pushed global Concurrency +
//     (this agent's open count of the tenant now − its open count when that
//     push was received); the same for each class with a ceiling of its own.
//
// It is called with the Agent's mutex held and does not block.
func decide(te *tenantEntry, cls plans.Class, now int64, live bool) (v verdict, reason string, short [2]int) {
	short = [2]int{-1, -1}
	if te == nil || !te.known {
		return refuse, ReasonUnknownTenant, short
	}
	if te.info.Suspended {
		return refuse, ReasonSuspended, short
	}
	switch plans.Mode(te.info.Mode) {
	case plans.Meter:
		return admit, "", short
	case plans.Strict:
		return strictVerdict(te, cls, now, live)
	}
	if estimate(te) >= admitLimit(&te.info, te.info.Ceiling) {
		return refuse, ReasonCeiling, short
	}
	for _, cl := range te.info.ClassLimits {
		if c, _ := plans.ParseClass(cl.Class); c == cls {
			if addDelta(cl.Concurrency, te.cells[c-1].count-te.cbase[c-1]) >= admitLimit(&te.info, cl.Ceiling) {
				return refuse, ReasonClassCeiling, short
			}
		}
	}
	return admit, "", short
}

// admitLimit is the global concurrency below which a soft plan admits
// under ceiling.
func admitLimit(info *wire.TenantInfo, ceiling uint64) uint64 {
	return ceiling + ceiling*uint64(info.BurstPct)/100
}

// estimate is the agent's estimate of the tenant's global concurrency.
func estimate(te *tenantEntry) uint64 { return addDelta(te.info.Concurrency, te.open-te.base) }

// addDelta is c+d, saturating at 0 and at the largest uint64.
func addDelta(c uint64, d int64) uint64 {
	switch {
	case d >= 0 && c+uint64(d) >= c:
		return c + uint64(d)
	case d >= 0:
		return ^uint64(0)
	case uint64(-d) > c:
		return 0
	default:
		return c - uint64(-d)
	}
}

// setTenant records info as tenant te's admission state, received now.
func (t *table) setTenant(info wire.TenantInfo, lastAsk uint64) {
	te := t.tenant(info.Tenant, true)
	if !te.known {
		te.known = true
		t.known++
	}
	te.info = info
	te.base = te.open
	t.tenantsGen++
	for i := range te.cbase {
		te.cbase[i] = te.cells[i].count
	}
	te.setPools(&te.info, lastAsk)
}

// forgetTenant marks the tenant unknown (not in the latest full state); its
// shares go back with the next ask.
func (t *table) forgetTenant(te *tenantEntry, lastAsk uint64) {
	if te.known {
		te.known = false
		te.info = wire.TenantInfo{}
		te.setPools(&te.info, lastAsk)
		t.known--
		t.tenantsGen++
	}
}

// applyTenantState applies a complete update: with full, the tenants of
// infos replace every tenant known before; without, they are merged in.
// Invalid entries (bad tenant ids) are skipped and counted.
func (t *table) applyTenantState(full bool, infos []wire.TenantInfo, lastAsk uint64) (skipped int) {
	if full {
		keep := make(map[string]struct{}, len(infos))
		for i := range infos {
			keep[infos[i].Tenant] = struct{}{}
		}
		for id, te := range t.tenants {
			if _, ok := keep[id]; !ok && te.known {
				t.forgetTenant(te, lastAsk)
				t.maybeForget(te)
			}
		}
	}
	for i := range infos {
		if validTenantID(infos[i].Tenant) != nil {
			skipped++
			continue
		}
		t.setTenant(infos[i], lastAsk)
	}
	return skipped
}
