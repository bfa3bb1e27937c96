package api

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/headroom-rtc/headroom/cluster"
)

// security is a server's TLS state and what it exposes unprotected.
type security struct {
	scheme string            // of the other servers' HTTP APIs: http or https
	proxy  http.RoundTripper // forwards requests to the leader

	mu       sync.Mutex
	insecure []string
}

// initSecurity prepares the transport that forwards to the leader, and logs
// a warning for each listener reachable beyond this machine without
// protection (see Insecure). Called by New before the listeners serve (New
// has wrapped them in TLS when configured: tlsListener).
func (s *Server) initSecurity() {
	s.sec.scheme, s.sec.proxy = "http", http.DefaultTransport
	if t := s.cfg.TLS; t != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = t.Client.Clone()
		s.sec.scheme, s.sec.proxy = "https", tr
	}
	var notes []string
	for _, l := range []struct{ name, addr string }{{"http", s.HTTPAddr()}, {"wire", s.WireAddr()}} {
		if s.cfg.TLS == nil && !cluster.IsLoopback(l.addr) {
			notes = append(notes, fmt.Sprintf("%s plaintext on %s", l.name, l.addr))
		}
	}
	notes = append(notes, s.node.Insecure()...)
	if !s.cfg.ACL && !cluster.IsLoopback(s.HTTPAddr()) {
		notes = append(notes, fmt.Sprintf("ACLs off on %s: anyone who reaches it can change plans and read every tenant (--acl)", s.HTTPAddr()))
	}
	for _, n := range notes {
		s.log.Warn("INSECURE: " + n + ": anyone who can reach it can read or forge this traffic (see the README, Security)")
	}
	s.AddInsecure(notes...)
}

// AddInsecure records more of what the server exposes unprotected, for
// GET /v1/status.
func (s *Server) AddInsecure(notes ...string) {
	s.sec.mu.Lock()
	defer s.sec.mu.Unlock()
	s.sec.insecure = append(s.sec.insecure, notes...)
}

// Insecure lists what this server exposes beyond its own machine without
// protection (empty when nothing): a listener on a non-loopback address
// in plaintext, Raft taking peers without client certificates, gossip
// without encryption. GET /v1/status shows it as "insecure".
func (s *Server) Insecure() []string {
	s.sec.mu.Lock()
	defer s.sec.mu.Unlock()
	return append([]string{}, s.sec.insecure...)
}
