package aggregator

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// snapshotVersion is the format version of a snapshot. History:
//
//	1: first version.
const snapshotVersion = 1

// FSM is the Raft state machine. Apply is deterministic: all time comes from
// the entry. Reads take the read lock and may run while Raft applies.
type FSM struct {
	log hclog.Logger

	mu sync.RWMutex
	s  *State

	// onChange, if set, is called after each entry with the tenants it
	// changed. It is called with no lock held and must not block.
	onChange func(tenants []string)
	// onAudit, if set, is called after each entry that appended to the
	// audit log, with the entries it appended (the callee's to keep). It is
	// called with no lock held, after onChange, and must not block.
	onAudit func(entries []AuditEntry)
	// observeApply, if set, is told how long each command took to apply
	// (for metrics only: the state never sees this clock).
	observeApply func(time.Duration)
	// index is the tenant list's compact copy of the tenants' figures,
	// told of every change under the write lock (tenant_index.go).
	index tenantIndex
}

// NewFSM returns a state machine holding the given plan catalogue.
func NewFSM(catalogue []plans.Plan, log hclog.Logger) *FSM {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &FSM{log: log, s: NewState(catalogue)}
}

// applyResult is what Apply returns for a command, read by the proposer.
type applyResult struct {
	Items     []itemResult // cmdAgentItems: one per item, in order
	Scheduled uint64       // cmdSetPlan: the id of the change scheduled
	Err       error        // a refused command
}

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	kind, body, err := decodeCmd(l.Data)
	if errors.Is(err, errEntryVersion) {
		// Applying a command this build does not understand would fork
		// this replica from the others: stop rather than diverge.
		panic(fmt.Sprintf("aggregator: raft index %d: %v: upgrade this server", l.Index, err))
	}
	if err != nil {
		f.log.Error("skipping malformed log entry", "index", l.Index, "error", err)
		return &applyResult{Err: err}
	}
	c := newCommand(kind)
	if c == nil {
		// A kind this version does not know, in a format version it does:
		// a newer leader added it. Skipping it would diverge as surely.
		panic(fmt.Sprintf("aggregator: raft index %d: unknown command kind %d: upgrade this server", l.Index, kind))
	}
	var res *applyResult
	var changed []string
	var audited []AuditEntry
	start := time.Now()
	f.mu.Lock()
	if err := msgpack.Unmarshal(body, c); err != nil {
		res = &applyResult{Err: err}
	} else {
		a := f.s.newApplier(l.Index, c.when())
		res = c.apply(a)
		a.settle()
		changed, audited = a.changed, a.audited
		f.index.note(changed)
	}
	f.mu.Unlock()
	if f.observeApply != nil {
		f.observeApply(time.Since(start))
	}
	if res.Err != nil {
		f.log.Debug("command refused", "index", l.Index, "error", res.Err)
	}
	if len(changed) > 0 && f.onChange != nil {
		f.onChange(changed)
	}
	if len(audited) > 0 && f.onAudit != nil {
		f.onAudit(audited)
	}
	return res
}

func (a *applier) applyItem(it agentItem, c *agentItemsCmd) itemResult {
	defaultPlan := c.DefaultPlan
	m, err := a.s.decoder().Decode(it.Body)
	if err != nil {
		return itemResult{Status: statusInvalid}
	}
	switch it.Kind {
	case itemDelta:
		if b, ok := m.(*wire.DeltaBatch); ok {
			return a.applyDelta(b, it.Region, defaultPlan)
		}
	case itemFull:
		if fs, ok := m.(*wire.FullState); ok {
			return a.applyFull(fs, it.Region, defaultPlan)
		}
	case itemGrant:
		if g, ok := m.(*wire.GrantAsk); ok {
			return a.applyGrantAsk(g, c.Lease, c.Margin)
		}
	}
	return itemResult{Status: statusInvalid}
}

// snapshotFile is the on-disk form of a snapshot.
type snapshotFile struct {
	Version int    `msgpack:"v"`
	State   *State `msgpack:"s"`
}

// Snapshot encodes the state under the read lock. Encoding is a single pass
// over memory (tens of milliseconds for 100,000 tenants), during which Apply
// waits; Persist then only writes the bytes.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	b, err := msgpack.Marshal(&snapshotFile{Version: snapshotVersion, State: f.s})
	f.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var sf snapshotFile
	if err := msgpack.NewDecoder(rc).Decode(&sf); err != nil {
		return fmt.Errorf("aggregator: decode snapshot: %w", err)
	}
	if sf.Version != snapshotVersion || sf.State == nil {
		return fmt.Errorf("aggregator: snapshot format version %d, this server reads %d", sf.Version, snapshotVersion)
	}
	s := sf.State
	if s.Plans == nil {
		s.Plans = map[string]plans.Plan{}
	}
	if s.Tenants == nil {
		s.Tenants = map[string]*Tenant{}
	}
	if s.Agents == nil {
		s.Agents = map[string]*AgentRec{}
	}
	if s.Scheduled == nil {
		s.Scheduled = map[string]*Scheduled{}
	}
	for _, t := range s.Tenants {
		if t.Usage == nil {
			t.Usage = map[string]*Usage{}
		}
	}
	for _, a := range s.Agents {
		if a.Counts == nil {
			a.Counts = map[string]*classCounts{}
		}
	}
	s.rebuildRegionOpen()
	s.rebuildCounted()
	s.rebuildExport()
	if len(s.Tokens) > 0 {
		s.tokenIndex() // built before the state is published to readers
	}
	f.mu.Lock()
	f.s = s
	f.mu.Unlock()
	if f.onChange != nil {
		all := make([]string, 0, len(s.Tenants))
		for n := range s.Tenants {
			all = append(all, n)
		}
		f.onChange(all)
	}
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}

// appliedIndex is the Raft index of the last command this state machine
// applied (or of the snapshot it restored).
func (f *FSM) appliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.Index
}

// read runs fn with the state under the read lock; fn must not keep
// references to the state after it returns.
func (f *FSM) read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.s)
}
