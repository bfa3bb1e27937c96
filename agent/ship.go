package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Shipping. Run starts two loops:
//
//   - the flusher: every FlushInterval (or sooner, see Config.MaxBatchEntries)
//     it expires lapsed sessions, cuts the pending accumulator into a batch
//     if a stream is live, persists, then wakes the stream's writer. So every
//     batch is persisted before it is sent, and a kill -9 counts nothing
//     twice. While no stream is live nothing is cut: the accumulator keeps
//     coalescing (sums add, peaks max), so an agent cut off for an hour holds
//     one pending interval, not thousands of batches, and batches already
//     cut (possibly sent and applied) keep their seq and content.
//   - the connection loop: it dials a server, says Hello, handles Welcome
//     (resend unacked batches after LastSeq, or send FullState), then reads
//     Acks, TenantState, Pings and Errors while a writer goroutine sends
//     batches, Pongs and Pings. On any failure it reconnects with exponential
//     backoff and jitter, cycling through the known servers.
//
// Only the stream's goroutines write to its connection: the handshake before
// the writer starts, the writer after.

// maxTenantState bounds the tenants buffered from a multi-frame full
// TenantState.
const maxTenantState = 1_000_000

// stream is one connection to a server.
type stream struct {
	conn net.Conn
	addr string
	// Guarded by Agent.mu:
	live     bool   // Welcome handled: batches flow and the flusher cuts
	sentUpTo uint64 // highest seq written on this stream (or known applied)
	gen      uint64 // bumped when sentUpTo is rewound (seq-gap)

	wake chan struct{}     // cap 1: batches to send
	ctrl chan wire.Message // Pongs for the writer
	done chan struct{}     // closed when the reader is finished
	wbuf []byte            // the writer's buffer
}

// streamEnd tells the connection loop how a stream ended.
type streamEnd struct {
	welcomed bool
	redirect string // connect to this server next
	err      error
}

// serverList is the known servers; guarded by Agent.mu.
type serverList struct {
	addrs  []string
	next   int
	prefer string
}

func (l *serverList) add(s string) {
	if s == "" || len(l.addrs) >= maxServers || slices.Contains(l.addrs, s) {
		return
	}
	l.addrs = append(l.addrs, s)
}

func (l *serverList) pick() string {
	if p := l.prefer; p != "" {
		l.prefer = ""
		return p
	}
	return l.addrs[l.next%len(l.addrs)]
}

func (l *serverList) advance() { l.next = (l.next + 1) % len(l.addrs) }

// Run ships until ctx is done. Then it expires, cuts and persists one last
// time and, for at most a couple of seconds, keeps the stream (or tries to
// get one) to send what is unacknowledged, persists again and returns. It
// returns nil after a clean shutdown, or the error of the last persist. Run
// may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.TryLock() {
		return errors.New("agent: Run is already running")
	}
	defer a.running.Unlock()
	connCtx, cancelConn := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConn()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.connLoop(connCtx)
	}()

	tick := time.NewTicker(a.cfg.FlushInterval)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			a.flush()
			a.checkWall()
		case <-a.flushNow:
			a.flush()
		}
	}
	tick.Stop()

	// Shutdown: final cut and persist, then a bounded drain.
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	a.flush()
	deadline := time.NewTimer(a.knobs.drainTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(min(a.cfg.FlushInterval, 20*time.Millisecond))
	defer poll.Stop()
drain:
	for {
		a.mu.Lock()
		live := a.stream != nil && a.stream.live
		done := len(a.unacked) == 0 && (a.cutDrain || a.tab.pendingEntries() == 0)
		needCut := live && !a.cutDrain && a.tab.pendingEntries() > 0
		a.mu.Unlock()
		if done {
			break
		}
		if needCut {
			a.flush()
		}
		select {
		case <-deadline.C:
			break drain
		case <-a.ackWake:
		case <-poll.C:
		}
	}
	cancelConn()
	wg.Wait()
	a.mu.Lock()
	left := len(a.unacked)
	a.mu.Unlock()
	if left > 0 {
		a.log.Warn("shutting down with unacknowledged batches; they are kept and resent at the next start", "batches", left)
	}
	return a.closeState()
}

// flush is one flush tick: expire, cut if live, persist if anything changed,
// wake the writer.
func (a *Agent) flush() {
	a.mu.Lock()
	now := a.now()
	a.expireLocked(now)
	s := a.stream
	cut := false
	if s != nil && s.live {
		cut = a.cutLocked(now)
	}
	need := a.dirty || cut || a.tab.openCount() > 0
	a.mu.Unlock()
	if need {
		a.persist()
	}
	if cut {
		signal(s.wake)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// cutLocked cuts the pending accumulator into batches appended to unacked
// and reports whether it cut any. A cut with more entries than fit in one
// batch (MaxBatchEntries, or what fits in MaxFrame) gives consecutive
// batches; each tenant's peak goes with its entries.
func (a *Agent) cutLocked(now int64) bool {
	entries, peaks := a.tab.cut(now)
	users := splitUsers(a.tab.cutUsers(now))
	if len(entries) == 0 && len(users) == 0 {
		return false
	}
	per := min(a.cfg.MaxBatchEntries, max(1, a.cfg.MaxFrame/entryBudget))
	at := a.wall(now).UnixMilli()
	for len(entries) > 0 || len(users) > 0 {
		n := min(per, len(entries))
		part := entries[:n:n]
		entries = entries[n:]
		np := len(peaks)
		if len(entries) > 0 {
			last := part[n-1].Tenant
			np = 0
			for np < len(peaks) && peaks[np].Tenant <= last {
				np++
			}
		}
		b := &wire.DeltaBatch{
			AgentID: a.id, Epoch: a.epoch, Seq: a.nextSeq, AgentTime: at,
			Entries: part, Peaks: peaks[:np:np],
		}
		if np == 0 {
			b.Peaks = nil
		}
		if len(entries) == 0 && len(users) > 0 { // the users go with the last entries, or alone
			b.Users, users = users[0], users[1:]
		}
		peaks = peaks[np:]
		a.nextSeq++
		a.stats.batchesCut++
		a.unacked = append(a.unacked, batch{msg: b, body: wire.Append(make([]byte, 0, batchSizeHint(b)), b)})
	}
	// The strict pools with sessions open: their counts at this cut stay
	// booked in asks until the stream has written the cut (grants.go).
	last, written := a.nextSeq-1, a.writtenLocked()
	var prev *tenantEntry
	for _, r := range a.tab.active {
		if te := r.te; te != prev && te.g != nil {
			prev = te
			te.g.noteCut(te, last, written)
		}
	}
	if a.draining {
		a.cutDrain = true
	}
	a.dirty = true
	return true
}

// batchSizeHint is a close upper estimate of b's encoded size, so that
// encoding allocates once.
func batchSizeHint(b *wire.DeltaBatch) int {
	n := 64 + len(b.AgentID)
	for i := range b.Entries {
		n += 8 + len(b.Entries[i].Tenant) + len(b.Entries[i].Class) + 5*10
	}
	for i := range b.Peaks {
		n += 16 + len(b.Peaks[i].Tenant)
	}
	for i := range b.Users {
		n += 16 + len(b.Users[i].Tenant) + 9*len(b.Users[i].Hashes)
	}
	return n
}

// dropAckedLocked drops the unacked batches up to seq.
func (a *Agent) dropAckedLocked(seq uint64) {
	i := 0
	for i < len(a.unacked) && a.unacked[i].msg.Seq <= seq {
		i++
	}
	if i > 0 {
		clear(a.unacked[:i])
		a.unacked = a.unacked[i:]
		if len(a.unacked) == 0 {
			a.unacked = nil
		}
		a.dirty = true
	}
}

// newEpochLocked starts a new epoch: fresh sequence numbers, the
// unacknowledged batches of the old epoch dropped; the next Welcome asks for
// FullState, which carries the current counts.
func (a *Agent) newEpochLocked(reason string) {
	old := a.epoch
	ep := uint64(time.Now().UnixNano())
	if ep <= old {
		ep = old + 1
	}
	a.log.Error("STARTING A NEW EPOCH: this agent's memory is older than the cluster's; unacknowledged batches of the old epoch are dropped",
		"reason", reason, "old_epoch", old, "new_epoch", ep, "dropped_batches", len(a.unacked))
	a.epoch, a.nextSeq, a.persSeq, a.sentHigh = ep, 1, 0, 0
	a.unacked = nil
	a.dirty = true
	for _, te := range a.tab.tenants { // the old epoch's cuts are gone: FullState tells the counts
		if te.g != nil {
			for i := range te.g.pools {
				te.g.pools[i].cutMax, te.g.pools[i].cutSeq = 0, 0
			}
		}
	}
}

// failoverBackoffMax caps the backoff while servers are down or electing.
const failoverBackoffMax = 200 * time.Millisecond

// maxQuickRedirects is how many redirects in a row are followed without
// waiting.
const maxQuickRedirects = 3

// errNewEpoch ends a stream after a new epoch was started.
var errNewEpoch = errors.New("new epoch started")

// connLoop keeps a stream to some server until ctx is done.
func (a *Agent) connLoop(ctx context.Context) {
	backoff := a.knobs.backoffMin
	redirects := 0 // followed in a row without a Welcome
	for attempt := 0; ctx.Err() == nil; attempt++ {
		a.mu.Lock()
		addr := a.servers.pick()
		if attempt > 0 {
			a.stats.reconnects++
		}
		a.mu.Unlock()
		var end streamEnd
		conn, err := a.dial(ctx, addr)
		dialFailed := err != nil
		if err != nil {
			end.err = fmt.Errorf("dial: %w", err)
		} else {
			end = a.runStream(ctx, conn, addr)
		}
		if ctx.Err() != nil {
			return
		}
		if end.welcomed {
			backoff = a.knobs.backoffMin
		}
		var werr *wire.Error
		notLeader := errors.As(end.err, &werr) && werr.Code == wire.CodeNotLeader
		a.mu.Lock()
		switch {
		case end.redirect != "":
			a.servers.add(end.redirect)
			a.servers.prefer = end.redirect
		case end.welcomed && !notLeader:
			a.servers.prefer = addr // try the same server first
		default:
			a.servers.advance()
		}
		a.mu.Unlock()
		// A redirect is followed at once, a few times in a row: servers
		// agreeing on a leader answer in one hop, and a stale one (pointing
		// at a leader that just died) falls back to backoff.
		if end.redirect != "" && end.redirect != addr && redirects < maxQuickRedirects {
			redirects++
			a.log.Debug("following redirect", "from", addr, "to", end.redirect)
			continue
		}
		redirects = 0
		a.log.Warn("stream to server ended; reconnecting", "server", addr, "error", end.err, "redirect", end.redirect, "backoff", backoff)
		if notLeader || dialFailed {
			// A server that is down, or one that knows no leader yet, is
			// what a failover looks like: the election takes about a
			// second, so keep trying the servers at a short interval.
			backoff = min(backoff, failoverBackoffMax)
		}
		d := backoff/2 + rand.N(backoff+1)
		if !end.welcomed {
			backoff = min(backoff*2, a.knobs.backoffMax)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runStream runs one stream: handshake, then the read loop with a writer
// goroutine. It closes conn before returning.
func (a *Agent) runStream(ctx context.Context, conn net.Conn, addr string) (end streamEnd) {
	s := &stream{
		conn: conn, addr: addr,
		wake: make(chan struct{}, 1),
		ctrl: make(chan wire.Message, 8),
		done: make(chan struct{}),
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	rd := wire.NewReader(bufio.NewReader(conn), a.cfg.MaxFrame)

	a.mu.Lock()
	hello := &wire.Hello{AgentID: a.id, Epoch: a.epoch, Version: wire.ProtocolVersion, Labels: a.labels, Token: a.cfg.Token}
	a.stream = s
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.stream == s {
			a.stream = nil
		}
		s.live = false
		a.tsBuf, a.tsBufOn = nil, false
		a.ask = nil // its answer, if any, is lost with the stream
		a.grantEventLocked()
		a.mu.Unlock()
	}()

	if err := a.write(s, hello); err != nil {
		end.err = err
		return end
	}
	conn.SetReadDeadline(time.Now().Add(3 * a.knobs.pingInterval))
	m, err := rd.Read()
	if err != nil {
		end.err = err
		return end
	}
	switch m := m.(type) {
	case *wire.Welcome:
		end.welcomed = true
		a.mu.Lock()
		a.stats.connects++
		a.mu.Unlock()
		a.log.Info("connected to server", "server", addr, "server_id", m.ServerID, "last_seq", m.LastSeq, "need_full_state", m.NeedFullState)
		if err := a.onWelcome(s, m); err != nil {
			end.err = err
			return end
		}
	case *wire.Redirect:
		a.addServers(m.Servers)
		end.redirect = m.Leader
		end.err = fmt.Errorf("redirected to %q", m.Leader)
		return end
	case *wire.Error:
		end.err = a.onError(s, m)
		return end
	default:
		end.err = fmt.Errorf("protocol error: %T before Welcome", m)
		return end
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.writer(s); err != nil {
			a.log.Debug("stream writer failed", "server", addr, "error", err)
			conn.Close() // the reader sees it and returns
		}
	}()
	end.redirect, end.err = a.readLoop(s, rd)
	close(s.done)
	conn.Close()
	wg.Wait()
	return end
}

func (a *Agent) addServers(ss []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range ss {
		a.servers.add(s)
	}
}

// setServerClassesLocked records which classes the server counts, from a
// Welcome's Classes (none: a server of before the field, which counts
// wire.LegacyClasses); a.mu is held.
func (a *Agent) setServerClassesLocked(classes []string) {
	if len(classes) == 0 {
		classes = wire.LegacyClasses
	}
	var known [numClasses + 1]bool
	for _, name := range classes {
		if c, err := plans.ParseClass(name); err == nil {
			known[c] = true
		}
	}
	for _, c := range plans.AllClasses {
		if was := a.unsupported[c]; was == known[c] {
			a.unsupported[c] = !known[c]
			if !known[c] {
				a.log.Warn("the server does not count this class: its sessions are refused", "class", c.String(), "reason", ReasonClassUnsupported)
			}
		}
	}
}

// onWelcome handles Welcome: it resends what the server has not applied or
// sends FullState, then makes the stream live.
func (a *Agent) onWelcome(s *stream, w *wire.Welcome) error {
	a.mu.Lock()
	for _, sv := range w.Servers {
		a.servers.add(sv)
	}
	a.setServerClassesLocked(w.Classes)
	if w.LastSeq >= a.nextSeq {
		a.newEpochLocked(fmt.Sprintf("the server applied seq %d of epoch %d, this agent only cut up to %d", w.LastSeq, a.epoch, a.nextSeq-1))
		a.mu.Unlock()
		a.persist()
		return errNewEpoch
	}
	a.dropAckedLocked(w.LastSeq)
	first := a.nextSeq
	if len(a.unacked) > 0 {
		first = a.unacked[0].msg.Seq
	}
	if !w.NeedFullState && first == w.LastSeq+1 {
		s.sentUpTo = w.LastSeq
		s.live = true
		a.mu.Unlock()
		signal(s.wake)
		return nil
	}
	if !w.NeedFullState {
		a.log.Warn("server misses batches this agent no longer holds; sending full state", "last_seq", w.LastSeq, "first_unacked", first)
	}
	a.cutLocked(a.now())
	fs := a.fullStateLocked()
	a.mu.Unlock()
	if err := a.persist(); err != nil {
		return err
	}
	for _, part := range wire.SplitFullState(*fs, a.cfg.MaxFrame) {
		if err := a.write(s, part); err != nil {
			return err
		}
	}
	a.mu.Lock()
	s.sentUpTo = fs.Seq
	s.live = true
	a.mu.Unlock()
	signal(s.wake)
	return nil
}

// fullStateLocked builds the FullState for the last cut seq: the absolute
// open counts and the coalesced usage (session time, rounded minutes of
// ended sessions, peaks, refusals) of every unacknowledged batch.
func (a *Agent) fullStateLocked() *wire.FullState {
	fs := &wire.FullState{AgentID: a.id, Epoch: a.epoch, Seq: a.nextSeq - 1, Counts: a.tab.counts()}
	type key struct{ tenant, class string }
	usage := make(map[key]*wire.DeltaEntry)
	peaks := make(map[string]uint64)
	for _, b := range a.unacked {
		for _, e := range b.msg.Entries {
			k := key{e.Tenant, e.Class}
			u := usage[k]
			if u == nil {
				u = &wire.DeltaEntry{Tenant: e.Tenant, Class: e.Class}
				usage[k] = u
			}
			u.SessionMicros += e.SessionMicros
			u.ClosedMinutes += e.ClosedMinutes
			u.Refused += e.Refused
			u.Peak = max(u.Peak, e.Peak)
		}
		for _, p := range b.msg.Peaks {
			peaks[p.Tenant] = max(peaks[p.Tenant], p.Peak)
		}
		fs.Users = append(fs.Users, b.msg.Users...)
	}
	for _, u := range usage {
		fs.Usage = append(fs.Usage, *u)
	}
	slices.SortFunc(fs.Usage, func(x, y wire.DeltaEntry) int {
		if c := strings.Compare(x.Tenant, y.Tenant); c != 0 {
			return c
		}
		return classOrder(x.Class) - classOrder(y.Class)
	})
	for t, p := range peaks {
		fs.Peaks = append(fs.Peaks, wire.TenantPeak{Tenant: t, Peak: p})
	}
	slices.SortFunc(fs.Peaks, func(x, y wire.TenantPeak) int { return strings.Compare(x.Tenant, y.Tenant) })
	return fs
}

// readLoop reads the server's messages until the stream fails.
func (a *Agent) readLoop(s *stream, rd *wire.Reader) (redirect string, err error) {
	for {
		s.conn.SetReadDeadline(time.Now().Add(3 * a.knobs.pingInterval))
		m, err := rd.Read()
		if err != nil {
			if errors.Is(err, wire.ErrUnknownType) {
				a.log.Debug("skipping a message of an unknown type", "error", err)
				continue
			}
			return "", err
		}
		switch m := m.(type) {
		case *wire.Ack:
			a.onAck(m)
		case *wire.TenantState:
			if err := a.onTenantState(m); err != nil {
				return "", err
			}
		case *wire.Grant:
			a.onGrant(m)
		case *wire.Recall:
			a.onRecall(m)
		case *wire.Ping:
			select {
			case s.ctrl <- &wire.Pong{Nonce: m.Nonce}:
			default: // the writer is behind; the peer will ping again
			}
		case *wire.Pong:
		case *wire.Error:
			if err := a.onError(s, m); err != nil {
				return "", err
			}
		case *wire.Redirect:
			a.addServers(m.Servers)
			return m.Leader, fmt.Errorf("redirected to %q", m.Leader)
		default:
			return "", fmt.Errorf("protocol error: unexpected %T", m)
		}
	}
}

func (a *Agent) onAck(m *wire.Ack) {
	a.mu.Lock()
	if m.Seq >= a.nextSeq {
		a.log.Warn("ack for a seq never cut", "seq", m.Seq, "next_seq", a.nextSeq)
	}
	a.dropAckedLocked(m.Seq)
	at := a.wall(a.now()).UTC()
	a.lastAck = AckInfo{Seq: m.Seq, Index: m.Index, At: &at}
	a.dirty = true
	a.mu.Unlock()
	signal(a.ackWake)
}

// onTenantState applies a TenantState: a Full one (possibly across frames
// with More) replaces every known tenant once its last frame arrives; a
// partial one merges its tenants.
func (a *Agent) onTenantState(m *wire.TenantState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	skipped := 0
	if m.Full {
		if !a.tsBufOn {
			a.tsBufOn, a.tsBuf = true, nil
		}
		if len(a.tsBuf)+len(m.Tenants) > maxTenantState {
			a.tsBuf, a.tsBufOn = nil, false
			return fmt.Errorf("full tenant state of more than %d tenants", maxTenantState)
		}
		a.tsBuf = append(a.tsBuf, m.Tenants...)
		if m.More {
			return nil
		}
		skipped = a.tab.applyTenantState(true, a.tsBuf, a.askSeq)
		a.tsBuf, a.tsBufOn = nil, false
	} else {
		skipped = a.tab.applyTenantState(false, m.Tenants, a.askSeq)
	}
	if skipped > 0 {
		a.log.Warn("tenant state: skipped tenants with invalid ids", "count", skipped)
	}
	a.dirty = true
	a.grantEventLocked() // waiting admissions decide again; shares may need asking
	return nil
}

// onError handles an Error from the server; nil means the stream goes on.
func (a *Agent) onError(s *stream, e *wire.Error) error {
	switch e.Code {
	case wire.CodeSeqGap:
		a.mu.Lock()
		a.dropAckedLocked(e.LastSeq)
		ok := s.live && e.LastSeq < a.nextSeq && (len(a.unacked) == 0 || a.unacked[0].msg.Seq == e.LastSeq+1)
		if ok {
			s.sentUpTo = e.LastSeq
			s.gen++
		}
		a.mu.Unlock()
		if ok {
			a.log.Warn("server reports a seq gap; resending", "last_seq", e.LastSeq)
			signal(s.wake)
			return nil
		}
		return e
	case wire.CodeOldEpoch:
		a.mu.Lock()
		a.newEpochLocked("server: " + e.Message)
		a.mu.Unlock()
		a.persist()
		return e
	case wire.CodeUnauthenticated, wire.CodeVersion:
		a.log.Error("server refuses this agent", "code", e.Code, "message", e.Message)
		return e
	default:
		return e
	}
}

// writer sends batches, Pongs and Pings until the stream is done.
func (a *Agent) writer(s *stream) error {
	ping := time.NewTicker(a.knobs.pingInterval)
	defer ping.Stop()
	renew := time.NewTicker(renewCheck)
	defer renew.Stop()
	var nonce uint64
	for {
		if err := a.sendAsk(s); err != nil {
			return err
		}
		if err := a.sendBatches(s); err != nil {
			return err
		}
		select {
		case <-s.done:
			return nil
		case <-renew.C:
		case <-s.wake:
		case m := <-s.ctrl:
			if err := a.write(s, m); err != nil {
				return err
			}
		case <-ping.C:
			nonce++
			if err := a.write(s, &wire.Ping{Nonce: nonce}); err != nil {
				return err
			}
		}
	}
}

// renewCheck is how often the writer looks for shares to renew.
const renewCheck = 250 * time.Millisecond

// maxWriteChunk bounds how many bytes of batches one write gathers.
const maxWriteChunk = 256 << 10

// sendBatches writes the persisted unacked batches after s.sentUpTo.
func (a *Agent) sendBatches(s *stream) error {
	for {
		a.mu.Lock()
		if !s.live || len(a.unacked) == 0 {
			a.mu.Unlock()
			return nil
		}
		gen := s.gen
		i := 0
		if first := a.unacked[0].msg.Seq; s.sentUpTo >= first {
			i = int(s.sentUpTo - first + 1)
		}
		buf := s.wbuf[:0]
		var last, sent, resent uint64
		for ; i < len(a.unacked) && len(buf) < maxWriteChunk; i++ {
			b := a.unacked[i]
			if b.msg.Seq > a.persSeq {
				break
			}
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(b.body)))
			buf = append(buf, b.body...)
			last = b.msg.Seq
			sent++
			if b.msg.Seq <= a.sentHigh {
				resent++
			}
		}
		a.mu.Unlock()
		if last == 0 {
			return nil
		}
		if cap(buf) <= 4*maxWriteChunk {
			s.wbuf = buf[:0]
		}
		s.conn.SetWriteDeadline(time.Now().Add(a.knobs.writeTimeout))
		if _, err := s.conn.Write(buf); err != nil {
			return err
		}
		a.mu.Lock()
		if s.gen == gen && last > s.sentUpTo {
			s.sentUpTo = last
		}
		a.stats.batchesSent += sent
		a.stats.batchesResent += resent
		a.sentHigh = max(a.sentHigh, last)
		a.mu.Unlock()
	}
}

// write writes one message on s with the write timeout.
func (a *Agent) write(s *stream, m wire.Message) error {
	buf := wire.AppendFrame(s.wbuf[:0], m)
	if n := len(buf) - 4; n > a.cfg.MaxFrame {
		return fmt.Errorf("%w: %s of %d bytes", wire.ErrFrameTooLarge, m.Type(), n)
	}
	if cap(buf) <= 4*maxWriteChunk {
		s.wbuf = buf[:0]
	}
	s.conn.SetWriteDeadline(time.Now().Add(a.knobs.writeTimeout))
	_, err := s.conn.Write(buf)
	return err
}
