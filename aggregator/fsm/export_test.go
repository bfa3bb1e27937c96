package fsm

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// usageMicros sums, per tenant/period/class, a state's session time.
func usageMicros(f *FSM) map[string]uint64 {
	out := map[string]uint64{}
	f.Read(func(view View) {
		s := view.s
		for name, t := range s.Tenants {
			for p, u := range t.Usage {
				for c, m := range u.Micros {
					if m > 0 {
						out[name+"/"+p+"/"+plans.Class(c+1).String()] += m
					}
				}
			}
		}
	})
	return out
}

func (h *Harness) cut(at time.Time, seq uint64) *ApplyResult {
	h.T.Helper()
	return h.Apply(CmdExportCut, &ExportCutCmd{Time: at.UnixNano(), Seq: seq, Source: "headroom/test"})
}

func (h *Harness) pending() (uint64, []ExportRecord) {
	var n uint64
	var recs []ExportRecord
	h.F.Read(func(view View) {
		s := view.s
		if s.Export != nil {
			n = s.Export.Pending()
		}
		recs = s.ExportPending()
	})
	return n, recs
}

func refs(recs []ExportRecord) []ExportRef {
	out := make([]ExportRef, len(recs))
	for i, r := range recs {
		out[i] = r.ExportRef
	}
	return out
}

// addDeltas adds what each record's increment says to sums, per
// tenant/period/class.
func addDeltas(sums map[string]uint64, recs []ExportRecord) {
	for _, r := range recs {
		for c, d := range r.Delta {
			if d > 0 {
				sums[r.Tenant+"/"+r.Period+"/"+plans.Class(c+1).String()] += d
			}
		}
	}
}

// TestExportCutAndAck: a cut freezes each grown record's figure; the
// increments are fixed until acknowledged; a cut waits for the previous
// one; stale and repeated commands are refused; after the traffic stops
// the increments add up to the usage exactly.
func TestExportCutAndAck(t *testing.T) {
	h := NewHarness(t)
	at := t0.Add(-time.Hour)
	h.Items(at, "payg", Full("a1", 1, 0), Full("b1", 1, 0))
	h.region(at, "eu", Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 2, SessionMicros: 1_500_000},
		wire.DeltaEntry{Tenant: "t2", Class: "video-hd", Opened: 1, SessionMicros: 7}))
	h.region(at, "us", Batch("b1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 1, SessionMicros: 250_001}))

	if res := h.cut(at, 2); res.Err == nil {
		t.Fatal("a cut numbered 2 before cut 1 was applied")
	}
	if res := h.cut(at, 1); res.Err != nil {
		t.Fatal(res.Err)
	}
	n, recs := h.pending()
	want := []ExportRecord{
		{ExportRef{"t1", "2026-11", "eu"}, ClassCounts{1_500_000}},
		{ExportRef{"t1", "2026-11", "us"}, ClassCounts{250_001}},
		{ExportRef{"t2", "2026-11", "eu"}, ClassCounts{0, 7}},
	}
	if n != 3 || !reflect.DeepEqual(recs, want) {
		t.Fatalf("after cut 1: %d pending %+v, want %+v", n, recs, want)
	}
	sums := map[string]uint64{}
	addDeltas(sums, recs)

	// More usage after the cut does not change its increments.
	h.region(at.Add(time.Second), "eu", Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 1_000_000}))
	if _, again := h.pending(); !reflect.DeepEqual(again, want) {
		t.Fatalf("usage after the cut changed its increments: %+v", again)
	}
	// Half acknowledged: the next cut waits.
	h.OK(CmdExportAck, &ExportAckCmd{Seq: 1, Records: refs(recs[:2])})
	if n, _ := h.pending(); n != 1 {
		t.Fatalf("%d pending after acknowledging 2 of 3", n)
	}
	if res := h.cut(at.Add(2*time.Second), 2); res.Err == nil || !strings.Contains(res.Err.Error(), "not acknowledged") {
		t.Fatalf("cut 2 with cut 1 half acknowledged: %v", res.Err)
	}
	// Acknowledging again, or a record that does not exist, changes nothing.
	h.OK(CmdExportAck, &ExportAckCmd{Seq: 1, Records: append(refs(recs[:2]), ExportRef{"nobody", "2026-11", ""})})
	if n, _ := h.pending(); n != 1 {
		t.Fatalf("%d pending after a repeated acknowledgement", n)
	}
	h.OK(CmdExportAck, &ExportAckCmd{Seq: 1, Records: refs(recs[2:])})
	if n, recs := h.pending(); n != 0 || recs != nil {
		t.Fatalf("all acknowledged: %d pending %+v", n, recs)
	}
	if res := h.Apply(CmdExportAck, &ExportAckCmd{Seq: 2, Records: refs(recs)}); res.Err == nil {
		t.Fatal("an acknowledgement of a cut not made yet was applied")
	}

	// Cut 2 freezes only what grew since cut 1: one record, by 1 s.
	if res := h.cut(at.Add(3*time.Second), 2); res.Err != nil {
		t.Fatal(res.Err)
	}
	_, recs2 := h.pending()
	if want := []ExportRecord{{ExportRef{"t1", "2026-11", "eu"}, ClassCounts{1_000_000}}}; !reflect.DeepEqual(recs2, want) {
		t.Fatalf("cut 2: %+v, want %+v", recs2, want)
	}
	if res := h.Apply(CmdExportAck, &ExportAckCmd{Seq: 1, Records: refs(recs2)}); res.Err == nil {
		t.Fatal("a stale acknowledgement (cut 1) was applied during cut 2")
	}
	addDeltas(sums, recs2)
	h.OK(CmdExportAck, &ExportAckCmd{Seq: 2, Records: refs(recs2)})
	if got := usageMicros(h.F); !reflect.DeepEqual(sums, got) {
		t.Fatalf("exported %v, usage %v", sums, got)
	}
	var e ExportState
	h.F.Read(func(view View) { s := view.s; e = *s.Export })
	if e.From != at.UnixNano() || e.To != at.Add(3*time.Second).UnixNano() || e.Source != "headroom/test" {
		t.Fatalf("window 2: %+v", e)
	}
}

// TestExportExactThroughRandomTraffic: random batches in two regions and
// two periods, cuts at random, each acknowledged in random parts and some
// twice; the sum of the increments equals the usage exactly, and a
// restored copy taken mid-cut continues with the same increments.
func TestExportExactThroughRandomTraffic(t *testing.T) {
	h := NewHarness(t)
	rng := rand.New(rand.NewPCG(1, 2))
	at := t0.Add(-2 * time.Hour) // the period before t0's ends during the run
	h.Items(at, "payg", Full("a1", 1, 0), Full("b1", 1, 0))
	seqs := map[string]uint64{}
	sums := map[string]uint64{}
	var cut uint64
	classes := []string{"audio", "video-hd", "ai"}
	for step := 0; step < 400; step++ {
		at = at.Add(time.Duration(rng.IntN(40)) * time.Second)
		agent, region := "a1", "eu"
		if rng.IntN(2) == 0 {
			agent, region = "b1", ""
		}
		seqs[agent]++
		var es []wire.DeltaEntry
		for range 1 + rng.IntN(4) {
			es = append(es, wire.DeltaEntry{Tenant: []string{"x", "y", "z"}[rng.IntN(3)], Class: classes[rng.IntN(len(classes))],
				SessionMicros: uint64(rng.IntN(5_000_000))})
		}
		h.region(at, region, &wire.DeltaBatch{AgentID: agent, Epoch: 1, Seq: seqs[agent], Entries: es})
		if rng.IntN(5) != 0 {
			continue
		}
		n, recs := h.pending()
		if n == 0 {
			cut++
			if res := h.cut(at, cut); res.Err != nil {
				t.Fatal(res.Err)
			}
			_, recs = h.pending()
			addDeltas(sums, recs)
		}
		if len(recs) == 0 {
			continue
		}
		if rng.IntN(4) == 0 { // a restored copy carries on exactly
			g := restoredCopy(t, h.F)
			var again []ExportRecord
			g.Read(func(view View) { s := view.s; again = s.ExportPending() })
			if !reflect.DeepEqual(again, recs) {
				t.Fatalf("step %d: restored copy's pending %+v, want %+v", step, again, recs)
			}
		}
		part := recs[:1+rng.IntN(len(recs))]
		h.OK(CmdExportAck, &ExportAckCmd{Seq: cut, Records: refs(part)})
		if rng.IntN(3) == 0 {
			h.OK(CmdExportAck, &ExportAckCmd{Seq: cut, Records: refs(part)}) // a duplicate
		}
	}
	// Drain: acknowledge what is pending, then one last cut.
	for range 3 {
		if n, recs := h.pending(); n > 0 {
			h.OK(CmdExportAck, &ExportAckCmd{Seq: cut, Records: refs(recs)})
		}
		cut++
		if res := h.cut(at, cut); res.Err != nil {
			t.Fatal(res.Err)
		}
		_, recs := h.pending()
		addDeltas(sums, recs)
		h.OK(CmdExportAck, &ExportAckCmd{Seq: cut, Records: refs(recs)})
	}
	got := usageMicros(h.F)
	if !reflect.DeepEqual(sums, got) {
		t.Fatalf("exported %v\nusage    %v", sums, got)
	}
	periods := map[string]bool{}
	for k := range got {
		periods[strings.Split(k, "/")[1]] = true
	}
	if len(periods) != 2 {
		t.Fatalf("the run was meant to cross a period boundary: %v", periods)
	}
}

// TestExportDeletedTenantDoesNotHoldTheCut: a tenant deleted with records
// unacknowledged (its usage in a period two back, still open at the cut)
// does not hold the next cut back.
func TestExportDeletedTenantDoesNotHoldTheCut(t *testing.T) {
	h := NewHarness(t)
	at := time.Date(2026, 9, 30, 23, 30, 0, 0, time.UTC)
	h.Items(at, "payg", Full("a1", 1, 0))
	h.region(at, "eu", Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "gone", Class: "audio", SessionMicros: 5}))
	at = time.Date(2026, 10, 1, 0, 30, 0, 0, time.UTC) // 2026-09 still open (grace 1 h)
	if res := h.cut(at, 1); res.Err != nil {
		t.Fatal(res.Err)
	}
	at = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) // 2026-09 is two periods back: deletable
	if res := h.Apply(CmdTenantOp, &TenantOpCmd{Time: at.UnixNano(), Tenant: "gone", Op: "delete"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if n, _ := h.pending(); n != 0 {
		t.Fatalf("%d pending after the tenant was deleted", n)
	}
	if res := h.cut(at, 2); res.Err != nil {
		t.Fatalf("cut after the deletion: %v", res.Err)
	}
}
