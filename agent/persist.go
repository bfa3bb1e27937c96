package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// The agent's state is one file, DataDir/agent.state: msgpack.Marshal of
// stateFile, a map whose keys are the msgpack tags below (sessions are
// arrays, see stSession), written whole to agent.state.tmp, fsynced, renamed
// over agent.state, and the directory fsynced. It is written at most once per
// flush tick, and only when something changed (an event, an ack, a tenant
// state, or open sessions whose time accrues). All times are wall clock, unix
// nanoseconds. A large table takes longer to write than a tick (about half a
// second for 200,000 sessions); the flusher then simply runs less often,
// since it persists before it sends.
//
// The msgpack is followed by an 8-byte trailer, "hrck" and the CRC-32C
// (Castagnoli, big endian) of the msgpack before it, checked at load: a
// damaged file is refused as corrupt rather than read as other sessions. A
// file without the trailer (written before it existed) still loads, and
// builds before it read a file with it, since msgpack ignores what follows.
//
// Version history:
//
//	1: first version.
const (
	stateFileName = "agent.state"
	stateVersion  = 1
)

type stateFile struct {
	Version int    `msgpack:"v"`
	AgentID string `msgpack:"id"`
	Epoch   uint64 `msgpack:"epoch"`
	// NextSeq is the seq of the next batch to cut (1 in a new epoch).
	NextSeq uint64 `msgpack:"next_seq"`
	// SavedAt is when the snapshot was taken; the pending accumulator holds
	// the usage accrued up to then.
	SavedAt  int64       `msgpack:"saved_at"`
	Sessions []stSession `msgpack:"sessions"`
	// Unacked are the cut, unacknowledged batches in seq order, each as its
	// wire body (wire.Append of a *wire.DeltaBatch).
	Unacked [][]byte `msgpack:"unacked"`
	// Pending is the accumulator of usage not yet cut into a batch.
	Pending []stCell `msgpack:"pending"`
	// Peaks are the tenants' peaks of the pending interval.
	Peaks   []stPeak   `msgpack:"peaks"`
	Tenants []stTenant `msgpack:"tenants"`
	LastAck *stAck     `msgpack:"last_ack"`
	// Users are the active users not yet cut into a batch (users.go), and
	// UserDay the UTC day of the last cut.
	Users   []stUsers `msgpack:"users,omitempty"`
	UserDay uint32    `msgpack:"user_day,omitempty"`
}

type stSession struct {
	ID       string `msgpack:"id"`
	Tenant   string `msgpack:"t"`
	Class    string `msgpack:"c"`
	TTL      int64  `msgpack:"ttl"` // nanoseconds, 0: none
	OpenedAt int64  `msgpack:"o"`
	LastKA   int64  `msgpack:"ka"`
	// Anchor: the start of the session's provisional accrued time (see
	// integrator.go); only for TTL sessions.
	Anchor int64 `msgpack:"an,omitempty"`
	// Source: what opened the session (sources.go); a record written
	// before sources existed has none and loads as SourceAPI.
	Source string `msgpack:"src,omitempty"`
	// Doubt, if not 0, is when a session restored after a crash and not
	// heard of since was last persisted before that crash: it is still in
	// doubt from then (table.go).
	Doubt int64 `msgpack:"dbt,omitempty"`
	// User: the session's user, if any.
	User string `msgpack:"u,omitempty"`
}

// stUsers are one tenant's users of one UTC day not yet cut.
type stUsers struct {
	Tenant string   `msgpack:"t"`
	Day    uint32   `msgpack:"d"`
	Hashes []uint64 `msgpack:"h"`
}

// Sessions are encoded as arrays, [id, tenant, class, ttl, opened, ka,
// anchor, source, doubt, user], for size and speed; a decoder skips
// elements it does not know, takes a record of the first 7 (written before
// sources) as one of SourceAPI, one of 8 as not in doubt, one of 9 as
// without a user.

// EncodeMsgpack implements msgpack.CustomEncoder.
func (s stSession) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(10); err != nil {
		return err
	}
	for _, v := range [...]string{s.ID, s.Tenant, s.Class} {
		if err := enc.EncodeString(v); err != nil {
			return err
		}
	}
	for _, v := range [...]int64{s.TTL, s.OpenedAt, s.LastKA, s.Anchor} {
		if err := enc.EncodeInt(v); err != nil {
			return err
		}
	}
	if err := enc.EncodeString(s.Source); err != nil {
		return err
	}
	if err := enc.EncodeInt(s.Doubt); err != nil {
		return err
	}
	return enc.EncodeString(s.User)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (s *stSession) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 7 {
		return fmt.Errorf("session record of %d elements, want 7", n)
	}
	for _, p := range [...]*string{&s.ID, &s.Tenant, &s.Class} {
		if *p, err = dec.DecodeString(); err != nil {
			return err
		}
	}
	for _, p := range [...]*int64{&s.TTL, &s.OpenedAt, &s.LastKA, &s.Anchor} {
		if *p, err = dec.DecodeInt64(); err != nil {
			return err
		}
	}
	s.Source = SourceAPI
	if n >= 8 {
		if s.Source, err = dec.DecodeString(); err != nil {
			return err
		}
		n--
	}
	if n >= 8 { // 9 elements at first
		if s.Doubt, err = dec.DecodeInt64(); err != nil {
			return err
		}
		n--
	}
	if n >= 8 { // 10 elements at first
		if s.User, err = dec.DecodeString(); err != nil {
			return err
		}
		n--
	}
	for ; n > 7; n-- {
		if err := dec.Skip(); err != nil {
			return err
		}
	}
	return nil
}

type stCell struct {
	Tenant  string `msgpack:"t"`
	Class   string `msgpack:"c"`
	Acc     int64  `msgpack:"acc"` // nanoseconds accrued, not yet shipped
	Peak    int64  `msgpack:"pk"`
	Opened  uint64 `msgpack:"op,omitempty"`
	Closed  uint64 `msgpack:"cl,omitempty"`
	Refused uint64 `msgpack:"rf,omitempty"`
	// Reconciled: of Opened, those taken from a reconcile list.
	Reconciled uint64 `msgpack:"rc,omitempty"`
}

type stPeak struct {
	Tenant string `msgpack:"t"`
	Peak   int64  `msgpack:"pk"`
}

type stTenant struct {
	Tenant      string `msgpack:"t"`
	Plan        string `msgpack:"plan"`
	Ceiling     uint64 `msgpack:"ceil"`
	Mode        string `msgpack:"mode"`
	BurstPct    uint32 `msgpack:"burst"`
	Concurrency uint64 `msgpack:"conc"`
	Suspended   bool   `msgpack:"susp"`
	Base        int64  `msgpack:"base"` // this agent's open count when received
}

type stAck struct {
	Seq   uint64 `msgpack:"seq"`
	Index uint64 `msgpack:"idx"`
	At    int64  `msgpack:"at"`
}

// snapshotLocked copies the state to persist but the sessions (see
// persist); a.mu must be held. It accrues every cell to now first so that the
// pending accumulator and the session anchors agree on SavedAt.
func (a *Agent) snapshotLocked(now int64) *stateFile {
	t := a.tab
	st := &stateFile{
		Version: stateVersion, AgentID: a.id, Epoch: a.epoch, NextSeq: a.nextSeq,
		SavedAt: a.startUnix + now,
		Unacked: make([][]byte, len(a.unacked)),
		Users:   t.pendingUsers(), UserDay: t.userDay,
	}
	for i, b := range a.unacked {
		st.Unacked[i] = b.body
	}
	for _, te := range t.tenants {
		for i := range te.cells {
			c := &te.cells[i]
			if !c.listed && c.acc == 0 {
				continue
			}
			c.accrue(now)
			st.Pending = append(st.Pending, stCell{
				Tenant: te.id, Class: className(plans.Class(i + 1)), Acc: c.acc,
				Peak: c.peak, Opened: c.opened, Closed: c.closed, Refused: c.refused,
				Reconciled: c.reconciled,
			})
		}
		if te.peak > 0 {
			st.Peaks = append(st.Peaks, stPeak{Tenant: te.id, Peak: te.peak})
		}
		if te.known {
			i := &te.info
			st.Tenants = append(st.Tenants, stTenant{
				Tenant: te.id, Plan: i.Plan, Ceiling: i.Ceiling, Mode: i.Mode, BurstPct: i.BurstPct,
				Concurrency: i.Concurrency, Suspended: i.Suspended, Base: te.base,
			})
		}
	}
	if a.lastAck.At != nil {
		st.LastAck = &stAck{Seq: a.lastAck.Seq, Index: a.lastAck.Index, At: a.lastAck.At.UnixNano()}
	}
	return st
}

// persist writes the current state to disk. Calls are serialised by
// persistM; a.mu is held only to copy what changed. Sessions are not copied
// under the mutex: the table journals session changes, and persist applies
// them to its shadow copy of the sessions (owned by persistM) outside the
// mutex. The first persist, and one after the journal overflowed, copies
// every session instead. On success the batches cut before the copy may be
// sent.
func (a *Agent) persist() error {
	a.persistM.Lock()
	defer a.persistM.Unlock()
	a.mu.Lock()
	st := a.snapshotLocked(a.now())
	full := a.shadow == nil || a.tab.jr.overflow
	var changes []sessChange
	if full {
		changes = a.jrSpare[:0]
		for _, s := range a.tab.sessions {
			changes = append(changes, sessChange{op: jOpen, class: s.class, id: s.id, tenant: s.tenant.id, source: s.source,
				ttl: s.ttl, openedAt: s.openedAt, lastKA: s.lastKA, anchor: s.anchor, doubt: s.doubt, user: s.user})
		}
		clear(a.tab.jr.ch)
		a.tab.jr.ch, a.tab.jr.overflow = a.tab.jr.ch[:0], false
	} else {
		changes = a.tab.jr.ch
		a.tab.jr.ch = a.jrSpare[:0]
	}
	a.dirty = false
	a.mu.Unlock()

	if full {
		a.shadow = make(map[string]stSession, len(changes))
	}
	a.applyChanges(changes)
	clear(changes)
	a.jrSpare = changes[:0]
	st.Sessions = make([]stSession, 0, len(a.shadow))
	for _, ss := range a.shadow {
		st.Sessions = append(st.Sessions, ss)
	}
	err := writeState(a.statePth, st)

	a.mu.Lock()
	if err != nil {
		a.dirty = true
	} else {
		a.writes++
		if st.Epoch == a.epoch && st.NextSeq-1 > a.persSeq {
			a.persSeq = st.NextSeq - 1
		}
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Error("cannot persist agent state; batches are held back until it works", "file", a.statePth, "error", err)
	}
	return err
}

// applyChanges applies journal records to the shadow sessions.
func (a *Agent) applyChanges(changes []sessChange) {
	for i := range changes {
		c := &changes[i]
		switch c.op {
		case jOpen:
			ss := stSession{ID: c.id, Tenant: c.tenant, Class: className(c.class), TTL: c.ttl,
				OpenedAt: a.startUnix + c.openedAt, LastKA: a.startUnix + c.lastKA, Source: c.source, User: c.user}
			if c.ttl > 0 {
				ss.Anchor = a.startUnix + c.anchor
			}
			if c.doubt {
				ss.Doubt = a.startUnix + c.anchor
			}
			a.shadow[c.id] = ss
		case jClose:
			delete(a.shadow, c.id)
		case jTouch:
			if ss, ok := a.shadow[c.id]; ok {
				ss.LastKA = a.startUnix + c.lastKA
				ss.Doubt = 0 // a keepalive settles any doubt
				if ss.TTL > 0 {
					ss.Anchor = a.startUnix + c.anchor
				}
				a.shadow[c.id] = ss
			}
		}
	}
}

const stateSumMagic = "hrck"

// corruptWayOut ends the error about a corrupt state file.
const corruptWayOut = "move it away to start with a new identity (its open sessions and unacknowledged usage are then lost), " +
	"and have the media server reconcile its live sessions (PUT /v1/sessions)"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkStateSum returns the msgpack of a state file, checking its trailer
// when it has one.
func checkStateSum(data []byte) ([]byte, error) {
	n := len(data) - 8
	if n < 0 || string(data[n:n+4]) != stateSumMagic {
		return data, nil // written before the trailer
	}
	if want, got := binary.BigEndian.Uint32(data[n+4:]), crc32.Checksum(data[:n], castagnoli); want != got {
		return nil, fmt.Errorf("checksum mismatch (crc32c %08x, the file says %08x)", got, want)
	}
	return data[:n], nil
}

// writeState writes st to path atomically and durably.
func writeState(path string, st *stateFile) error {
	data, err := msgpack.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	data = binary.BigEndian.AppendUint32(append(data, stateSumMagic...), crc32.Checksum(data, castagnoli))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// load restores the state from DataDir, or creates a new identity there.
func (a *Agent) load() error {
	dir := a.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: data directory: %w", err)
	}
	a.statePth = filepath.Join(dir, stateFileName)
	data, err := os.ReadFile(a.statePth)
	if errors.Is(err, fs.ErrNotExist) {
		a.id = a.cfg.AgentID
		if a.id == "" {
			a.id = randomID()
		}
		a.epoch = uint64(time.Now().UnixNano())
		a.nextSeq = 1
		if err := a.persist(); err != nil {
			return fmt.Errorf("agent: cannot create state file: %w", err)
		}
		a.log.Info("new agent identity", "id", a.id, "epoch", a.epoch, "dir", dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent: read state file: %w", err)
	}
	var st stateFile
	if err := decodeState(data, &st); err != nil {
		return fmt.Errorf("agent: state file %s is corrupt (%v): %s", a.statePth, err, corruptWayOut)
	}
	if err := a.restore(&st); err != nil {
		if strings.HasPrefix(err.Error(), "corrupt") {
			return fmt.Errorf("agent: state file %s is %w: %s", a.statePth, err, corruptWayOut)
		}
		return fmt.Errorf("agent: state file %s: %w", a.statePth, err)
	}
	a.log.Info("agent state restored", "id", a.id, "epoch", a.epoch, "next_seq", a.nextSeq,
		"sessions", a.tab.openCount(), "unacked", len(a.unacked))
	return nil
}

// decodeState checks and decodes a state file's bytes; a decoder that
// panics on bytes no encoder wrote is an error too.
func decodeState(data []byte, st *stateFile) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable: %v", r)
		}
	}()
	if data, err = checkStateSum(data); err != nil {
		return err
	}
	return msgpack.Unmarshal(data, st)
}

// restore rebuilds the agent from st. Its sessions were open when it was
// last persisted (SavedAt) and its media server kept them: they count on
// from then, through the agent's downtime, as still open. Until the media
// server says otherwise that time is provisional: a session without a TTL
// is in doubt from SavedAt (closed there by a reconcile or reset that omits
// it, or kept by any sign of life: see table.go), and one with a TTL keeps
// its anchor (it expires at its last keepalive if that lapsed).
func (a *Agent) restore(st *stateFile) error {
	if st.Version != stateVersion {
		return fmt.Errorf("unsupported version %d (this build reads %d)", st.Version, stateVersion)
	}
	if err := validID("agent", st.AgentID, maxSessionID); err != nil {
		return fmt.Errorf("corrupt: %w", err)
	}
	if a.cfg.AgentID != "" && a.cfg.AgentID != st.AgentID {
		return fmt.Errorf("it belongs to agent %q, not to the configured agent id %q; refusing to start (use another data directory, or drop the configured id)", st.AgentID, a.cfg.AgentID)
	}
	if st.Epoch == 0 || st.NextSeq == 0 {
		return errors.New("corrupt: zero epoch or next_seq")
	}
	a.id, a.epoch, a.nextSeq = st.AgentID, st.Epoch, st.NextSeq
	a.persSeq = st.NextSeq - 1
	t := a.tab
	now := a.now()
	saved := min(a.fromWall(st.SavedAt), now) // agent nanos
	for i, b := range st.Unacked {
		m, err := wire.Decode(b)
		if err != nil {
			return fmt.Errorf("corrupt: unacked[%d]: %w", i, err)
		}
		db, ok := m.(*wire.DeltaBatch)
		if !ok || db.Epoch != st.Epoch || db.AgentID != st.AgentID || db.Seq >= st.NextSeq ||
			(i > 0 && db.Seq != a.unacked[i-1].msg.Seq+1) {
			return fmt.Errorf("corrupt: unacked[%d] is not the next batch of this agent and epoch", i)
		}
		a.unacked = append(a.unacked, batch{msg: db, body: b})
	}
	for _, ti := range st.Tenants {
		if validTenantID(ti.Tenant) != nil {
			return fmt.Errorf("corrupt: tenant %q", ti.Tenant)
		}
		t.setTenant(wire.TenantInfo{Tenant: ti.Tenant, Plan: ti.Plan, Ceiling: ti.Ceiling, Mode: ti.Mode,
			BurstPct: ti.BurstPct, Concurrency: ti.Concurrency, Suspended: ti.Suspended}, 0)
	}
	for _, ss := range st.Sessions {
		cls, err := plans.ParseClass(ss.Class)
		src, serr := validSource(ss.Source)
		if validSessionID(ss.ID) != nil || validTenantID(ss.Tenant) != nil || err != nil || serr != nil || ss.TTL < 0 || validUserID(ss.User) != nil {
			return fmt.Errorf("corrupt: session %q", ss.ID)
		}
		if t.sessions[ss.ID] != nil {
			return fmt.Errorf("corrupt: session %q twice", ss.ID)
		}
		s := &session{
			id: ss.ID, source: src, tenant: t.tenant(ss.Tenant, true), class: cls, ttl: ss.TTL, user: ss.User,
			openedAt: a.fromWall(ss.OpenedAt), lastKA: a.fromWall(ss.LastKA), heapIdx: -1,
		}
		if s.ttl > 0 {
			s.anchor = min(a.fromWall(ss.Anchor), saved)
			s.heapKey = s.lastKA + s.ttl
		} else {
			// In doubt from the last persist, or from an earlier one if
			// the doubt of an earlier crash was never settled.
			s.doubt, s.anchor = true, saved
			if ss.Doubt != 0 {
				s.anchor = min(a.fromWall(ss.Doubt), saved)
			}
		}
		t.restoreSession(s, saved)
	}
	for _, ti := range st.Tenants {
		t.tenants[ti.Tenant].base = ti.Base
	}
	for _, pc := range st.Pending {
		cls, err := plans.ParseClass(pc.Class)
		if err != nil || validTenantID(pc.Tenant) != nil {
			return fmt.Errorf("corrupt: pending entry %s/%s", pc.Tenant, pc.Class)
		}
		t.restoreCell(t.tenant(pc.Tenant, true), cls, pc, now)
	}
	for _, p := range st.Peaks {
		if te := t.tenants[p.Tenant]; te != nil && p.Peak > te.peak {
			te.peak = p.Peak
		}
	}
	t.userDay = st.UserDay
	for _, us := range st.Users {
		if validTenantID(us.Tenant) != nil {
			return fmt.Errorf("corrupt: users of tenant %q", us.Tenant)
		}
		te := t.tenant(us.Tenant, true)
		for _, h := range us.Hashes {
			t.seeUser(te, h, us.Day)
		}
	}
	if st.LastAck != nil {
		at := time.Unix(0, st.LastAck.At).UTC()
		a.lastAck = AckInfo{Seq: st.LastAck.Seq, Index: st.LastAck.Index, At: &at}
	}
	// Sessions whose TTL lapsed while the agent was down end now, at their
	// last keepalive.
	if n := t.expireDue(now); n > 0 {
		a.log.Info("sessions expired while the agent was down", "count", n)
		a.dirty = true
	}
	return nil
}

// restoreSession puts a session restored from disk into the table, counting
// it open from since (the last persist) without counting it as opened in
// this interval.
func (t *table) restoreSession(s *session, since int64) {
	t.sessions[s.id] = s
	t.bySource[s.source]++
	c := t.addOpen(s, since)
	if s.ttl > 0 {
		t.heap.push(s)
	}
	if !c.listed {
		c.listed = true
		t.active = append(t.active, cellRef{s.tenant, s.class})
	}
}

// restoreCell restores a pending accumulator entry.
func (t *table) restoreCell(te *tenantEntry, cls plans.Class, pc stCell, now int64) {
	c := &te.cells[cls-1]
	c.accrue(now)
	c.acc += pc.Acc
	c.opened += pc.Opened
	c.closed += pc.Closed
	c.refused += pc.Refused
	c.reconciled += min(pc.Reconciled, pc.Opened)
	if pc.Peak > c.peak {
		c.peak = pc.Peak
	}
	if !c.listed && (c.opened|c.closed|c.refused != 0 || c.peak != 0 || c.count != 0) {
		c.listed = true
		t.active = append(t.active, cellRef{te, cls})
	}
}
