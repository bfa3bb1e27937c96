// Package agenttest is a stand-in for the aggregator cluster, for tests and
// examples of code that embeds an agent (connectors, media servers in Go):
// it speaks the server side of the real wire protocol on a loopback port,
// pushes the tenant plans it is given, acknowledges every batch, and adds up
// what the agent shipped, so a test can check what was metered.
//
// It is one server, always the leader, with no Raft and no grants: plans in
// strict mode are not supported (use soft or meter; an agent alone on a
// soft plan enforces its ceiling from its own count). Use the real
// aggregator (cmd/headroom's process tests) for anything beyond that.
package agenttest

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Server is a running stand-in. Its methods are safe for concurrent use.
type Server struct {
	ln net.Listener

	mu      sync.Mutex
	tenants []wire.TenantInfo
	conns   map[net.Conn]bool
	usage   map[[2]string]*Usage // tenant, class
	batches int
	closed  bool
	wg      sync.WaitGroup
}

// Usage is what the agents shipped for one tenant and class.
type Usage struct {
	Opened, Closed uint64
	// Open is the current open count (from FullState counts and deltas).
	Open          int64
	SessionMicros uint64
	Refused       uint64
}

// Seconds is the session time shipped, in seconds.
func (u Usage) Seconds() float64 { return float64(u.SessionMicros) / 1e6 }

// NewServer listens on 127.0.0.1 (a port of the kernel's choosing) and
// pushes tenants to every agent that connects.
func NewServer(tenants ...wire.TenantInfo) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, tenants: tenants, conns: map[net.Conn]bool{}, usage: map[[2]string]*Usage{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the wire address to give the agent (Config.Servers).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and waits for its goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// SetTenants replaces the tenants' plans and pushes them to the agents
// connected.
func (s *Server) SetTenants(tenants ...wire.TenantInfo) {
	s.mu.Lock()
	s.tenants = tenants
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		wire.WriteFrame(c, &wire.TenantState{Full: true, Tenants: tenants})
	}
}

// Usage returns what was shipped for tenant and class.
func (s *Server) Usage(tenant, class string) Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.usage[[2]string{tenant, class}]; u != nil {
		return *u
	}
	return Usage{}
}

// Open is the open count of tenant, all classes, as the agents reported it.
func (s *Server) Open(tenant string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for k, u := range s.usage {
		if k[0] == tenant {
			n += u.Open
		}
	}
	return n
}

// Seconds is the session time shipped for tenant, all classes.
func (s *Server) Seconds(tenant string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var micros uint64
	for k, u := range s.usage {
		if k[0] == tenant {
			micros += u.SessionMicros
		}
	}
	return float64(micros) / 1e6
}

// Batches is the number of delta batches received.
func (s *Server) Batches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batches
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

// serve runs one agent stream until it ends.
func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	rd := wire.NewReader(bufio.NewReader(c), 0)
	send := func(m wire.Message) error {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return wire.WriteFrame(c, m)
	}
	m, err := rd.Read()
	if err != nil {
		return
	}
	if _, ok := m.(*wire.Hello); !ok {
		send(&wire.Error{Code: wire.CodeBadMessage, Message: "want Hello"})
		return
	}
	s.mu.Lock()
	tenants := s.tenants
	s.mu.Unlock()
	if send(&wire.Welcome{ServerID: "agenttest", Version: wire.ProtocolVersion, NeedFullState: true,
		Servers: []string{s.Addr()}, Classes: classes()}) != nil {
		return
	}
	if send(&wire.TenantState{Full: true, Tenants: tenants}) != nil {
		return
	}
	fullOpen := false // a FullState with More is being read
	for {
		m, err := rd.Read()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *wire.Ping:
			err = send(&wire.Pong{Nonce: m.Nonce})
		case *wire.FullState:
			s.fullState(m, !fullOpen)
			fullOpen = m.More
			if !m.More {
				err = send(&wire.Ack{Seq: m.Seq, Index: 1})
			}
		case *wire.DeltaBatch:
			s.delta(m.Entries, true)
			s.mu.Lock()
			s.batches++
			s.mu.Unlock()
			err = send(&wire.Ack{Seq: m.Seq, Index: 1})
		}
		if err != nil {
			return
		}
	}
}

// fullState replaces the open counts (on its first frame) and adds the
// usage it carries.
func (s *Server) fullState(m *wire.FullState, first bool) {
	s.mu.Lock()
	if first {
		for _, u := range s.usage {
			u.Open = 0
		}
	}
	for _, e := range m.Counts {
		s.cellLocked(e.Tenant, e.Class).Open = int64(e.Open)
	}
	s.mu.Unlock()
	s.delta(m.Usage, false)
}

func (s *Server) delta(es []wire.DeltaEntry, counts bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		u := s.cellLocked(e.Tenant, e.Class)
		u.SessionMicros += e.SessionMicros
		u.Refused += e.Refused
		if counts {
			u.Opened += e.Opened
			u.Closed += e.Closed
			u.Open += int64(e.Opened) - int64(e.Closed)
		}
	}
}

func (s *Server) cellLocked(tenant, class string) *Usage {
	k := [2]string{tenant, class}
	u := s.usage[k]
	if u == nil {
		u = &Usage{}
		s.usage[k] = u
	}
	return u
}

// ErrTimeout is returned by WaitFor when the condition did not hold in time.
var ErrTimeout = errors.New("agenttest: condition did not hold in time")

// WaitFor polls cond every 10 ms until it holds (nil) or limit passes
// (ErrTimeout).
func WaitFor(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// classes are the classes this stand-in counts: all of them, as a server of
// this version does.
func classes() []string {
	out := make([]string, 0, plans.NumClasses)
	for _, c := range plans.AllClasses {
		out = append(out, c.String())
	}
	return out
}
