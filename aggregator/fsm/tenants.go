package fsm

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Holding is a plan a tenant was put on, from its effective time (unix ns).
type Holding struct {
	Plan string
	From int64
}

// maxHistory bounds a tenant's plan history (more than a year of daily
// changes).
const maxHistory = 512

// Scheduled is a plan change waiting for its time.
type Scheduled struct {
	ID       uint64
	Tenant   string
	Plan     string
	At       int64 // effective time, unix ns
	Created  int64
	Operator string
}

// AuditEntry records one change made by an operator or by the schedule.
type AuditEntry struct {
	Index    uint64
	Time     int64 // entry time, unix ns
	Tenant   string
	Kind     string // set-plan, schedule, apply-scheduled, cancel, suspend, resume, delete, plan-create, plan-update, plan-delete
	Operator string
	Before   string
	After    string
}

// MaxAudit bounds the audit log kept in the state; older entries are
// dropped first (plan changes are rare: this is years of them).
const MaxAudit = 100_000

// ErrRefused marks a command the state machine refused for the caller's
// reasons (bad input), as opposed to a failure.
var ErrRefused = errors.New("refused")

func refused(format string, args ...any) *ApplyResult {
	return &ApplyResult{Err: fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))}
}

func (a *applier) audit(e AuditEntry) {
	e.Index, e.Time = a.index, a.now
	if len(a.s.Audit) >= MaxAudit {
		a.s.Audit = append(a.s.Audit[:0:0], a.s.Audit[len(a.s.Audit)-MaxAudit+1:]...)
	}
	a.s.Audit = append(a.s.Audit, e)
	a.audited = append(a.audited, e)
}

// putOnPlan moves a tenant to a plan from time at.
func (a *applier) putOnPlan(t *Tenant, plan string, at int64) {
	t.Plan = plan
	t.History = append(t.History, Holding{Plan: plan, From: at})
	if len(t.History) > maxHistory {
		t.History = append(t.History[:0:0], t.History[len(t.History)-maxHistory:]...)
	}
	a.touch(t)
}

func (c *SetPlanCmd) apply(a *applier) *ApplyResult {
	if _, ok := a.s.Plans[c.Plan]; !ok {
		return refused("unknown plan %q", c.Plan)
	}
	t := a.tenant(c.Tenant, "")
	if old := a.s.Scheduled[c.Tenant]; old != nil {
		delete(a.s.Scheduled, c.Tenant)
		a.audit(AuditEntry{Tenant: c.Tenant, Kind: "cancel", Operator: c.Operator,
			Before: fmt.Sprintf("%s at %s", old.Plan, FormatTime(old.At)), After: "replaced by a newer change"})
	}
	if c.At <= a.now {
		before := t.Plan
		a.putOnPlan(t, c.Plan, a.now)
		a.audit(AuditEntry{Tenant: c.Tenant, Kind: "set-plan", Operator: c.Operator, Before: before, After: c.Plan})
		return &ApplyResult{}
	}
	a.s.NextID++
	sc := &Scheduled{ID: a.s.NextID, Tenant: c.Tenant, Plan: c.Plan, At: c.At, Created: a.now, Operator: c.Operator}
	a.s.Scheduled[c.Tenant] = sc
	a.touch(t)
	a.audit(AuditEntry{Tenant: c.Tenant, Kind: "schedule", Operator: c.Operator, Before: t.Plan, After: fmt.Sprintf("%s at %s", c.Plan, FormatTime(c.At))})
	return &ApplyResult{Scheduled: sc.ID}
}

// apply puts every tenant whose scheduled change is due at the entry's time
// on its plan, effective at the scheduled time itself (a downgrade for the
// period's end is effective exactly at the boundary, however late the
// entry that applies it).
func (c *ApplyDueCmd) apply(a *applier) *ApplyResult {
	var due []*Scheduled
	for _, sc := range a.s.Scheduled {
		if sc.At <= a.now {
			due = append(due, sc)
		}
	}
	// In time order (then id), so every replica writes the same audit.
	sort.Slice(due, func(i, j int) bool {
		return due[i].At < due[j].At || (due[i].At == due[j].At && due[i].ID < due[j].ID)
	})
	for _, sc := range due {
		name := sc.Tenant
		delete(a.s.Scheduled, name)
		t := a.s.Tenants[name]
		if t == nil {
			continue
		}
		before := t.Plan
		a.putOnPlan(t, sc.Plan, sc.At)
		a.audit(AuditEntry{Tenant: name, Kind: "apply-scheduled", Operator: sc.Operator, Before: before, After: sc.Plan})
	}
	return &ApplyResult{}
}

func (c *CancelCmd) apply(a *applier) *ApplyResult {
	sc := a.s.Scheduled[c.Tenant]
	if sc == nil || (c.ID != 0 && sc.ID != c.ID) {
		return refused("tenant %q has no scheduled change%s", c.Tenant, idSuffix(c.ID))
	}
	delete(a.s.Scheduled, c.Tenant)
	if t := a.s.Tenants[c.Tenant]; t != nil {
		a.touch(t)
	}
	a.audit(AuditEntry{Tenant: c.Tenant, Kind: "cancel", Operator: c.Operator, Before: fmt.Sprintf("%s at %s", sc.Plan, FormatTime(sc.At))})
	return &ApplyResult{}
}

func idSuffix(id uint64) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf(" with id %d", id)
}

func (c *TenantOpCmd) apply(a *applier) *ApplyResult {
	t := a.s.Tenants[c.Tenant]
	if t == nil {
		return refused("no tenant %q", c.Tenant)
	}
	switch c.Op {
	case "suspend", "resume":
		before := standing(t.Suspended)
		t.Suspended = c.Op == "suspend"
		a.touch(t)
		a.audit(AuditEntry{Tenant: c.Tenant, Kind: c.Op, Operator: c.Operator, Before: before, After: standing(t.Suspended)})
	case "delete":
		if n := t.Open.Total(); n > 0 {
			return refused("tenant %q has %d open sessions", c.Tenant, n)
		}
		if p := unbilledPeriod(t, a.now); p != "" {
			return refused("tenant %q has usage in %s, a period not yet billed", c.Tenant, p)
		}
		for _, rec := range a.s.Agents {
			delete(rec.Counts, c.Tenant)
		}
		a.dropExport(t)
		delete(a.s.Tenants, c.Tenant)
		delete(a.s.Scheduled, c.Tenant)
		a.changed = append(a.changed, c.Tenant)
		a.audit(AuditEntry{Tenant: c.Tenant, Kind: "delete", Operator: c.Operator, Before: t.Plan})
	default:
		return refused("unknown tenant operation %q", c.Op)
	}
	return &ApplyResult{}
}

func standing(suspended bool) string {
	if suspended {
		return "suspended"
	}
	return "active"
}

// unbilledPeriod names a period with usage that may not be billed yet: the
// current one or the one before it (closed periods are billed after their
// end plus a grace for late batches).
func unbilledPeriod(t *Tenant, now int64) string {
	cur := plans.PeriodOf(time.Unix(0, now))
	for _, p := range []plans.Period{cur, cur.Prev()} {
		if u := t.Usage[p.String()]; u != nil && (u.Micros != ClassCounts{}) {
			return p.String()
		}
	}
	return ""
}

func (c *PutPlanCmd) apply(a *applier) *ApplyResult {
	p := c.Plan
	if err := p.Validate(); err != nil {
		return refused("%v", err)
	}
	old, exists := a.s.Plans[p.Name]
	switch {
	case c.Create && exists:
		return refused("plan %q exists", p.Name)
	case !c.Create && !exists:
		return refused("no plan %q", p.Name)
	}
	a.s.Plans[p.Name] = p
	kind, before := "plan-create", ""
	if exists {
		kind, before = "plan-update", describePlan(old)
		for _, t := range a.s.Tenants { // agents learn the new terms
			if t.Plan == p.Name {
				a.touch(t)
			}
		}
	}
	a.audit(AuditEntry{Kind: kind, Operator: c.Operator, Before: before, After: describePlan(p)})
	return &ApplyResult{}
}

func (c *DeletePlanCmd) apply(a *applier) *ApplyResult {
	p, ok := a.s.Plans[c.Name]
	if !ok {
		return refused("no plan %q", c.Name)
	}
	n := 0
	for _, t := range a.s.Tenants {
		if t.Plan == c.Name {
			n++
		}
	}
	for _, sc := range a.s.Scheduled {
		if sc.Plan == c.Name {
			n++
		}
	}
	if n > 0 {
		return refused("plan %q is used by %d tenants or scheduled changes", c.Name, n)
	}
	delete(a.s.Plans, c.Name)
	a.audit(AuditEntry{Kind: "plan-delete", Operator: c.Operator, Before: describePlan(p)})
	return &ApplyResult{}
}

func describePlan(p plans.Plan) string {
	return fmt.Sprintf("%s: %s/month, ceiling %d %s, %d unit-minutes included", p.Name, plans.FormatMicro(p.FeeMonthly), p.Ceiling, p.Mode, p.IncludedUnitMinutes)
}

func FormatTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }

// TenantInfo is what agents are told of a tenant; tenants on no plan are
// not told (agents refuse them as unknown).
func TenantInfo(v View, t *Tenant) (wire.TenantInfo, bool) {
	s := v.s
	p, ok := s.Plans[t.Plan]
	if !ok {
		return wire.TenantInfo{}, false
	}
	info := wire.TenantInfo{
		Tenant: t.Name, Plan: p.Name, Ceiling: p.Ceiling, Mode: string(p.Mode),
		BurstPct: p.BurstPct, Concurrency: t.Open.Total(), Suspended: t.Suspended,
		Over: t.overBy(""),
	}
	for _, cl := range p.ClassCeilings {
		if i := ClassIndex(cl.Class); i >= 0 {
			info.ClassLimits = append(info.ClassLimits, wire.ClassLimit{Class: cl.Class, Ceiling: cl.Ceiling, Concurrency: t.Open[i], Over: t.overBy(cl.Class)})
		}
	}
	return info, true
}
