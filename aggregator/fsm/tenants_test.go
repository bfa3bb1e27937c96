package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

func TestScheduledDowngradeAppliesExactlyAtTheBoundary(t *testing.T) {
	h := NewHarness(t)
	start := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	boundary := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: start.UnixNano(), Tenant: "t1", Plan: "growth", Operator: "ops"})
	res := h.Apply(CmdSetPlan, &SetPlanCmd{Time: start.UnixNano(), Tenant: "t1", Plan: "starter", At: boundary.UnixNano(), Operator: "ops"})
	if res.Err != nil || res.Scheduled == 0 {
		t.Fatalf("schedule: %+v", res)
	}
	if p := h.Tenant("t1").Plan; p != "growth" {
		t.Fatalf("plan changed before its time: %s", p)
	}
	// One nanosecond early: nothing happens.
	h.Apply(CmdApplyDue, &ApplyDueCmd{Time: boundary.UnixNano() - 1})
	if p := h.Tenant("t1").Plan; p != "growth" {
		t.Fatalf("applied 1 ns early: %s", p)
	}
	// Applied by an entry that commits late: effective at the boundary.
	h.Apply(CmdApplyDue, &ApplyDueCmd{Time: boundary.Add(3 * time.Second).UnixNano()})
	tn := h.Tenant("t1")
	if tn.Plan != "starter" {
		t.Fatalf("plan %s after the boundary, want starter", tn.Plan)
	}
	last := tn.History[len(tn.History)-1]
	if last.Plan != "starter" || last.From != boundary.UnixNano() {
		t.Fatalf("history %+v: want starter from exactly %s", tn.History, boundary)
	}
	h.F.Read(func(view View) {
		s := view.s
		if len(s.Scheduled) != 0 {
			t.Fatalf("schedule left: %+v", s.Scheduled)
		}
		kinds := []string{}
		for _, e := range s.Audit {
			kinds = append(kinds, e.Kind+":"+e.Operator)
		}
		if strings.Join(kinds, ",") != "set-plan:ops,schedule:ops,apply-scheduled:ops" {
			t.Fatalf("audit %v", kinds)
		}
	})
}

func TestNewerChangeReplacesPendingAndCancel(t *testing.T) {
	h := NewHarness(t)
	later := t0.Add(24 * time.Hour).UnixNano()
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "scale"})
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "starter", At: later})
	// An upgrade now replaces the pending downgrade: it must not revert it.
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "growth"})
	h.Apply(CmdApplyDue, &ApplyDueCmd{Time: later})
	if p := h.Tenant("t1").Plan; p != "growth" {
		t.Fatalf("plan %s: the replaced change was applied", p)
	}
	res := h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "payg", At: later + 1})
	if r := h.Apply(CmdCancel, &CancelCmd{Time: t0.UnixNano(), Tenant: "t1", ID: res.Scheduled + 1}); !errors.Is(r.Err, ErrRefused) {
		t.Fatalf("cancel of another id: %v", r.Err)
	}
	if r := h.Apply(CmdCancel, &CancelCmd{Time: t0.UnixNano(), Tenant: "t1", ID: res.Scheduled}); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.Apply(CmdApplyDue, &ApplyDueCmd{Time: later + 1})
	if p := h.Tenant("t1").Plan; p != "growth" {
		t.Fatalf("plan %s: a cancelled change was applied", p)
	}
	if r := h.Apply(CmdCancel, &CancelCmd{Time: t0.UnixNano(), Tenant: "t1"}); !errors.Is(r.Err, ErrRefused) {
		t.Fatal("cancel with nothing pending accepted")
	}
}

func TestSuspendResumeDelete(t *testing.T) {
	h := NewHarness(t)
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "growth"})
	h.Items(t0, "", Full("a1", 1, 0), Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 2, Peak: 2, SessionMicros: 5}))
	op := func(o string) *ApplyResult {
		return h.Apply(CmdTenantOp, &TenantOpCmd{Time: t0.UnixNano(), Tenant: "t1", Op: o})
	}
	if r := op("suspend"); r.Err != nil || !h.Tenant("t1").Suspended {
		t.Fatalf("suspend: %v", r.Err)
	}
	var info wire.TenantInfo
	h.F.Read(func(view View) { s := view.s; info, _ = TenantInfo(View{s}, s.Tenants["t1"]) })
	if !info.Suspended {
		t.Fatal("agents are not told the tenant is suspended")
	}
	if tn := h.Tenant("t1"); tn.Open.Total() != 2 {
		t.Fatal("suspension touched running sessions")
	}
	if r := op("resume"); r.Err != nil || h.Tenant("t1").Suspended {
		t.Fatalf("resume: %v", r.Err)
	}
	if r := op("delete"); !errors.Is(r.Err, ErrRefused) || !strings.Contains(r.Err.Error(), "open sessions") {
		t.Fatalf("delete with open sessions: %v", r.Err)
	}
	h.Items(t0, "", Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", Closed: 2}))
	if r := op("delete"); !errors.Is(r.Err, ErrRefused) || !strings.Contains(r.Err.Error(), "not yet billed") {
		t.Fatalf("delete with unbilled usage: %v", r.Err)
	}
	// Two periods later the usage is billed: the tenant may go.
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.AddDate(0, 2, 0).UnixNano(), Tenant: "t2", Plan: "payg"})
	if r := op("delete"); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.F.Read(func(view View) {
		s := view.s
		if s.Tenants["t1"] != nil || s.Agents["a1"].Counts["t1"] != nil {
			t.Fatal("deleted tenant left behind")
		}
	})
	if r := op("suspend"); !errors.Is(r.Err, ErrRefused) {
		t.Fatal("suspend of a deleted tenant accepted")
	}
}

func TestPlanCatalogueChanges(t *testing.T) {
	h := NewHarness(t)
	gold := plans.Plan{Name: "gold", FeeMonthly: 5_000_000_000, Ceiling: 5000, Mode: plans.Strict, IncludedUnitMinutes: 1000}
	if r := h.Apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: gold, Create: true}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := h.Apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: gold, Create: true}); !errors.Is(r.Err, ErrRefused) {
		t.Fatal("created a plan twice")
	}
	bad := gold
	bad.Mode = "hard"
	if r := h.Apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: bad}); !errors.Is(r.Err, ErrRefused) {
		t.Fatal("invalid plan stored")
	}
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "gold"})
	gold.Ceiling = 6000
	if r := h.Apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: gold}); r.Err != nil {
		t.Fatal(r.Err)
	}
	var info wire.TenantInfo
	h.F.Read(func(view View) { s := view.s; info, _ = TenantInfo(View{s}, s.Tenants["t1"]) })
	if info.Ceiling != 6000 {
		t.Fatalf("tenant's ceiling %d after the plan update, want 6000", info.Ceiling)
	}
	if r := h.Apply(CmdDeletePlan, &DeletePlanCmd{Time: t0.UnixNano(), Name: "gold"}); !errors.Is(r.Err, ErrRefused) {
		t.Fatal("deleted a plan in use")
	}
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "growth"})
	if r := h.Apply(CmdDeletePlan, &DeletePlanCmd{Time: t0.UnixNano(), Name: "gold"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.F.Read(func(view View) {
		s := view.s
		if _, ok := s.Plans["gold"]; ok {
			t.Fatal("plan not deleted")
		}
	})
}
