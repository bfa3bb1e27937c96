package fsm

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
)

// A log entry is one byte of format version, one byte of command kind and a
// msgpack body. The version changes when an existing command's body changes
// incompatibly; a server refuses (panics on) an entry of a newer version
// rather than misapplying it, so upgrade followers before the leader.
const logVersion = 1

// CmdKind identifies a log command. Values are stable: add new kinds to the
// end of this list, never renumber or reuse one.
type CmdKind uint8

const (
	CmdAgentItems CmdKind = 1 // agent batches and full states, grouped by the leader
	CmdSetPlan    CmdKind = 2 // an operator put a tenant on a plan
	CmdExpire     CmdKind = 3 // the leader found agents silent past the grace period
	CmdForget     CmdKind = 4 // the leader drops agents gone past the forget period
	CmdApplyDue   CmdKind = 5 // the leader found scheduled plan changes due
	CmdCancel     CmdKind = 6 // an operator cancelled a tenant's scheduled change
	CmdTenantOp   CmdKind = 7 // an operator suspended, resumed or deleted a tenant
	CmdPutPlan    CmdKind = 8 // an operator created or updated a plan
	CmdDeletePlan CmdKind = 9 // an operator deleted a plan
	// The leader set the grace for late batches (metering.go).
	CmdUsageGrace  CmdKind = 10
	CmdTokenCreate CmdKind = 11 // an operator (or the bootstrap) created an ACL token
	CmdTokenRevoke CmdKind = 12 // an operator revoked an ACL token
	// The leader cut a window of the usage export, and recorded what the
	// receiver acknowledged of it (export.go). A server older than these
	// kinds panics on them: upgrade every server before any runs with
	// --export-url.
	CmdExportCut CmdKind = 13
	CmdExportAck CmdKind = 14
	// Add new kinds above this line.
)

// Command is the body of one log entry kind. when is the leader's stamp;
// apply changes the state and says what came of it.
type Command interface {
	when() int64
	apply(a *applier) *ApplyResult
}

// newCommand returns an empty command of the kind, or nil for one this
// version does not know.
func newCommand(kind CmdKind) Command {
	switch kind {
	case CmdAgentItems:
		return &AgentItemsCmd{}
	case CmdSetPlan:
		return &SetPlanCmd{}
	case CmdExpire:
		return &AgentsCmd{}
	case CmdForget:
		return &AgentsCmd{Forget: true}
	case CmdApplyDue:
		return &ApplyDueCmd{}
	case CmdCancel:
		return &CancelCmd{}
	case CmdTenantOp:
		return &TenantOpCmd{}
	case CmdPutPlan:
		return &PutPlanCmd{}
	case CmdDeletePlan:
		return &DeletePlanCmd{}
	case CmdUsageGrace:
		return &UsageGraceCmd{}
	case CmdTokenCreate:
		return &TokenCreateCmd{}
	case CmdTokenRevoke:
		return &TokenRevokeCmd{}
	case CmdExportCut:
		return &ExportCutCmd{}
	case CmdExportAck:
		return &ExportAckCmd{}
	}
	return nil
}

// ItemKind tells which wire message an agentItem carries.
type ItemKind uint8

const (
	ItemDelta ItemKind = 1 // body is a wire DeltaBatch
	ItemFull  ItemKind = 2 // body is a wire FullState (all frames merged)
	ItemGrant ItemKind = 3 // body is a wire GrantAsk
)

// AgentItem is one agent message inside a cmdAgentItems entry. Body is the
// wire encoding of the message, so the log stores what the agent sent.
type AgentItem struct {
	Kind   ItemKind `msgpack:"k"`
	Region string   `msgpack:"r,omitempty"`
	Body   []byte   `msgpack:"b"`
}

// AgentItemsCmd groups many agents' messages into one log entry.
type AgentItemsCmd struct {
	// Time is the leader's clock when it proposed the entry, unix ns.
	Time int64 `msgpack:"t"`
	// DefaultPlan, when set, puts a tenant seen for the first time on it.
	DefaultPlan string      `msgpack:"dp,omitempty"`
	Items       []AgentItem `msgpack:"i"`
	// Lease and Margin (ns) govern the grants of itemGrant items: a share
	// lasts Lease from the entry's time and is reclaimed Margin after that.
	Lease  int64 `msgpack:"l,omitempty"`
	Margin int64 `msgpack:"m,omitempty"`
}

// SetPlanCmd puts a tenant on a plan, creating the tenant if absent: at
// once when At is not after the entry's time, else at At (a scheduled
// change, which replaces any change still pending for the tenant).
type SetPlanCmd struct {
	Time     int64  `msgpack:"t"`
	Tenant   string `msgpack:"tn"`
	Plan     string `msgpack:"p"`
	Operator string `msgpack:"o,omitempty"`
	At       int64  `msgpack:"at,omitempty"`
}

// AgentRef names one epoch of one agent.
type AgentRef struct {
	ID    string `msgpack:"a"`
	Epoch uint64 `msgpack:"e"`
}

// AgentsCmd expires or forgets agents. Each is acted on only while its
// record still holds that epoch, so a command that raced with the agent's
// return does nothing.
type AgentsCmd struct {
	Time   int64      `msgpack:"t"`
	Agents []AgentRef `msgpack:"g"`
	Forget bool       `msgpack:"-"` // set by the kind: cmdForget
}

// ApplyDueCmd applies every scheduled change due at its time.
type ApplyDueCmd struct {
	Time int64 `msgpack:"t"`
}

// CancelCmd cancels a tenant's scheduled change (ID 0: whatever is pending).
type CancelCmd struct {
	Time     int64  `msgpack:"t"`
	Tenant   string `msgpack:"tn"`
	ID       uint64 `msgpack:"id,omitempty"`
	Operator string `msgpack:"o,omitempty"`
}

// TenantOpCmd suspends, resumes or deletes a tenant.
type TenantOpCmd struct {
	Time     int64  `msgpack:"t"`
	Tenant   string `msgpack:"tn"`
	Op       string `msgpack:"op"` // "suspend", "resume", "delete"
	Operator string `msgpack:"o,omitempty"`
}

// PutPlanCmd creates (Create) or updates a plan of the catalogue.
type PutPlanCmd struct {
	Time     int64      `msgpack:"t"`
	Plan     plans.Plan `msgpack:"p"`
	Create   bool       `msgpack:"c,omitempty"`
	Operator string     `msgpack:"o,omitempty"`
}

// DeletePlanCmd deletes a plan no tenant uses or is scheduled to use.
type DeletePlanCmd struct {
	Time     int64  `msgpack:"t"`
	Name     string `msgpack:"n"`
	Operator string `msgpack:"o,omitempty"`
}

func (c *AgentItemsCmd) when() int64 { return c.Time }
func (c *SetPlanCmd) when() int64    { return c.Time }
func (c *AgentsCmd) when() int64     { return c.Time }
func (c *ApplyDueCmd) when() int64   { return c.Time }
func (c *CancelCmd) when() int64     { return c.Time }
func (c *TenantOpCmd) when() int64   { return c.Time }
func (c *PutPlanCmd) when() int64    { return c.Time }
func (c *DeletePlanCmd) when() int64 { return c.Time }

func (c *AgentItemsCmd) apply(a *applier) *ApplyResult {
	a.agentEntry = true
	if c.Lease > 0 {
		a.s.GrantLease, a.s.GrantMargin = c.Lease, max(c.Margin, 0)
	}
	res := &ApplyResult{Items: make([]ItemResult, len(c.Items))}
	for i, it := range c.Items {
		res.Items[i] = a.applyItem(it, c)
	}
	return res
}

func (c *AgentsCmd) apply(a *applier) *ApplyResult {
	if c.Forget {
		a.applyForget(c.Agents)
	} else {
		a.applyExpire(c.Agents)
	}
	return &ApplyResult{}
}

func EncodeCmd(kind CmdKind, body any) ([]byte, error) {
	b, err := msgpack.Marshal(body)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2, 2+len(b))
	out[0], out[1] = logVersion, byte(kind)
	return append(out, b...), nil
}

var errEntryVersion = errors.New("log entry of an unknown format version")

func decodeCmd(data []byte) (CmdKind, []byte, error) {
	if len(data) < 2 {
		return 0, nil, errors.New("log entry too short")
	}
	if data[0] != logVersion {
		return 0, nil, fmt.Errorf("%w: %d (this server knows %d)", errEntryVersion, data[0], logVersion)
	}
	return CmdKind(data[1]), data[2:], nil
}
