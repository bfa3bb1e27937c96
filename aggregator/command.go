package aggregator

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// A log entry is one byte of format version, one byte of command kind and a
// msgpack body. The version changes when an existing command's body changes
// incompatibly; a server refuses (panics on) an entry of a newer version
// rather than misapplying it, so upgrade followers before the leader.
const logVersion = 1

// cmdKind identifies a log command. Values are stable: add new kinds to the
// end of this list, never renumber or reuse one.
type cmdKind uint8

const (
	cmdAgentItems cmdKind = 1 // agent batches and full states, grouped by the leader
	cmdSetPlan    cmdKind = 2 // an operator put a tenant on a plan
	cmdExpire     cmdKind = 3 // the leader found agents silent past the grace period
	cmdForget     cmdKind = 4 // the leader drops agents gone past the forget period
	// Add new kinds above this line.
)

// itemKind tells which wire message an agentItem carries.
type itemKind uint8

const (
	itemDelta itemKind = 1 // body is a wire DeltaBatch
	itemFull  itemKind = 2 // body is a wire FullState (all frames merged)
)

// agentItem is one agent message inside a cmdAgentItems entry. Body is the
// wire encoding of the message, so the log stores what the agent sent.
type agentItem struct {
	Kind   itemKind `msgpack:"k"`
	Region string   `msgpack:"r,omitempty"`
	Body   []byte   `msgpack:"b"`
}

// agentItemsCmd groups many agents' messages into one log entry.
type agentItemsCmd struct {
	// Time is the leader's clock when it proposed the entry, unix ns.
	Time int64 `msgpack:"t"`
	// DefaultPlan, when set, puts a tenant seen for the first time on it.
	DefaultPlan string      `msgpack:"dp,omitempty"`
	Items       []agentItem `msgpack:"i"`
}

// setPlanCmd puts a tenant on a plan, creating the tenant if absent.
type setPlanCmd struct {
	Time     int64  `msgpack:"t"`
	Tenant   string `msgpack:"tn"`
	Plan     string `msgpack:"p"`
	Operator string `msgpack:"o,omitempty"`
}

// agentRef names one epoch of one agent.
type agentRef struct {
	ID    string `msgpack:"a"`
	Epoch uint64 `msgpack:"e"`
}

// agentsCmd expires or forgets agents. Each is acted on only while its
// record still holds that epoch, so a command that raced with the agent's
// return does nothing.
type agentsCmd struct {
	Time   int64      `msgpack:"t"`
	Agents []agentRef `msgpack:"g"`
}

func encodeCmd(kind cmdKind, body any) ([]byte, error) {
	b, err := msgpack.Marshal(body)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2, 2+len(b))
	out[0], out[1] = logVersion, byte(kind)
	return append(out, b...), nil
}

var errEntryVersion = errors.New("log entry of an unknown format version")

func decodeCmd(data []byte) (cmdKind, []byte, error) {
	if len(data) < 2 {
		return 0, nil, errors.New("log entry too short")
	}
	if data[0] != logVersion {
		return 0, nil, fmt.Errorf("%w: %d (this server knows %d)", errEntryVersion, data[0], logVersion)
	}
	return cmdKind(data[1]), data[2:], nil
}
