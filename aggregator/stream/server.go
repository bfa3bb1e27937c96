package stream

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// AuthLimiter slows down guessing of secrets: the API's ACL gate and the
// stream server's Hello share one, so an address that fails on one is
// slowed on both. Safe for concurrent use.
type AuthLimiter interface {
	// Blocked reports whether host has failed too often lately.
	Blocked(host string) bool
	// Fail counts a failed authentication of host.
	Fail(host string)
}

// streamConfig configures the agent stream server. Fields are required
// unless marked optional.
type Config struct {
	Log  hclog.Logger
	FSM  fsm.Reader
	Raft *raft.Raft
	// Clock stamps the entries the server proposes (shared with the rest of
	// the server, so that stamps never go back).
	Clock *Clock
	// Now is the clock liveness measures silences with.
	Now func() time.Time
	// DefaultPlan puts tenants first seen in agent batches on this plan.
	// (Optional)
	DefaultPlan string
	// GrantLease and GrantMargin are written into every entry of agent
	// messages (see fsm's grants.go).
	GrantLease, GrantMargin time.Duration
	// AgentGrace is how long an agent may stay silent before the leader
	// expires its contribution; AgentForget how long an expired agent is
	// remembered.
	AgentGrace, AgentForget time.Duration
	// MaxFrame limits one wire frame.
	MaxFrame int
	// SelfAddr is this server's advertised wire address, SelfID its node id.
	SelfAddr, SelfID string
	// Servers returns the leader's wire address ("" if unknown) and the
	// wire addresses of every live server, for Redirect and Welcome.
	Servers func() (leader string, all []string)
	// Ready reports whether this server has applied all that was committed
	// before it (the aggregator's Server.Ready).
	Ready func() bool
	// ACL requires Hello to carry the secret of an agent or operator token;
	// AuthFails slows down guessing.
	ACL       bool
	AuthFails AuthLimiter
	// ObserveCommit is told how long each entry took from proposal to
	// result, ObserveGrouped how many agent messages it held. (Optional)
	ObserveCommit  func(time.Duration)
	ObserveGrouped func(n int)
}

// Server is the agent stream server: it accepts agents' streams,
// proposes their messages to the log grouped into entries, answers with the
// results and pushes the tenants' state back; on the leader it expires
// silent agents.
type Server struct {
	st   *streams
	prop *proposer
	live *liveness
}

// newStreamServer returns a stream server; Run serves it.
func New(cfg Config) *Server {
	prop := newProposer(cfg.Raft, cfg.Clock, cfg.DefaultPlan)
	prop.lease, prop.margin = cfg.GrantLease, cfg.GrantMargin
	prop.observe, prop.grouped = cfg.ObserveCommit, cfg.ObserveGrouped
	live := &liveness{
		log: cfg.Log.Named("liveness"), raft: cfg.Raft, fsm: cfg.FSM, clock: cfg.Clock, now: cfg.Now,
		grace: cfg.AgentGrace, forget: cfg.AgentForget, seen: make(map[string]time.Time),
	}
	st := &streams{
		log: cfg.Log.Named("stream"), fsm: cfg.FSM, raft: cfg.Raft, prop: prop,
		maxFrame: cfg.MaxFrame, selfAddr: cfg.SelfAddr, selfID: cfg.SelfID, live: live, servers: cfg.Servers,
		ready: cfg.Ready, conns: make(map[*agentConn]struct{}), byAgent: make(map[string]*agentConn),
		acl: cfg.ACL, authFails: cfg.AuthFails,
	}
	return &Server{st: st, prop: prop, live: live}
}

// Run serves agent streams on ln, proposes their messages and, on the
// leader, expires silent agents, until ctx ends; it returns once all of it
// has stopped. It closes ln.
func (s *Server) Run(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.prop.run(ctx) }()
	go func() { defer wg.Done(); s.live.run(ctx) }()
	s.st.serve(ctx, ln)
	wg.Wait()
}

// TenantsChanged marks tenants dirty on every stream, to be pushed to the
// agents; the FSM's OnChange hook calls it. It does not block.
func (s *Server) TenantsChanged(names []string) { s.st.tenantsChanged(names) }

// Agents is the number of agent streams open on this server.
func (s *Server) Agents() int {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return len(s.st.conns)
}

// Unacked is how many messages of agent's stream this server has received
// and not yet answered; false when the agent has no stream here.
func (s *Server) Unacked(agent string) (uint64, bool) { return s.st.unacked(agent) }

// Traffic is what metrics count of the streams: the streams welcomed and the
// agent messages by kind (delta, full state) and outcome (index status, 0
// for a failed commit).
func (s *Server) Traffic() (accepted uint64, messages [2][fsm.StatusInvalid + 1]uint64) {
	accepted = s.st.stats.accepted.Load()
	for k := range messages {
		for st := range messages[k] {
			messages[k][st] = s.st.stats.messages[k][st].Load()
		}
	}
	return accepted, messages
}
