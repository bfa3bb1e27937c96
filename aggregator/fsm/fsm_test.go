package fsm

import (
	"bytes"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

var t0 = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

func TestBatchSequencing(t *testing.T) {
	audio := ClassIndex("audio")
	cases := []struct {
		name      string
		msgs      []wire.Message
		want      []ItemStatus
		wantOpen  uint64
		wantLast  uint64
		wantEpoch uint64
	}{
		{
			name:     "batch before any full state needs one",
			msgs:     []wire.Message{Batch("a1", 5, 1, Open("t1", "audio", 3))},
			want:     []ItemStatus{StatusNeedFull},
			wantOpen: 0,
		},
		{
			name:      "full state then batches in order",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 1, Open("t1", "audio", 3)), Batch("a1", 5, 2, Closed("t1", "audio", 1))},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusApplied},
			wantOpen:  2,
			wantLast:  2,
			wantEpoch: 5,
		},
		{
			name:      "duplicate batch applied once",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 1, Open("t1", "audio", 3)), Batch("a1", 5, 1, Open("t1", "audio", 3))},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusDuplicate},
			wantOpen:  3,
			wantLast:  1,
			wantEpoch: 5,
		},
		{
			name:      "old batch after newer ones is a duplicate",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 1, Open("t1", "audio", 3)), Batch("a1", 5, 2, Open("t1", "audio", 1)), Batch("a1", 5, 1, Open("t1", "audio", 3))},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusApplied, StatusDuplicate},
			wantOpen:  4,
			wantLast:  2,
			wantEpoch: 5,
		},
		{
			name:      "out of order batch is refused with the last seq",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 2, Open("t1", "audio", 3))},
			want:      []ItemStatus{StatusApplied, StatusGap},
			wantOpen:  0,
			wantLast:  0,
			wantEpoch: 5,
		},
		{
			name:      "new epoch replaces the old contribution",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 1, Open("t1", "audio", 7)), Full("a1", 9, 0, wire.CountEntry{Tenant: "t1", Class: "audio", Open: 2})},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusApplied},
			wantOpen:  2,
			wantLast:  0,
			wantEpoch: 9,
		},
		{
			name:      "batch of a new epoch before its full state",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 1, Open("t1", "audio", 7)), Batch("a1", 9, 1, Open("t1", "audio", 1))},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusNeedFull},
			wantOpen:  7,
			wantLast:  1,
			wantEpoch: 5,
		},
		{
			name: "old epoch refused after a new one",
			msgs: []wire.Message{Full("a1", 9, 0), Batch("a1", 9, 1, Open("t1", "audio", 2)),
				Batch("a1", 5, 2, Open("t1", "audio", 1)), Full("a1", 5, 3)},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusOldEpoch, StatusOldEpoch},
			wantOpen:  2,
			wantLast:  1,
			wantEpoch: 9,
		},
		{
			name:      "more closes than opens never goes below zero",
			msgs:      []wire.Message{Full("a1", 5, 0), Batch("a1", 5, 1, Open("t1", "audio", 1)), Batch("a1", 5, 2, Closed("t1", "audio", 4))},
			want:      []ItemStatus{StatusApplied, StatusApplied, StatusApplied},
			wantOpen:  0,
			wantLast:  2,
			wantEpoch: 5,
		},
		{
			name:      "repeated full state of the same seq is idempotent",
			msgs:      []wire.Message{Full("a1", 5, 4, wire.CountEntry{Tenant: "t1", Class: "audio", Open: 3}), Full("a1", 5, 4, wire.CountEntry{Tenant: "t1", Class: "audio", Open: 3})},
			want:      []ItemStatus{StatusApplied, StatusApplied},
			wantOpen:  3,
			wantLast:  4,
			wantEpoch: 5,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			var got []ItemStatus
			for _, m := range tc.msgs { // one entry per message, as separate proposals
				got = append(got, h.Items(t0, "payg", m)[0].Status)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("statuses %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("statuses %v, want %v", got, tc.want)
				}
			}
			if open := h.Tenant("t1").Open[audio]; open != tc.wantOpen {
				t.Errorf("open audio = %d, want %d", open, tc.wantOpen)
			}
			h.F.Read(func(view View) {
				s := view.s
				rec := s.Agents["a1"]
				if tc.wantEpoch == 0 {
					if rec != nil {
						t.Errorf("agent record exists: %+v", rec)
					}
					return
				}
				if rec == nil || rec.LastSeq != tc.wantLast || rec.Epoch != tc.wantEpoch {
					t.Errorf("agent record %+v, want epoch %d last seq %d", rec, tc.wantEpoch, tc.wantLast)
				}
			})
		})
	}
}

func TestManyAgentsSumAndGroupedEntry(t *testing.T) {
	h := NewHarness(t)
	// Two agents' messages grouped in one entry, as the proposer does.
	res := h.Items(t0, "payg",
		Full("a1", 1, 0), Full("a2", 1, 0),
		Batch("a1", 1, 1, Open("t1", "video-hd", 4), Open("t2", "audio", 1)),
		Batch("a2", 1, 1, Open("t1", "video-hd", 6), Open("t1", "audio", 2)),
	)
	for i, r := range res {
		if r.Status != StatusApplied {
			t.Fatalf("item %d: status %d", i, r.Status)
		}
	}
	t1 := h.Tenant("t1")
	if got := t1.Open.Total(); got != 12 {
		t.Errorf("t1 total %d, want 12", got)
	}
	if got := t1.Open[ClassIndex("video-hd")]; got != 10 {
		t.Errorf("t1 video-hd %d, want 10", got)
	}
	if t1.Plan != "payg" {
		t.Errorf("t1 plan %q, want the default plan payg", t1.Plan)
	}
	// a2 starts over in a new epoch with nothing open: only a1's remain.
	h.Items(t0, "", Full("a2", 2, 0))
	if t1 := h.Tenant("t1"); t1.Open.Total() != 4 {
		got := t1.Open.Total()
		t.Errorf("after a2's new epoch t1 total %d, want 4", got)
	}
}

func TestUnknownTenantWithoutDefaultPlan(t *testing.T) {
	h := NewHarness(t)
	h.Items(t0, "", Full("a1", 1, 0), Batch("a1", 1, 1, Open("ghost", "audio", 2)))
	g := h.Tenant("ghost")
	if g.Plan != "" || g.Open.Total() != 2 {
		t.Fatalf("ghost tenant %+v: want counted on no plan", g)
	}
}

func TestUsageAndPeaks(t *testing.T) {
	h := NewHarness(t)
	h.Items(t0, "payg", Full("a1", 1, 0), Full("a2", 1, 0))
	// a1 holds 3 audio; a2 opens 5 and closes 4 within one interval: its
	// peak of 5 must reach PCU although it ends at 1.
	h.Items(t0, "", Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 3, Peak: 3, SessionMicros: 1_500_000}))
	b := Batch("a2", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 5, Closed: 4, Peak: 5, SessionMicros: 2_000_000, Refused: 2})
	b.Peaks = []wire.TenantPeak{{Tenant: "t1", Peak: 5}}
	h.Items(t0, "", b)
	u := h.Tenant("t1").Usage[plans.PeriodOf(t0).String()]
	if u == nil {
		t.Fatal("no usage for the period")
	}
	a := ClassIndex("audio")
	if u.Micros[a] != 3_500_000 {
		t.Errorf("micros %d, want 3500000", u.Micros[a])
	}
	if u.Refused[a] != 2 {
		t.Errorf("refused %d, want 2", u.Refused[a])
	}
	if u.PCUByClass[a] != 8 || u.PCU != 8 {
		t.Errorf("pcu by class %d, total %d: want 8 and 8 (3 on a1 + a2's peak of 5)", u.PCUByClass[a], u.PCU)
	}
}

func TestPeriodRollover(t *testing.T) {
	h := NewHarness(t)
	h.Items(t0, "payg", Full("a1", 1, 0), Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 2, Peak: 2, SessionMicros: 60_000_000}))
	next := t0.Add(2 * time.Minute) // 2026-12-01 00:01 UTC
	h.Items(next, "", Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 120_000_000, Peak: 2}))
	// An entry stamped earlier than the last one is booked at the last time:
	// entry time never goes backwards.
	h.Items(t0, "", Batch("a1", 1, 3, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 1_000_000, Peak: 2}))
	tn := h.Tenant("t1")
	a := ClassIndex("audio")
	nov, dec := tn.Usage["2026-11"], tn.Usage["2026-12"]
	if nov == nil || dec == nil {
		t.Fatalf("periods %v: want 2026-11 and 2026-12", tn.Usage)
	}
	if nov.Micros[a] != 60_000_000 || dec.Micros[a] != 121_000_000 {
		t.Errorf("november %d µs, december %d µs: want 60000000 and 121000000", nov.Micros[a], dec.Micros[a])
	}
	if dec.PCU != 2 {
		t.Errorf("december PCU %d, want 2 (sessions still open)", dec.PCU)
	}
	h.F.Read(func(view View) {
		s := view.s
		if s.Time != next.UnixNano() {
			t.Errorf("state time %d, want %d", s.Time, next.UnixNano())
		}
	})
}

func TestSetPlan(t *testing.T) {
	h := NewHarness(t)
	if res := h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "growth"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if p := h.Tenant("t1").Plan; p != "growth" {
		t.Fatalf("plan %q", p)
	}
	if res := h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t1", Plan: "nosuch"}); res.Err == nil {
		t.Fatal("unknown plan accepted")
	}
	if p := h.Tenant("t1").Plan; p != "growth" {
		t.Fatalf("plan changed to %q by a refused command", p)
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := NewHarness(t)
	h.Apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t9", Plan: "starter"})
	h.Items(t0, "payg", Full("a1", 3, 0), Batch("a1", 3, 1, Open("t1", "audio", 2), Open("t2", "ai", 1)))
	h.Items(t0.Add(time.Hour), "", Batch("a1", 3, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", Closed: 2, SessionMicros: 9e9}))

	snap, err := h.F.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink MemSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	// The restored state must equal the original...
	h.F.Read(func(view View) {
		a := view.s
		g.Read(func(view View) {
			b := view.s
			forgetShortcuts(a)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("restored state differs:\n%+v\n%+v", a, b)
			}
		})
	})
	// ...and go on applying exactly as the original does.
	h2 := &Harness{T: t, F: g, Index: h.Index}
	for _, x := range []*Harness{h, h2} {
		r := x.Items(t0.Add(2*time.Hour), "", Batch("a1", 3, 3, Open("t2", "ai", 4)), Batch("a1", 3, 3, Open("t2", "ai", 4)))
		if r[0].Status != StatusApplied || r[1].Status != StatusDuplicate {
			t.Fatalf("after restore: %+v", r)
		}
	}
	if a, b := h.Tenant("t2"), h2.Tenant("t2"); a.Open != b.Open || a.Open.Total() != 5 {
		t.Fatalf("t2 open %v vs restored %v, want 5 total", a.Open, b.Open)
	}
	if h2.Tenant("t9").Plan != "starter" {
		t.Fatal("plan lost in snapshot")
	}
}

func TestRestoreRefusesGarbage(t *testing.T) {
	g := NewFSM(plans.Defaults())
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte{0x93, 0x01}))); err == nil {
		t.Fatal("garbage snapshot restored")
	}
}

func TestUnknownLogVersionStops(t *testing.T) {
	f := NewFSM(plans.Defaults())
	defer func() {
		if recover() == nil {
			t.Fatal("an entry of a newer format was applied")
		}
	}()
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{logVersion + 1, 1, 0x80}})
}

func TestExpireAndForgetAgents(t *testing.T) {
	h := NewHarness(t)
	audio := ClassIndex("audio")
	h.Items(t0, "payg", Full("a1", 5, 0), Full("a2", 5, 0),
		Batch("a1", 5, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 4, Peak: 4, SessionMicros: 1_000_000}),
		Batch("a2", 5, 1, Open("t1", "audio", 2)))
	agents := func(cmd CmdKind, refs ...AgentRef) {
		t.Helper()
		if res := h.Apply(cmd, &AgentsCmd{Time: t0.UnixNano(), Agents: refs}); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	// An expiry for an epoch the agent no longer has does nothing.
	agents(CmdExpire, AgentRef{ID: "a1", Epoch: 4})
	if got := h.Tenant("t1").Open[audio]; got != 6 {
		t.Fatalf("stale expiry changed the count to %d", got)
	}
	agents(CmdExpire, AgentRef{ID: "a1", Epoch: 5})
	tn := h.Tenant("t1")
	if tn.Open[audio] != 2 {
		t.Fatalf("after expiring a1: %d open, want a2's 2", tn.Open[audio])
	}
	if tn.Usage[plans.PeriodOf(t0).String()].Micros[audio] != 1_000_000 {
		t.Fatal("expiry changed usage")
	}
	// The expired agent's next batch asks for a full state, with its last seq.
	r := h.Items(t0, "", Batch("a1", 5, 2, Open("t1", "audio", 1)))
	if r[0].Status != StatusNeedFull || r[0].LastSeq != 1 {
		t.Fatalf("batch of an expired agent: %+v, want need-full with last seq 1", r[0])
	}
	// Its full state replaces counts and adds the usage of what it resends.
	fs := Full("a1", 5, 2, wire.CountEntry{Tenant: "t1", Class: "audio", Open: 5})
	fs.Usage = []wire.DeltaEntry{{Tenant: "t1", Class: "audio", SessionMicros: 500_000, Peak: 5}}
	if r := h.Items(t0, "", fs); r[0].Status != StatusApplied {
		t.Fatalf("full state after expiry: %+v", r[0])
	}
	tn = h.Tenant("t1")
	if tn.Open[audio] != 7 || tn.Usage[plans.PeriodOf(t0).String()].Micros[audio] != 1_500_000 {
		t.Fatalf("after resync: %d open (want 7), %d µs (want 1500000)", tn.Open[audio], tn.Usage[plans.PeriodOf(t0).String()].Micros[audio])
	}
	// Forget drops only expired agents.
	agents(CmdForget, AgentRef{ID: "a1", Epoch: 5}, AgentRef{ID: "a2", Epoch: 5})
	h.F.Read(func(view View) {
		s := view.s
		if s.Agents["a1"] == nil || s.Agents["a2"] == nil {
			t.Fatal("forgot an agent that was not expired")
		}
	})
	agents(CmdExpire, AgentRef{ID: "a2", Epoch: 5})
	agents(CmdForget, AgentRef{ID: "a2", Epoch: 5})
	h.F.Read(func(view View) {
		s := view.s
		if s.Agents["a2"] != nil {
			t.Fatal("expired agent not forgotten")
		}
	})
	if got := h.Tenant("t1").Open[audio]; got != 5 {
		t.Fatalf("after a2 expired and was forgotten: %d open, want a1's 5", got)
	}
}

// forgetShortcuts drops what Apply keeps beside the state to go faster (the
// decoder, the tenants' current usage), which a restored state has not.
func forgetShortcuts(s *State) {
	s.dec = wire.Decoder{}
	for _, t := range s.Tenants {
		t.cur, t.curPeriod = nil, ""
	}
}
