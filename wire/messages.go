// Package wire defines the protocol spoken between a headroom agent and the
// aggregator cluster: the message types, their msgpack encoding and the
// length-prefixed framing. See PROTOCOL.md for the byte-level description.
//
// Encoding is deterministic: the same message always encodes to the same
// bytes (no Go maps are encoded), so golden vectors can be compared byte for
// byte. Decoding checks every declared length or count against the bytes that
// remain in the frame before anything is allocated, so a hostile peer cannot
// make a decoder allocate more than a small multiple of the frame it sent.
// Decoders skip map keys they do not know, so later versions can add fields.
//
// This package imports nothing of headroom's.
package wire

import "strconv"

// ProtocolVersion is the version an agent announces in Hello.
//
// History:
//
//	1: first version. Later additions within it (decoders skip what they do
//	   not know): GrantAsk, Grant, Recall; TenantInfo.ClassLimits;
//	   DeltaEntry.ClosedMinutes; Welcome.Classes (the device class).
const ProtocolVersion = 1

// DefaultMaxFrame is the default limit on one frame's body, in bytes.
const DefaultMaxFrame = 4 << 20

// Type identifies a message on the wire. Values are stable: add new types to
// the end of this list, never renumber or reuse one.
type Type uint8

const (
	TypeHello       Type = 1
	TypeWelcome     Type = 2
	TypeDeltaBatch  Type = 3
	TypeFullState   Type = 4
	TypeAck         Type = 5
	TypeTenantState Type = 6
	TypeRedirect    Type = 7
	TypeError       Type = 8
	TypePing        Type = 9
	TypePong        Type = 10
	TypeGrantAsk    Type = 11
	TypeGrant       Type = 12
	TypeRecall      Type = 13
	// Add new types above this line.
)

var typeNames = [...]string{
	TypeHello:       "hello",
	TypeWelcome:     "welcome",
	TypeDeltaBatch:  "delta-batch",
	TypeFullState:   "full-state",
	TypeAck:         "ack",
	TypeTenantState: "tenant-state",
	TypeRedirect:    "redirect",
	TypeError:       "error",
	TypePing:        "ping",
	TypePong:        "pong",
	TypeGrantAsk:    "grant-ask",
	TypeGrant:       "grant",
	TypeRecall:      "recall",
}

// String returns the type's lowercase dashed name, such as "delta-batch",
// or "type(N)" for a number this version does not know.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// Message is implemented by every message type of this package.
type Message interface {
	Type() Type
}

// ErrorCode is a stable number carried in an Error message. Add new codes to
// the end of this list, never renumber or reuse one.
type ErrorCode uint16

const (
	CodeInternal        ErrorCode = 1 // server-side failure; retry later
	CodeBadMessage      ErrorCode = 2 // the message could not be decoded or is invalid
	CodeVersion         ErrorCode = 3 // protocol version not supported
	CodeNotLeader       ErrorCode = 4 // this server cannot take writes now; reconnect (see Redirect)
	CodeSeqGap          ErrorCode = 5 // a batch skipped a sequence number; resend from LastSeq+1
	CodeNeedFullState   ErrorCode = 6 // the server holds nothing for this epoch: send FullState first
	CodeOldEpoch        ErrorCode = 7 // the epoch is older than one the server has seen: refused
	CodeUnauthenticated ErrorCode = 8 // missing or bad token
	CodeTooLarge        ErrorCode = 9 // frame or message over a limit
	// Add new codes above this line.
)

var codeNames = [...]string{
	CodeInternal:        "internal",
	CodeBadMessage:      "bad-message",
	CodeVersion:         "version",
	CodeNotLeader:       "not-leader",
	CodeSeqGap:          "seq-gap",
	CodeNeedFullState:   "need-full-state",
	CodeOldEpoch:        "old-epoch",
	CodeUnauthenticated: "unauthenticated",
	CodeTooLarge:        "too-large",
}

// String returns the code's lowercase dashed name, such as "seq-gap", or
// "code(N)" for a number this version does not know.
func (c ErrorCode) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// Label is one key=value label of an agent (for example region=eu-west).
type Label struct {
	Key   string
	Value string
}

// Hello is the first message an agent sends on a new stream.
type Hello struct {
	AgentID string
	// Epoch changes whenever the agent loses its memory (a new data
	// directory). Epochs of one agent only ever grow.
	Epoch   uint64
	Version uint32
	// Labels sorted by key; region is the label "region".
	Labels []Label
	Token  string
}

// Welcome answers Hello.
type Welcome struct {
	ServerID string
	Version  uint32
	// LastSeq is the highest sequence number of this agent and epoch that the
	// cluster has applied (0: none).
	LastSeq uint64
	// NeedFullState: the cluster holds no counts for this agent and epoch
	// (a new agent, a new epoch, or an expired contribution): the agent must
	// send FullState before any DeltaBatch.
	NeedFullState bool
	// Servers lists the wire addresses of the servers the agent may use.
	Servers []string
	// Classes lists the session classes the server counts, in its class
	// order. A server of before this field sends none: it counts the six
	// classes of LegacyClasses, and silently drops entries of any other, so
	// an agent must not admit sessions of a class not listed.
	Classes []string
}

// LegacyClasses are the classes every server counts, those of a Welcome
// without Classes.
var LegacyClasses = []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}

// DeltaEntry is what changed for one tenant and class during a flush
// interval on one agent.
type DeltaEntry struct {
	Tenant string
	Class  string
	Opened uint64
	Closed uint64
	// SessionMicros is the session-time accrued during the interval, in
	// microseconds: the integral of the open count over the interval.
	SessionMicros uint64
	// Peak is the highest open count of this tenant and class on this agent
	// during the interval (at least the count at its start and at its end).
	Peak uint64
	// Refused is the number of admissions refused during the interval.
	Refused uint64
	// ClosedMinutes is, over the sessions that ended during the interval,
	// the sum of each one's duration rounded up to a whole minute (what a
	// plan that rounds each session bills).
	ClosedMinutes uint64
	// Reconciled is how many of Opened were opened without an admission:
	// by a reconcile with the media server's list (the sessions existed
	// already). The rest of Opened were admitted.
	Reconciled uint64
}

// TenantPeak is the highest open count of a tenant, all classes together, on
// one agent during an interval.
type TenantPeak struct {
	Tenant string
	Peak   uint64
}

// DeltaBatch carries an agent's changes since its previous batch. A batch is
// applied once per (AgentID, Epoch, Seq); Seq starts at 1 in each epoch and
// grows by one per batch.
type DeltaBatch struct {
	AgentID string
	Epoch   uint64
	Seq     uint64
	// AgentTime is the agent's wall clock when the batch was cut, in unix
	// milliseconds. The aggregator books the batch's usage to the billing
	// period of this time while that period is open, else to the open one
	// (counted late); see PROTOCOL.md.
	AgentTime int64
	Entries   []DeltaEntry
	Peaks     []TenantPeak
	// Users are the users the agent saw since its previous batch, per
	// tenant and UTC day (see UserSet).
	Users []UserSet
}

// UserSet is, for one tenant and one UTC day, users an agent saw active
// (sessions opened, or open as the day began): the 64-bit hashes of their
// ids (XXH64, seed 0, of the user id's bytes), each once. Merging them into
// a tenant's distinct-user counts is idempotent: a set sent twice changes
// nothing.
type UserSet struct {
	Tenant string
	// Day is the UTC day, in days since 1970-01-01.
	Day    uint32
	Hashes []uint64
}

// CountEntry is an absolute open count for one tenant and class.
type CountEntry struct {
	Tenant string
	Class  string
	Open   uint64
}

// FullState replaces an agent's whole contribution of open counts. It is
// sent in one or more frames; all frames of one FullState carry the same
// AgentID, Epoch and Seq, and all but the last have More set. Usage carries
// session time, peaks and refusals of batches the cluster has not applied
// (usage is added, never replaced); Opened and Closed of those entries are
// ignored. After it is applied the agent's last applied sequence is Seq.
type FullState struct {
	AgentID string
	Epoch   uint64
	Seq     uint64
	More    bool
	Counts  []CountEntry
	Usage   []DeltaEntry
	Peaks   []TenantPeak
	// Users are the users of the batches the cluster has not applied
	// (merged, as in DeltaBatch).
	Users []UserSet
}

// Ack acknowledges every batch of the stream's agent and epoch up to Seq.
type Ack struct {
	Seq uint64
	// Index is the Raft log index at which Seq was applied (or an index at
	// which it was already known to be applied).
	Index uint64
}

// TenantInfo is what an agent needs to admit sessions of one tenant.
type TenantInfo struct {
	Tenant string
	Plan   string
	// Ceiling is the most concurrent sessions the plan admits; 0 with mode
	// "meter" means no ceiling.
	Ceiling uint64
	// Mode is "strict", "soft" or "meter".
	Mode string
	// BurstPct is how far above the ceiling a soft plan admits, in percent.
	BurstPct uint32
	// Concurrency is the tenant's global open count, all agents together.
	Concurrency uint64
	Suspended   bool
	// ClassLimits lists the plan's per-class ceilings, in class order.
	ClassLimits []ClassLimit
	// Over (strict plans) is how far the sessions and shares booked against
	// the tenant's total ceiling stand above it (a lowered ceiling, an
	// agent restarted or back from a lapsed lease with sessions open): while
	// it is above 0 no agent admits into the pool, and the share of every
	// session that ends is handed back.
	Over uint64
}

// ClassLimit is a plan's ceiling on one class of sessions, with the class's
// global open count.
type ClassLimit struct {
	Class       string
	Ceiling     uint64
	Concurrency uint64
	// Over is TenantInfo.Over for the class's own ceiling.
	Over uint64
}

// TenantState pushes tenants' plans and global figures to an agent. With Full
// set, the frames up to and including the first one without More replace
// everything the agent knew; without Full each frame updates the tenants it
// names.
type TenantState struct {
	Full    bool
	More    bool
	Tenants []TenantInfo
}

// Redirect tells an agent to use another server.
type Redirect struct {
	Leader  string
	Servers []string
}

// Error reports a problem. After an Error the server may close the stream.
type Error struct {
	Code    ErrorCode
	Message string
	// LastSeq accompanies CodeSeqGap and CodeNeedFullState: the highest
	// sequence number the cluster applied for this agent and epoch.
	LastSeq uint64
}

// GrantPool names one pool of a strict tenant's ceiling: the tenant's total
// (Class empty) or one class with a ceiling of its own.
type GrantPool struct {
	Tenant string
	Class  string
}

// GrantWant is the share of one pool an agent asks to hold.
type GrantWant struct {
	Tenant string
	Class  string
	// Want is the share the agent wants to hold in all: more than it holds
	// asks for a top-up, less hands the difference back (the agent stopped
	// using it before it sent the ask).
	Want uint64
	// Hold is the share the agent goes on using until the answer comes:
	// what it holds, after lowering it to Want if Want is less. The leader
	// never grants less than Hold (nor more than it had granted, for that
	// part); anything above Hold comes only out of room under the ceiling.
	Hold uint64
	// Open is the number of sessions of the pool the agent has open (its
	// restored and reconciled sessions included, covered by a share or not).
	// The leader books at least that much for the agent, even beyond room
	// under the ceiling: the sessions exist.
	Open uint64
}

// GrantAsk asks the leader for shares of strict tenants' ceilings, and
// renews the lease of every share it names. An agent has at most one
// GrantAsk unanswered; it counts the lease from when it sent the ask.
type GrantAsk struct {
	AgentID string
	ReqID   uint64
	Wants   []GrantWant
}

// GrantShare is the share of a pool an agent holds after a GrantAsk.
type GrantShare struct {
	Tenant string
	Class  string
	// Grant is the share the agent now holds: it may have this many
	// sessions of the pool open.
	Grant uint64
	// Free is what of the pool's ceiling no live share holds.
	Free uint64
	// Ceiling is the pool's ceiling the leader granted under.
	Ceiling uint64
	// Over is how far what the leader books against the pool (every
	// agent's live share, or its open sessions when more) stands above the
	// ceiling; 0 when it fits. While it is above 0 the agent admits nothing
	// into the pool and hands back the share of every session that ends.
	Over uint64
}

// Grant answers a GrantAsk once the shares are committed. The shares hold
// for LeaseMillis from the moment the agent sent its ask.
type Grant struct {
	ReqID       uint64
	LeaseMillis uint64
	Shares      []GrantShare
}

// Recall asks an agent to hand back the unused part of its shares of the
// pools named (another agent is waiting for them), with a GrantAsk.
type Recall struct {
	Pools []GrantPool
}

// Ping asks the peer for a Pong with the same Nonce.
type Ping struct{ Nonce uint64 }

// Pong answers Ping.
type Pong struct{ Nonce uint64 }

func (*Hello) Type() Type       { return TypeHello }
func (*Welcome) Type() Type     { return TypeWelcome }
func (*DeltaBatch) Type() Type  { return TypeDeltaBatch }
func (*FullState) Type() Type   { return TypeFullState }
func (*Ack) Type() Type         { return TypeAck }
func (*TenantState) Type() Type { return TypeTenantState }
func (*Redirect) Type() Type    { return TypeRedirect }
func (*Error) Type() Type       { return TypeError }
func (*Ping) Type() Type        { return TypePing }
func (*Pong) Type() Type        { return TypePong }
func (*GrantAsk) Type() Type    { return TypeGrantAsk }
func (*Grant) Type() Type       { return TypeGrant }
func (*Recall) Type() Type      { return TypeRecall }

func (e *Error) Error() string { return "wire: " + e.Code.String() + ": " + e.Message }
