package agent

import (
	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Refusal reasons, as returned in OpenResult.Reason and by the HTTP API.
const (
	ReasonUnknownTenant = "unknown-tenant"
	ReasonSuspended     = "suspended"
	ReasonCeiling       = "ceiling"
)

// admitter decides admissions. It is called with the Agent's mutex held and
// must be fast and must not block. te is nil for a tenant the agent has no
// entry for. The soft admitter below is the only one for now; strict mode
// (grants leased by the leader) will plug in here as another implementation
// chosen per tenant by its Mode.
type admitter interface {
	admit(te *tenantEntry, cls plans.Class) (ok bool, reason string)
}

// softAdmitter applies the soft rules from the latest TenantState:
//
//   - a tenant not in the state is refused (unknown-tenant);
//   - a suspended tenant is refused (suspended);
//   - mode meter admits everything;
//   - otherwise (soft, and strict until grants exist) a session is admitted
//     while estimate < limit, where limit = Ceiling + Ceiling×BurstPct/100
//     and estimate = the pushed global Concurrency + (this agent's open count
//     of the tenant now − its open count when that push was received).
type softAdmitter struct{}

func (softAdmitter) admit(te *tenantEntry, _ plans.Class) (bool, string) {
	if te == nil || !te.known {
		return false, ReasonUnknownTenant
	}
	if te.info.Suspended {
		return false, ReasonSuspended
	}
	if plans.Mode(te.info.Mode) == plans.Meter {
		return true, ""
	}
	if estimate(te) < admitLimit(&te.info) {
		return true, ""
	}
	return false, ReasonCeiling
}

// admitLimit is the global concurrency below which a soft plan admits.
func admitLimit(info *wire.TenantInfo) uint64 {
	return info.Ceiling + info.Ceiling*uint64(info.BurstPct)/100
}

// estimate is the agent's estimate of the tenant's global concurrency.
func estimate(te *tenantEntry) uint64 {
	c := te.info.Concurrency
	d := te.open - te.base
	switch {
	case d >= 0 && c+uint64(d) >= c:
		return c + uint64(d)
	case d >= 0:
		return ^uint64(0) // saturate
	case uint64(-d) > c:
		return 0
	default:
		return c - uint64(-d)
	}
}

// setTenant records info as tenant te's admission state, received now.
func (t *table) setTenant(info wire.TenantInfo) {
	te := t.tenant(info.Tenant, true)
	if !te.known {
		te.known = true
		t.known++
	}
	te.info = info
	te.base = te.open
}

// forgetTenant marks the tenant unknown (not in the latest full state).
func (t *table) forgetTenant(te *tenantEntry) {
	if te.known {
		te.known = false
		te.info = wire.TenantInfo{}
		t.known--
	}
}

// applyTenantState applies a complete update: with full, the tenants of
// infos replace every tenant known before; without, they are merged in.
// Invalid entries (bad tenant ids) are skipped and counted.
func (t *table) applyTenantState(full bool, infos []wire.TenantInfo) (skipped int) {
	if full {
		keep := make(map[string]struct{}, len(infos))
		for i := range infos {
			keep[infos[i].Tenant] = struct{}{}
		}
		for id, te := range t.tenants {
			if _, ok := keep[id]; !ok && te.known {
				t.forgetTenant(te)
				t.maybeForget(te)
			}
		}
	}
	for i := range infos {
		if validTenantID(infos[i].Tenant) != nil {
			skipped++
			continue
		}
		t.setTenant(infos[i])
	}
	return skipped
}
