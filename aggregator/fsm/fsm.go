package fsm

import (
	"errors"
	"fmt"
	"io"
	"sync"

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
// the entry; it reads no clock, starts no goroutine and logs nothing itself
// (what it refuses it tells RefusedHook). Reads take the read lock and may
// run while Raft applies.
//
// The hooks are set before the FSM is handed to Raft and not changed after.
// Apply calls them on Raft's apply goroutine with no lock held; they must not
// block.
type FSM struct {
	mu sync.RWMutex
	s  *State

	// OnChange, if set, is called after each entry with the tenants it
	// changed.
	OnChange func(tenants []string)
	// OnAudit, if set, is called after each entry that appended to the
	// audit log, with the entries it appended (the callee's to keep), after
	// onChange.
	OnAudit func(entries []AuditEntry)
	// OnRefused, if set, is told of each command refused (malformed false)
	// and of each entry skipped because it could not be decoded (malformed
	// true): the server logs them.
	OnRefused func(index uint64, err error, malformed bool)
	// TimeApply, if set, is called before each command is applied and
	// returns what is called once it is (for metrics only: the clock is the
	// caller's; the state never sees it).
	TimeApply func() (done func())
	// index is the tenant list's compact copy of the tenants' figures,
	// told of every change under the write lock (tenant_index.go).
	index tenantIndex
}

// NewFSM returns a state machine holding the given plan catalogue.
func NewFSM(catalogue []plans.Plan) *FSM {
	return &FSM{s: NewState(catalogue)}
}

// ApplyResult is what Apply returns for a command, read by the proposer.
type ApplyResult struct {
	Items     []ItemResult // cmdAgentItems: one per item, in order
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
		if f.OnRefused != nil {
			f.OnRefused(l.Index, err, true)
		}
		return &ApplyResult{Err: err}
	}
	c := newCommand(kind)
	if c == nil {
		// A kind this version does not know, in a format version it does:
		// a newer leader added it. Skipping it would diverge as surely.
		panic(fmt.Sprintf("aggregator: raft index %d: unknown command kind %d: upgrade this server", l.Index, kind))
	}
	var res *ApplyResult
	var changed []string
	var audited []AuditEntry
	var done func()
	if f.TimeApply != nil {
		done = f.TimeApply()
	}
	f.mu.Lock()
	if err := msgpack.Unmarshal(body, c); err != nil {
		res = &ApplyResult{Err: err}
	} else {
		a := f.s.newApplier(l.Index, c.when())
		res = c.apply(a)
		a.settle()
		changed, audited = a.changed, a.audited
		f.index.note(changed)
	}
	f.mu.Unlock()
	if done != nil {
		done()
	}
	if res.Err != nil && f.OnRefused != nil {
		f.OnRefused(l.Index, res.Err, false)
	}
	if len(changed) > 0 && f.OnChange != nil {
		f.OnChange(changed)
	}
	if len(audited) > 0 && f.OnAudit != nil {
		f.OnAudit(audited)
	}
	return res
}

func (a *applier) applyItem(it AgentItem, c *AgentItemsCmd) ItemResult {
	defaultPlan := c.DefaultPlan
	m, err := a.s.decoder().Decode(it.Body)
	if err != nil {
		return ItemResult{Status: StatusInvalid}
	}
	switch it.Kind {
	case ItemDelta:
		if b, ok := m.(*wire.DeltaBatch); ok {
			return a.applyDelta(b, it.Region, defaultPlan)
		}
	case ItemFull:
		if fs, ok := m.(*wire.FullState); ok {
			return a.applyFull(fs, it.Region, defaultPlan)
		}
	case ItemGrant:
		if g, ok := m.(*wire.GrantAsk); ok {
			return a.applyGrantAsk(g, c.Lease, c.Margin)
		}
	}
	return ItemResult{Status: StatusInvalid}
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
			a.Counts = map[string]*ClassCounts{}
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
	if f.OnChange != nil {
		all := make([]string, 0, len(s.Tenants))
		for n := range s.Tenants {
			all = append(all, n)
		}
		f.OnChange(all)
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

// Reader is what the servers around the state machine read it through (the
// API's handlers, events, alerts, metrics, history and export); *FSM is one.
// What a read may rely on:
//   - Read calls fn once, on the calling goroutine, with a View of the
//     state as of one applied entry: a consistent snapshot for the whole
//     call (it holds the read lock; Apply waits). The View has lookups and
//     iterators, not the state's maps; fn must not change what they hand
//     it, must not keep references into it after it returns, and should be
//     quick.
//   - AppliedIndex is the Raft index of the last entry applied (or of the
//     snapshot restored).
//   - ScanTenants, called inside Read with the View Read gave, hands fn the
//     tenant index's rows brought up to date with that state.
type Reader interface {
	Read(fn func(v View))
	AppliedIndex() uint64
	ScanTenants(v View, fn func(rows []TenantRow))
}

var _ Reader = (*FSM)(nil)

// AppliedIndex is the Raft index of the last command this state machine
// applied (or of the snapshot it restored).
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.Index
}

// Read runs fn with a view of the state under the read lock (View says
// what fn may rely on and must not do).
func (f *FSM) Read(fn func(v View)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(View{f.s})
}

// StoreConfiguration makes the state machine a raft.ConfigurationStore,
// so that Raft counts configuration entries as applied: otherwise a
// snapshot asked for (snapshot save, a backup) after a server joined or
// left, with no command since, fails with "wait until the configuration
// entry ... has been applied". The state keeps nothing of it: the Raft
// configuration lives in Raft's own log and snapshots.
func (f *FSM) StoreConfiguration(uint64, raft.Configuration) {}

var _ raft.ConfigurationStore = (*FSM)(nil)
