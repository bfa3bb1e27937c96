package fsm

import (
	"bytes"
	"time"

	"github.com/hashicorp/raft"
	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// This file holds what tests of this package and of the servers around it
// drive the state machine with, in the way of hashicorp/raft's testing.go:
// a harness that applies commands as Raft would, and agent messages. It is
// not used by the server itself.

// TB is the part of testing.TB the harness uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Harness applies commands to an FSM the way Raft would, with
// increasing indexes.
type Harness struct {
	T     TB
	F     *FSM
	Index uint64
}

func NewHarness(t TB) *Harness {
	return &Harness{T: t, F: NewFSM(plans.Defaults())}
}

func (h *Harness) Apply(kind CmdKind, body any) *ApplyResult {
	h.T.Helper()
	data, err := EncodeCmd(kind, body)
	if err != nil {
		h.T.Fatal(err)
	}
	h.Index++
	res, _ := h.F.Apply(&raft.Log{Index: h.Index, Type: raft.LogCommand, Data: data}).(*ApplyResult)
	if res == nil {
		h.T.Fatal("Apply returned no result")
	}
	return res
}

func (h *Harness) Items(at time.Time, defaultPlan string, msgs ...wire.Message) []ItemResult {
	h.T.Helper()
	res := h.Apply(CmdAgentItems, ItemsCmd(at.UnixNano(), defaultPlan, msgs...))
	if res.Err != nil {
		h.T.Fatal(res.Err)
	}
	return res.Items
}

func (h *Harness) Tenant(name string) Tenant {
	var out Tenant
	h.F.Read(func(v View) {
		if t := v.Tenant(name); t != nil {
			out = *t
		}
	})
	return out
}

func Batch(agent string, epoch, seq uint64, entries ...wire.DeltaEntry) *wire.DeltaBatch {
	return &wire.DeltaBatch{AgentID: agent, Epoch: epoch, Seq: seq, Entries: entries}
}

func Open(tenant, class string, n uint64) wire.DeltaEntry {
	return wire.DeltaEntry{Tenant: tenant, Class: class, Opened: n, Peak: n}
}

func Closed(tenant, class string, n uint64) wire.DeltaEntry {
	return wire.DeltaEntry{Tenant: tenant, Class: class, Closed: n}
}

func Full(agent string, epoch, seq uint64, counts ...wire.CountEntry) *wire.FullState {
	return &wire.FullState{AgentID: agent, Epoch: epoch, Seq: seq, Counts: counts}
}

type MemSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *MemSink) ID() string { return "mem" }

func (m *MemSink) Cancel() error { m.cancelled = true; return nil }

func (m *MemSink) Close() error { return nil }

func (h *Harness) OK(kind CmdKind, body any) {
	h.T.Helper()
	if res := h.Apply(kind, body); res.Err != nil {
		h.T.Fatal(res.Err)
	}
}

func (h *Harness) SetPlan(at time.Time, tenant, plan string) {
	h.T.Helper()
	if res := h.Apply(CmdSetPlan, &SetPlanCmd{Time: at.UnixNano(), Tenant: tenant, Plan: plan}); res.Err != nil {
		h.T.Fatal(res.Err)
	}
}

// ItemsCmd groups agent messages into one log command, as the proposer does.
func ItemsCmd(at int64, defaultPlan string, msgs ...wire.Message) *AgentItemsCmd {
	cmd := &AgentItemsCmd{Time: at, DefaultPlan: defaultPlan}
	for _, m := range msgs {
		kind := ItemDelta
		switch m.(type) {
		case *wire.FullState:
			kind = ItemFull
		case *wire.GrantAsk:
			kind = ItemGrant
		}
		cmd.Items = append(cmd.Items, AgentItem{Kind: kind, Region: "eu", Body: wire.Append(nil, m)})
	}
	return cmd
}

// TestingEdit runs fn on the state under the write lock, for tests and
// benchmarks that build a state no sequence of commands would build quickly.
// The server never calls it: the state changes only by Apply and Restore.
func (f *FSM) TestingEdit(fn func(s *State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.s)
}

// TestingScan calls fn with the index rows of st, a state built by a test
// outside any FSM, as scanTenants would.
func TestingScan(v View, fn func(rows []TenantRow)) {
	st := v.s
	var x tenantIndex
	x.scan(st, fn)
}
