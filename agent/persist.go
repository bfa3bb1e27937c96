package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// The state persisted is stateFile: the agent's identity and sequence
// numbers, its open sessions, the batches cut and not acknowledged, the
// usage not yet cut, the tenants' states and the active users not yet cut.
// All times are wall clock, unix nanoseconds. It is written as a base and
// a journal of changes (journal.go), at most once per flush tick and only
// when something changed (an event, an ack, a tenant state, or open
// sessions whose time accrues); the flusher persists before it sends.
//
// Version 1 was the whole state in one file, DataDir/agent.state, written
// whole at every persist: msgpack.Marshal of stateFile, a map whose keys
// are the msgpack tags below (sessions are arrays, see stSession),
// followed by an 8-byte trailer, "hrck" and the CRC-32C (Castagnoli, big
// endian) of the msgpack before it. Such a file loads as the base of
// generation 0 and is replaced by the next base. Version 2 keeps
// agent.state as a marker in the same form, so that a build of version 1
// refuses the directory ("unsupported version 2") instead of starting
// afresh.
//
// Version history:
//
//	1: one state file.
//	2: a base and a journal (journal.go).
const stateFileName = "agent.state"

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
	// CutAt is when the pending accumulator was last cut: the cells left
	// out of Pending accrued their open count since (see cell.settled).
	CutAt int64 `msgpack:"cut_at,omitempty"`

	tenantsGen uint64 // table.tenantsGen at the copy, not written
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
		Users:   t.pendingUsers(), UserDay: t.userDay, tenantsGen: t.tenantsGen,
		CutAt: a.startUnix + t.cutAt,
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
			if c.settled() {
				continue // restore rebuilds it from the sessions
			}
			st.Pending = append(st.Pending, stCell{
				Tenant: te.id, Class: className(plans.Class(i + 1)), Acc: c.acc,
				Peak: c.peak, Opened: c.opened, Closed: c.closed, Refused: c.refused,
				Reconciled: c.reconciled,
			})
		}
		if te.peak > te.open { // restore rebuilds the open count's peak
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

// persist writes the current state to disk: a record appended to the
// journal, holding the session changes the table journalled since the
// previous one. Calls are serialised by persistM; a.mu is held only to copy
// the state but the sessions, and to take the changes. The first persist
// of a directory without a base, and one after the table's journal
// overflowed (or an append failed in a way that leaves the file unsure),
// writes a base with every session instead. On success the batches cut
// before the copy may be sent.
func (a *Agent) persist() error {
	a.persistM.Lock()
	defer a.persistM.Unlock()
	p := &a.pst
	a.mu.Lock()
	st := a.snapshotLocked(a.now())
	a.snaps++
	snap, open := a.snaps, len(a.tab.sessions)
	whole := p.needBase || a.tab.jr.overflow
	var changes []sessChange
	if whole {
		changes = p.spare[:0]
		for _, s := range a.tab.sessions {
			changes = append(changes, s.openChange())
		}
		clear(a.tab.jr.ch)
		a.tab.jr.ch, a.tab.jr.overflow = a.tab.jr.ch[:0], false
		p.retry = nil
	} else {
		changes = a.tab.jr.ch
		a.tab.jr.ch = p.spare[:0]
		if len(p.retry) > 0 { // what a failed append held goes first
			changes = append(p.retry, changes...)
			p.retry = nil
		}
	}
	p.spare = nil
	a.dirty = false
	a.mu.Unlock()

	var err error
	if p.fault != nil {
		err = p.fault()
	}
	if err == nil && whole {
		err = a.writeBaseWhole(st, changes)
	} else if err == nil {
		err = a.appendRecord(st, changes)
	}
	switch {
	case err == nil || whole:
		if err != nil {
			p.needBase = true
		}
		clear(changes)
		if cap(changes) <= 1<<16 { // a burst's buffer goes
			p.spare = changes[:0]
		}
	case len(changes) > 2*open+65536:
		p.needBase = true // too much to hold: write everything once it works
	default:
		p.retry = changes
	}

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
		a.log.Error("cannot persist agent state; batches are held back until it works", "dir", p.dir, "error", err)
		return err
	}
	a.compactStep(snap)
	return nil
}

// openChange is the journal record of s as an open.
func (s *session) openChange() sessChange {
	return sessChange{op: jOpen, class: s.class, id: s.id, tenant: s.tenant.id, source: s.source,
		ttl: s.ttl, openedAt: s.openedAt, lastKA: s.lastKA, anchor: s.anchor, doubt: s.doubt, user: s.user}
}

// stChangeOf is c as written, times made wall clock.
func (a *Agent) stChangeOf(c *sessChange) stChange {
	w := a.startUnix
	switch c.op {
	case jOpen:
		ss := stSession{ID: c.id, Tenant: c.tenant, Class: className(c.class), TTL: c.ttl,
			OpenedAt: w + c.openedAt, LastKA: w + c.lastKA, Source: c.source, User: c.user}
		if c.ttl > 0 {
			ss.Anchor = w + c.anchor
		}
		if c.doubt {
			ss.Doubt = w + c.anchor
		}
		return stChange{Op: jOpen, S: ss}
	case jTouch:
		return stChange{Op: jTouch, S: stSession{ID: c.id, LastKA: w + c.lastKA, Anchor: w + c.anchor}}
	}
	return stChange{Op: jClose, S: stSession{ID: c.id}}
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
	p := &a.pst
	p.dir = dir
	staged := &stagedSessions{a: a, m: make(map[string]stagedSession)}
	rc, err := recoverState(dir, staged)
	var cf *corruptFile
	if errors.As(err, &cf) {
		return fmt.Errorf("agent: state file %s is corrupt (%v): %s", cf.path, cf.err, corruptWayOut)
	}
	if err != nil {
		return fmt.Errorf("agent: read state: %w", err)
	}
	p.gen, p.size, p.baseGen, p.baseSize = rc.gen, rc.size, rc.baseGen, rc.baseSize
	p.needBase = rc.baseGen == 0 // a new directory, or one of version 1
	p.clean = rc.clean
	p.files = rc.files
	if rc.torn > 0 {
		a.log.Warn("the agent's journal ended in a record cut short, as a crash during a write leaves; it was dropped (it was never acknowledged as written, so nothing it held was sent)",
			"file", journalPath(dir, rc.gen), "bytes", rc.torn)
	}
	if rc.head == nil {
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
	st := rc.head
	if err := a.restore(st, staged); err != nil {
		path := journalPath(dir, rc.gen)
		if rc.legacy {
			path = filepath.Join(dir, stateFileName)
		}
		if strings.HasPrefix(err.Error(), "corrupt") {
			return fmt.Errorf("agent: state file %s is %w: %s", path, err, corruptWayOut)
		}
		return fmt.Errorf("agent: state file %s: %w", path, err)
	}
	if rc.size > 0 {
		p.wroteEpoch, p.wroteSeq = st.Epoch, st.NextSeq-1 // the next record may add to the last
	}
	if a.tab.openCount() > 0 {
		// The restored sessions are in doubt from the last persist (or
		// from an earlier doubt), which the next record says for them
		// all (jRecord.Restored).
		p.restoredAt = min(st.SavedAt, a.startUnix+a.now())
	}
	a.removeBefore(rc.baseGen)
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
func (a *Agent) restore(st *stateFile, staged *stagedSessions) error {
	if st.Version != stateVersion && st.Version != legacyVersion {
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
	a.missFrom = saved
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
	for id, sg := range staged.m {
		s := sg.s
		s.tenant = t.tenant(sg.tenant, true)
		if s.ttl > 0 {
			s.anchor = min(s.anchor, saved)
			s.heapKey = s.lastKA + s.ttl
		} else if s.doubt {
			// In doubt from an earlier persist: the doubt of an earlier
			// crash was never settled.
			s.anchor = min(s.anchor, saved)
		} else {
			s.doubt, s.anchor = true, saved // in doubt from the last persist
		}
		t.restoreSession(s, saved)
		delete(staged.m, id)
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
	// The cells left out of Pending (settled) accrued their sessions from
	// the cut to the persist; their count is the restored one.
	if cutAt := a.fromWall(st.CutAt); st.CutAt != 0 && cutAt < saved {
		for _, r := range t.active {
			if c := &r.te.cells[r.cls-1]; !c.carried {
				c.acc += c.count * (saved - cutAt)
				c.carried = true
			}
		}
	}
	t.cutAt = saved
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
	c.carried = true
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

// Pending cells, peaks and tenants are encoded as arrays in version 2, in
// the order of their fields ([tenant, class, acc, peak, opened, closed,
// refused, reconciled] and so on): a persist encodes one per tenant and
// class. Version 1 wrote them as maps keyed by their msgpack tags; both
// decode.

type (
	stCellMap   stCell
	stPeakMap   stPeak
	stTenantMap stTenant
)

// EncodeMsgpack implements msgpack.CustomEncoder.
func (c stCell) EncodeMsgpack(enc *msgpack.Encoder) error {
	var e arrayEncoder
	e.begin(enc, 8).str(c.Tenant).str(c.Class).int(c.Acc).int(c.Peak).uint(c.Opened).uint(c.Closed).uint(c.Refused).uint(c.Reconciled)
	return e.err
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (c *stCell) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeArrayOr(dec, (*stCellMap)(c), &c.Tenant, &c.Class, &c.Acc, &c.Peak, &c.Opened, &c.Closed, &c.Refused, &c.Reconciled)
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (p stPeak) EncodeMsgpack(enc *msgpack.Encoder) error {
	var e arrayEncoder
	e.begin(enc, 2).str(p.Tenant).int(p.Peak)
	return e.err
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (p *stPeak) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeArrayOr(dec, (*stPeakMap)(p), &p.Tenant, &p.Peak)
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (t stTenant) EncodeMsgpack(enc *msgpack.Encoder) error {
	var e arrayEncoder
	e.begin(enc, 8).str(t.Tenant).str(t.Plan).uint(t.Ceiling).str(t.Mode).uint(uint64(t.BurstPct)).uint(t.Concurrency).bool(t.Suspended).int(t.Base)
	return e.err
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (t *stTenant) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeArrayOr(dec, (*stTenantMap)(t), &t.Tenant, &t.Plan, &t.Ceiling, &t.Mode, &t.BurstPct, &t.Concurrency, &t.Suspended, &t.Base)
}

// arrayEncoder encodes an array's elements in turn, keeping the first error.
type arrayEncoder struct {
	enc *msgpack.Encoder
	err error
}

func (e *arrayEncoder) begin(enc *msgpack.Encoder, n int) *arrayEncoder {
	e.enc, e.err = enc, enc.EncodeArrayLen(n)
	return e
}

func (e *arrayEncoder) str(v string) *arrayEncoder {
	if e.err == nil {
		e.err = e.enc.EncodeString(v)
	}
	return e
}

func (e *arrayEncoder) int(v int64) *arrayEncoder {
	if e.err == nil {
		e.err = e.enc.EncodeInt(v)
	}
	return e
}

func (e *arrayEncoder) uint(v uint64) *arrayEncoder {
	if e.err == nil {
		e.err = e.enc.EncodeUint(v)
	}
	return e
}

func (e *arrayEncoder) bool(v bool) *arrayEncoder {
	if e.err == nil {
		e.err = e.enc.EncodeBool(v)
	}
	return e
}

// decodeArrayOr decodes an array into ps, in order (elements beyond them
// skipped, missing ones left zero), or a map (version 1) into asMap.
func decodeArrayOr(dec *msgpack.Decoder, asMap any, ps ...any) error {
	code, err := dec.PeekCode()
	if err != nil {
		return err
	}
	if !msgpcode.IsFixedArray(code) && code != msgpcode.Array16 && code != msgpcode.Array32 {
		return dec.DecodeValue(reflect.ValueOf(asMap).Elem())
	}
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if i >= len(ps) {
			if err := dec.Skip(); err != nil {
				return err
			}
			continue
		}
		if err := dec.Decode(ps[i]); err != nil {
			return err
		}
	}
	return nil
}

// stagedSessions are the sessions read back from disk before restore
// (journal.go's sessionSink): as they will be in the table, times in agent
// nanos; for a session without a TTL, doubt says it was in doubt since
// anchor already.
type stagedSessions struct {
	a *Agent
	m map[string]stagedSession
}

type stagedSession struct {
	s      *session
	tenant string
}

func (g *stagedSessions) open(ss *stSession) error {
	cls, err := plans.ParseClass(ss.Class)
	src, serr := validSource(ss.Source)
	if validSessionID(ss.ID) != nil || validTenantID(ss.Tenant) != nil || err != nil || serr != nil || ss.TTL < 0 || validUserID(ss.User) != nil {
		return fmt.Errorf("corrupt: session %q", ss.ID)
	}
	a := g.a
	s := &session{id: ss.ID, source: src, class: cls, ttl: ss.TTL, user: ss.User,
		openedAt: a.fromWall(ss.OpenedAt), lastKA: a.fromWall(ss.LastKA), heapIdx: -1}
	if s.ttl > 0 {
		s.anchor = a.fromWall(ss.Anchor)
	} else if ss.Doubt != 0 {
		s.doubt, s.anchor = true, a.fromWall(ss.Doubt)
	}
	g.m[ss.ID] = stagedSession{s: s, tenant: ss.Tenant}
	return nil
}

func (g *stagedSessions) close(id string) { delete(g.m, id) }

func (g *stagedSessions) restored(at int64) {
	for _, sg := range g.m {
		if s := sg.s; s.ttl == 0 && !s.doubt {
			s.doubt, s.anchor = true, g.a.fromWall(at)
		}
	}
}

func (g *stagedSessions) touch(id string, lastKA, anchor int64) {
	if sg, ok := g.m[id]; ok {
		s := sg.s
		s.lastKA = g.a.fromWall(lastKA)
		if s.ttl > 0 {
			s.anchor = g.a.fromWall(anchor)
		} else {
			s.doubt, s.anchor = false, 0 // a keepalive settles any doubt
		}
	}
}
