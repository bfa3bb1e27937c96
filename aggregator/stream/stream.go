package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/loop"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

const (
	helloTimeout  = 10 * time.Second
	idleTimeout   = 30 * time.Second // agents ping every few seconds
	writeTimeout  = 10 * time.Second
	pushInterval  = 100 * time.Millisecond
	outQueue      = 4096
	maxFullCounts = 1 << 20 // entries of one FullState, all frames together
	maxIDLen      = plans.MaxIDLen
	// maxStreams bounds the open connections on the wire port; more are
	// closed at once.
	maxStreams = 10_000
	// An agent may hold sessions of at most maxAgentTenants tenants and at
	// most maxAgentSessions sessions; a batch or full state beyond is
	// refused (too-large) before it reaches the log.
	maxAgentTenants  = 100_000
	MaxAgentSessions = 10_000_000
	maxTenantIDLen   = plans.MaxTenantIDLen
)

// validID reports whether s is a usable agent, node or tenant id.
func validID(s string, max int) bool { return plans.ValidateID("", s, max) == nil }

// streams accepts agent streams and pushes tenant state to them.
type streams struct {
	log      hclog.Logger
	fsm      fsm.Reader
	raft     *raft.Raft
	prop     *proposer
	maxFrame int
	selfAddr string // advertised wire address
	selfID   string // node id
	live     *liveness
	// servers returns the leader's wire address ("" if unknown) and the
	// wire addresses of every live server, for Redirect and Welcome.
	servers func() (leader string, all []string)
	// ready reports whether this server has applied all that was
	// committed before it (see Server.Ready).
	ready func() bool
	// acl requires Hello to carry the secret of an agent or operator
	// token; authFails slows down guessing.
	acl       bool
	authFails AuthLimiter
	stats     streamStats // for metrics

	mu      sync.Mutex
	conns   map[*agentConn]struct{}
	byAgent map[string]*agentConn // the latest stream of each agent
}

// tenantsChanged marks tenants dirty on every stream; called after Apply.
func (st *streams) tenantsChanged(names []string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for c := range st.conns {
		c.markDirty(names)
	}
}

func (st *streams) serve(ctx context.Context, ln net.Listener) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = make(map[net.Conn]struct{})
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for nc := range open {
			nc.Close()
		}
	})
	defer stop()
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		loop.Every(ctx, 250*time.Millisecond, st.dropWhenFollower)
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			st.log.Warn("accept", "error", err)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			nc.Close()
			return
		}
		if len(open) >= maxStreams {
			mu.Unlock()
			st.log.Warn("too many open agent connections; refusing one", "limit", maxStreams, "remote", nc.RemoteAddr().String())
			nc.Close()
			continue
		}
		open[nc] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(open, nc)
				mu.Unlock()
			}()
			c := &agentConn{st: st, nc: nc, out: make(chan wire.Message, outQueue), closed: make(chan struct{})}
			c.log = st.log.With("remote", nc.RemoteAddr().String())
			if err := c.run(ctx); err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				c.log.Info("agent stream closed", "agent", c.agentID(), "error", err)
			}
		}()
	}
}

// dropWhenFollower closes every agent stream of a server that is no longer
// the leader, so its agents find the new one instead of sending batches
// that can only fail (or reading tenant state that no longer moves).
func (st *streams) dropWhenFollower() {
	if st.raft.State() == raft.Leader {
		st.dropRevoked()
		return
	}
	st.mu.Lock()
	n := len(st.conns)
	for c := range st.conns {
		c.close()
	}
	st.mu.Unlock()
	if n > 0 {
		st.log.Info("not the leader any more: closed agent streams", "streams", n)
	}
}

// dropRevoked closes the streams whose token was revoked.
func (st *streams) dropRevoked() {
	if !st.acl {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.fsm.Read(func(s fsm.View) {
		for c := range st.conns {
			if c.token != "" && s.Token(c.token) == nil {
				c.log.Info("token revoked: closing agent stream", "accessor", c.token)
				c.close()
			}
		}
	})
}

// agentConn is one agent's stream.
type agentConn struct {
	st     *streams
	nc     net.Conn
	log    hclog.Logger
	hello  *wire.Hello
	region string
	token  string // accessor of the token the stream opened with (ACLs on)
	// recvSeq is the highest batch sequence number received on the stream,
	// ackSeq the highest acknowledged: the difference is what the agent
	// sent that the cluster has not yet acknowledged.
	recvSeq, ackSeq atomic.Uint64

	out       chan wire.Message
	closeOnce sync.Once
	closed    chan struct{}

	dirtyMu  sync.Mutex
	dirty    map[string]struct{}
	allDirty bool

	parts   []*wire.FullState
	partLen int
}

func (c *agentConn) agentID() string {
	if c.hello == nil {
		return ""
	}
	return c.hello.AgentID
}

func (c *agentConn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
}

// send queues m for the writer. It never blocks: a stream whose queue is
// full is not reading, and is closed (the agent resends after reconnecting).
func (c *agentConn) send(m wire.Message) {
	select {
	case c.out <- m:
	case <-c.closed:
	default:
		c.log.Warn("agent not reading its stream; closing it", "agent", c.agentID())
		c.close()
	}
}

func (c *agentConn) markDirty(names []string) {
	c.dirtyMu.Lock()
	defer c.dirtyMu.Unlock()
	if c.allDirty {
		return
	}
	if len(c.dirty)+len(names) > 100_000 {
		c.allDirty, c.dirty = true, nil
		return
	}
	if c.dirty == nil {
		c.dirty = make(map[string]struct{}, len(names))
	}
	for _, n := range names {
		c.dirty[n] = struct{}{}
	}
}

func (c *agentConn) run(ctx context.Context) error {
	defer c.close()
	r := wire.NewReader(c.nc, c.st.maxFrame)
	c.nc.SetReadDeadline(time.Now().Add(helloTimeout))
	m, err := r.Read()
	if err != nil {
		return fmt.Errorf("reading hello: %w", err)
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		c.writeNow(&wire.Error{Code: wire.CodeBadMessage, Message: fmt.Sprintf("expected hello, got message type %d", m.Type())})
		return fmt.Errorf("first message is type %d, not hello", m.Type())
	}
	c.st.live.heard(h.AgentID)
	reply, ok := c.greet(h)
	if err := c.writeNow(reply); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("hello refused: %v", reply)
	}
	c.hello = h
	c.log = c.log.With("agent", h.AgentID)
	for _, l := range h.Labels {
		if l.Key == "region" {
			c.region = l.Value
		}
	}
	c.st.mu.Lock()
	c.st.conns[c] = struct{}{}
	c.st.byAgent[h.AgentID] = c
	c.st.mu.Unlock()
	c.st.stats.accepted.Add(1)
	defer func() {
		c.st.mu.Lock()
		delete(c.st.conns, c)
		if c.st.byAgent[h.AgentID] == c {
			delete(c.st.byAgent, h.AgentID)
		}
		c.st.mu.Unlock()
	}()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.writeLoop(ctx)
	}()
	defer wg.Wait()
	defer c.close()
	for {
		c.nc.SetReadDeadline(time.Now().Add(idleTimeout))
		m, err := r.Read()
		if err != nil {
			return err
		}
		c.st.live.heard(h.AgentID)
		if err := c.handle(ctx, m); err != nil {
			c.writeErrorAndClose(err)
			// The writer closes the stream once the Error is out (or
			// fails); give it a moment so the agent learns why.
			select {
			case <-c.closed:
			case <-time.After(writeTimeout):
			}
			return err
		}
	}
}

// greet validates a Hello and answers Welcome (ok), or Redirect or Error
// (not ok: the stream ends after the answer). Only the leader takes
// streams: a follower redirects the agent to the leader it knows.
func (c *agentConn) greet(h *wire.Hello) (reply wire.Message, ok bool) {
	if h.Version != wire.ProtocolVersion {
		return &wire.Error{Code: wire.CodeVersion, Message: fmt.Sprintf("protocol version %d not supported; this server speaks %d", h.Version, wire.ProtocolVersion)}, false
	}
	if !validID(h.AgentID, maxIDLen) || h.Epoch == 0 {
		return &wire.Error{Code: wire.CodeBadMessage, Message: "hello needs an agent id (1-128 printable characters) and a non-zero epoch"}, false
	}
	if c.st.acl {
		if e := c.authenticate(h.Token); e != nil {
			return e, false
		}
	}
	leader, all := c.st.servers()
	if c.st.raft.State() == raft.Leader && !c.st.ready() {
		return &wire.Error{Code: wire.CodeNotLeader, Message: "new leader still applying what was committed before it; retry"}, false
	}
	if c.st.raft.State() != raft.Leader {
		if leader != "" && leader != c.st.selfAddr {
			return &wire.Redirect{Leader: leader, Servers: all}, false
		}
		return &wire.Error{Code: wire.CodeNotLeader, Message: "this server is not the leader and knows none"}, false
	}
	w := &wire.Welcome{ServerID: c.st.selfID, Version: wire.ProtocolVersion, Servers: all, Classes: fsm.ClassNames}
	var old *wire.Error
	// Epochs are the agent's clock when it made its memory: an unknown
	// agent whose memory is older than the forget period may have been
	// forgotten with its dedup state, so it must start a new epoch.
	forgotten := c.st.live.now().Add(-c.st.live.forget).UnixNano()
	c.st.fsm.Read(func(s fsm.View) {
		rec := s.Agent(h.AgentID)
		switch {
		case rec == nil && h.Epoch < uint64(max(forgotten, 0)):
			old = &wire.Error{Code: wire.CodeOldEpoch, Message: "the cluster holds nothing for this agent and its epoch is older than the forget period: start a new epoch"}
		case rec == nil || h.Epoch > rec.Epoch:
			w.NeedFullState = true
		case h.Epoch < rec.Epoch:
			old = &wire.Error{Code: wire.CodeOldEpoch, Message: fmt.Sprintf("epoch %d is older than epoch %d already seen for this agent", h.Epoch, rec.Epoch), LastSeq: rec.LastSeq}
		default:
			w.LastSeq, w.NeedFullState = rec.LastSeq, rec.Expired
		}
	})
	if old != nil {
		return old, false
	}
	return w, true
}

// authenticate checks a Hello's token: an agent or operator token's
// secret, from an address not blocked for failing too often.
func (c *agentConn) authenticate(secret string) *wire.Error {
	host, _, err := net.SplitHostPort(c.nc.RemoteAddr().String())
	if err != nil {
		host = c.nc.RemoteAddr().String()
	}
	if c.st.authFails.Blocked(host) {
		return &wire.Error{Code: wire.CodeUnauthenticated, Message: "too many failed authentications from this address; retry later"}
	}
	var role, acc string
	c.st.fsm.Read(func(s fsm.View) {
		if tk := s.TokenBySecret(secret); tk != nil {
			role, acc = tk.Role, tk.Accessor
		}
	})
	switch role {
	case fsm.RoleAgent, fsm.RoleOperator:
		c.token = acc
		return nil
	case "":
		c.st.authFails.Fail(host)
		return &wire.Error{Code: wire.CodeUnauthenticated, Message: "missing, unknown or revoked token"}
	}
	return &wire.Error{Code: wire.CodeUnauthenticated, Message: "a " + role + " token may not open an agent stream"}
}

// writeNow writes m directly; only before the writer goroutine starts.
func (c *agentConn) writeNow(m wire.Message) error {
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return wire.WriteFrame(c.nc, m)
}

// protocolError is a message the agent sent that the stream cannot accept.
type protocolError struct {
	code wire.ErrorCode
	msg  string
}

func (e *protocolError) Error() string { return e.msg }

func badMessage(format string, args ...any) error {
	return &protocolError{code: wire.CodeBadMessage, msg: fmt.Sprintf(format, args...)}
}

func (c *agentConn) writeErrorAndClose(err error) {
	var pe *protocolError
	if errors.As(err, &pe) {
		c.send(&wire.Error{Code: pe.code, Message: pe.msg})
	} else {
		c.send(&wire.Error{Code: wire.CodeInternal, Message: err.Error()})
	}
}

func (c *agentConn) handle(ctx context.Context, m wire.Message) error {
	switch m := m.(type) {
	case *wire.DeltaBatch:
		if m.AgentID != c.hello.AgentID || m.Epoch != c.hello.Epoch {
			return badMessage("batch for agent %q epoch %d on the stream of agent %q epoch %d", m.AgentID, m.Epoch, c.hello.AgentID, c.hello.Epoch)
		}
		if err := checkEntries(m.Entries); err != nil {
			return err
		}
		if err := checkUsers(m.Users); err != nil {
			return err
		}
		if err := c.checkAgentLimits(m.Entries, nil); err != nil {
			return err
		}
		return c.propose(ctx, fsm.ItemDelta, m, len(m.Entries), m.Seq)
	case *wire.FullState:
		return c.fullPart(ctx, m)
	case *wire.GrantAsk:
		return c.grantAsk(ctx, m)
	case *wire.Ping:
		c.send(&wire.Pong{Nonce: m.Nonce})
	case *wire.Pong:
	default:
		return badMessage("an agent may not send message type %d", m.Type())
	}
	return nil
}

// maxGrantWants bounds the wants of one GrantAsk.
const maxGrantWants = 100_000

// grantAsk proposes an agent's GrantAsk and answers it with Grant once
// committed; pools it left short send Recall to agents holding unused
// shares of them.
func (c *agentConn) grantAsk(ctx context.Context, g *wire.GrantAsk) error {
	if g.AgentID != c.hello.AgentID {
		return badMessage("grant ask of agent %q on the stream of agent %q", g.AgentID, c.hello.AgentID)
	}
	if len(g.Wants) > maxGrantWants {
		return &protocolError{code: wire.CodeTooLarge, msg: fmt.Sprintf("grant ask of %d wants, over %d", len(g.Wants), maxGrantWants)}
	}
	for i := range g.Wants {
		w := &g.Wants[i]
		if err := plans.ValidateTenantID(w.Tenant); err != nil {
			return badMessage("want %d: %v", i, err)
		}
		if w.Class != "" {
			if _, err := plans.ParseClass(w.Class); err != nil {
				return badMessage("want %d: %v", i, err)
			}
		}
	}
	st := c.st
	pr := &proposal{
		item:    fsm.AgentItem{Kind: fsm.ItemGrant, Body: wire.Append(nil, g)},
		entries: len(g.Wants),
		done: func(res fsm.ItemResult, index uint64, err error) {
			if err != nil || res.Status != fsm.StatusApplied {
				c.send(resultMessage(res, index, err, 0))
				return
			}
			c.send(&wire.Grant{ReqID: g.ReqID, LeaseMillis: uint64(st.prop.lease / time.Millisecond), Shares: res.Shares})
			var targets map[string][]wire.GrantPool
			st.fsm.Read(func(s fsm.View) {
				targets = fsm.RecallTargets(s, g.AgentID, g.Wants, res.Shares, int64(st.prop.margin))
			})
			if len(targets) == 0 {
				return
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			for id, pools := range targets {
				if other := st.byAgent[id]; other != nil {
					other.send(&wire.Recall{Pools: pools})
				}
			}
		},
	}
	return st.prop.submit(ctx, pr)
}

// checkAgentLimits refuses a batch (entries added to what the cluster
// holds of the agent) or a full state (counts replacing it) that would
// leave the agent with sessions of more than maxAgentTenants tenants or
// more than maxAgentSessions sessions.
func (c *agentConn) checkAgentLimits(entries []wire.DeltaEntry, counts []wire.CountEntry) error {
	tenants := make(map[string]struct{})
	var sessions uint64
	if counts != nil {
		for _, e := range counts {
			if e.Open > 0 {
				tenants[e.Tenant] = struct{}{}
			}
			sessions += min(e.Open, MaxAgentSessions+1)
		}
	} else {
		held := 0
		c.st.fsm.Read(func(s fsm.View) {
			if rec := s.Agent(c.hello.AgentID); rec != nil {
				held = len(rec.Counts)
				for _, cc := range rec.Counts {
					sessions += cc.Total()
				}
				for _, e := range entries {
					if _, ok := rec.Counts[e.Tenant]; !ok && e.Opened > 0 {
						tenants[e.Tenant] = struct{}{}
					}
				}
			}
		})
		for _, e := range entries {
			sessions += min(e.Opened, MaxAgentSessions+1)
		}
		if held+len(tenants) > maxAgentTenants {
			return &protocolError{code: wire.CodeTooLarge, msg: fmt.Sprintf("an agent may hold sessions of at most %d tenants", maxAgentTenants)}
		}
	}
	if len(tenants) > maxAgentTenants {
		return &protocolError{code: wire.CodeTooLarge, msg: fmt.Sprintf("an agent may hold sessions of at most %d tenants", maxAgentTenants)}
	}
	if sessions > MaxAgentSessions {
		return &protocolError{code: wire.CodeTooLarge, msg: fmt.Sprintf("an agent may hold at most %d sessions", MaxAgentSessions)}
	}
	return nil
}

func checkUsers(sets []wire.UserSet) error {
	for i := range sets {
		if err := plans.ValidateTenantID(sets[i].Tenant); err != nil {
			return badMessage("user set %d: %v", i, err)
		}
		if n := len(sets[i].Hashes); n > fsm.MaxUserHashes {
			return badMessage("user set %d: %d hashes, over %d", i, n, fsm.MaxUserHashes)
		}
	}
	return nil
}

func checkEntries(es []wire.DeltaEntry) error {
	for i := range es {
		e := &es[i]
		if err := plans.ValidateTenantID(e.Tenant); err != nil {
			return badMessage("entry %d: %v", i, err)
		}
		if _, err := plans.ParseClass(e.Class); err != nil {
			return badMessage("entry %d: %v", i, err)
		}
	}
	return nil
}

func (c *agentConn) fullPart(ctx context.Context, f *wire.FullState) error {
	if f.AgentID != c.hello.AgentID || f.Epoch != c.hello.Epoch {
		return badMessage("full state for agent %q epoch %d on the stream of agent %q epoch %d", f.AgentID, f.Epoch, c.hello.AgentID, c.hello.Epoch)
	}
	if len(c.parts) > 0 && c.parts[0].Seq != f.Seq {
		return badMessage("full state part for seq %d while assembling seq %d", f.Seq, c.parts[0].Seq)
	}
	c.partLen += len(f.Counts) + len(f.Usage) + len(f.Peaks)
	if c.partLen > maxFullCounts {
		return &protocolError{code: wire.CodeTooLarge, msg: fmt.Sprintf("full state over %d entries", maxFullCounts)}
	}
	for i, e := range f.Counts {
		if err := plans.ValidateTenantID(e.Tenant); err != nil {
			return badMessage("count %d: %v", i, err)
		}
		if _, err := plans.ParseClass(e.Class); err != nil {
			return badMessage("count %d: %v", i, err)
		}
	}
	if err := checkEntries(f.Usage); err != nil {
		return err
	}
	if err := checkUsers(f.Users); err != nil {
		return err
	}
	c.parts = append(c.parts, f)
	if f.More {
		return nil
	}
	whole := *c.parts[0]
	whole.More = false
	for _, p := range c.parts[1:] {
		whole.Counts = append(whole.Counts, p.Counts...)
		whole.Usage = append(whole.Usage, p.Usage...)
		whole.Peaks = append(whole.Peaks, p.Peaks...)
		whole.Users = append(whole.Users, p.Users...)
	}
	c.parts, c.partLen = nil, 0
	if err := c.checkAgentLimits(nil, whole.Counts); err != nil {
		return err
	}
	return c.propose(ctx, fsm.ItemFull, &whole, len(whole.Counts)+len(whole.Usage), whole.Seq)
}

func (c *agentConn) propose(ctx context.Context, kind fsm.ItemKind, m wire.Message, entries int, seq uint64) error {
	raise(&c.recvSeq, seq)
	pr := &proposal{
		item:    fsm.AgentItem{Kind: kind, Region: c.region, Body: wire.Append(nil, m)},
		entries: entries,
		done: func(res fsm.ItemResult, index uint64, err error) {
			c.st.stats.result(kind, res, err)
			if err == nil && (res.Status == fsm.StatusApplied || res.Status == fsm.StatusDuplicate) {
				raise(&c.ackSeq, res.LastSeq)
			}
			c.send(resultMessage(res, index, err, seq))
		},
	}
	return c.st.prop.submit(ctx, pr)
}

// raise sets v to max(v, n).
func raise(v *atomic.Uint64, n uint64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// unacked returns, for an agent with a stream to this server, the batches
// it sent that the cluster has not acknowledged yet.
func (st *streams) unacked(agentID string) (uint64, bool) {
	st.mu.Lock()
	c := st.byAgent[agentID]
	st.mu.Unlock()
	if c == nil {
		return 0, false
	}
	recv, ack := c.recvSeq.Load(), c.ackSeq.Load()
	if recv <= ack {
		return 0, true
	}
	return recv - ack, true
}

// resultMessage is what the agent is told about one of its messages.
func resultMessage(res fsm.ItemResult, index uint64, err error, seq uint64) wire.Message {
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			return &wire.Error{Code: wire.CodeNotLeader, Message: err.Error()}
		}
		return &wire.Error{Code: wire.CodeInternal, Message: err.Error()}
	}
	switch res.Status {
	case fsm.StatusApplied, fsm.StatusDuplicate:
		return &wire.Ack{Seq: res.LastSeq, Index: index}
	case fsm.StatusGap:
		return &wire.Error{Code: wire.CodeSeqGap, Message: fmt.Sprintf("seq %d skips ahead of %d", seq, res.LastSeq), LastSeq: res.LastSeq}
	case fsm.StatusNeedFull:
		return &wire.Error{Code: wire.CodeNeedFullState, Message: "the cluster holds nothing for this epoch: send full state"}
	case fsm.StatusOldEpoch:
		return &wire.Error{Code: wire.CodeOldEpoch, Message: "a newer epoch of this agent has been seen", LastSeq: res.LastSeq}
	}
	return &wire.Error{Code: wire.CodeBadMessage, Message: "message could not be applied"}
}

// writeLoop sends queued messages and, every pushInterval, the tenants that
// changed since the last push. A write error or a fatal Error closes the
// stream.
func (c *agentConn) writeLoop(ctx context.Context) {
	// The full set goes first; the stream is registered for changes
	// before it is read, so nothing falls between the two.
	if err := c.push(true); err != nil {
		c.close()
		return
	}
	tick := time.NewTicker(pushInterval)
	defer tick.Stop()
	for {
		select {
		case m := <-c.out:
			if err := c.write(m); err != nil {
				c.close()
				return
			}
			if e, ok := m.(*wire.Error); ok && e.Code != wire.CodeSeqGap {
				c.close()
				return
			}
		case <-tick.C:
			if err := c.push(false); err != nil {
				c.close()
				return
			}
		case <-c.closed:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (c *agentConn) write(m wire.Message) error {
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return wire.WriteFrame(c.nc, m)
}

// push sends the dirty tenants (all of them when full is set).
func (c *agentConn) push(full bool) error {
	c.dirtyMu.Lock()
	all, names := c.allDirty || full, c.dirty
	c.allDirty, c.dirty = false, nil
	c.dirtyMu.Unlock()
	if !all && len(names) == 0 {
		return nil
	}
	var infos []wire.TenantInfo
	c.st.fsm.Read(func(s fsm.View) {
		if all {
			infos = make([]wire.TenantInfo, 0, s.NumTenants())
			for _, t := range s.Tenants() {
				if info, ok := fsm.TenantInfo(s, t); ok {
					infos = append(infos, info)
				}
			}
			return
		}
		for n := range names {
			if t := s.Tenant(n); t != nil {
				if info, ok := fsm.TenantInfo(s, t); ok {
					infos = append(infos, info)
				}
			}
		}
	})
	if !full && len(infos) == 0 {
		return nil
	}
	for _, part := range wire.SplitTenantState(wire.TenantState{Full: full, Tenants: infos}, c.st.maxFrame-1024) {
		if err := c.write(part); err != nil {
			return err
		}
	}
	return nil
}

// streamStats counts agent stream traffic on this server.
type streamStats struct {
	accepted atomic.Uint64 // streams welcomed
	// messages counts agent messages (deltas, full states) by kind and
	// outcome: index [kind-1][status], status 0 for a failed commit.
	messages [2][fsm.StatusInvalid + 1]atomic.Uint64
}

// result counts the outcome of one proposed agent message.
func (s *streamStats) result(kind fsm.ItemKind, res fsm.ItemResult, err error) {
	if kind != fsm.ItemDelta && kind != fsm.ItemFull {
		return
	}
	st := res.Status
	if err != nil || st > fsm.StatusInvalid {
		st = 0
	}
	s.messages[kind-1][st].Add(1)
}
