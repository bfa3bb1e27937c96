package cluster

import (
	"fmt"
	"net"
)

// Insecure lists what this server exposes beyond its own machine without
// protection: Raft in plaintext, or over TLS that asks no client
// certificate (Raft has no other authentication: anyone who reaches it
// could pose as a server), and gossip without encryption. Listeners bound
// to a loopback address are never listed. The aggregator logs each entry
// at start and shows them in its status.
func (n *Node) Insecure() []string {
	var out []string
	switch {
	case IsLoopback(n.raftBind):
	case n.cfg.TLS == nil:
		out = append(out, fmt.Sprintf("raft plaintext on %s", n.raftBind))
	case !n.cfg.TLS.Mutual():
		out = append(out, fmt.Sprintf("raft accepts peers without client certificates on %s (no --tls-verify-incoming)", n.raftBind))
	}
	if n.ml != nil && n.mlKeyring == nil && !IsLoopback(n.gossipBind) {
		out = append(out, fmt.Sprintf("gossip unencrypted on %s", n.gossipBind))
	}
	return out
}

// IsLoopback reports whether a listener's host:port is on a loopback
// address (an unspecified one, 0.0.0.0 or ::, is not).
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
