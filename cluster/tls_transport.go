package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TLS is a server's TLS setup: how its listeners answer and how it dials
// the other servers. The caller builds both (cmd/headroom does, from PEM
// files); the package only uses them.
type TLS struct {
	// Server configures the Raft listener: this server's certificate and,
	// for mutual TLS, ClientAuth tls.RequireAndVerifyClientCert with
	// ClientCAs. With mutual TLS the Raft listener and the server-to-server
	// HTTP handlers (StatsHandler, RemovePeerHandler, KeyringLocalHandler)
	// also require the peer's certificate to name Client.ServerName: only
	// servers replicate and steer one another. (Required)
	Server *tls.Config
	// Client configures the connections this server opens to the others,
	// Raft and HTTP: RootCAs, ServerName (the name every server's
	// certificate carries, verified whatever address was dialled) and this
	// server's certificate, presented as a client certificate. (Required)
	Client *tls.Config
}

func (t *TLS) check() error {
	switch {
	case t.Server == nil || t.Client == nil:
		return errors.New("cluster: TLS needs both a server and a client configuration")
	case len(t.Server.Certificates) == 0 && t.Server.GetCertificate == nil:
		return errors.New("cluster: TLS server configuration without a certificate")
	case t.Client.ServerName == "":
		return errors.New("cluster: TLS client configuration without the servers' name")
	}
	return nil
}

// Mutual reports whether servers require client certificates.
func (t *TLS) Mutual() bool { return t.Server.ClientAuth == tls.RequireAndVerifyClientCert }

// PeerIsServer reports whether the verified certificate a peer presented
// names the servers' name (Client.ServerName).
func (t *TLS) PeerIsServer(cs *tls.ConnectionState) bool {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return false
	}
	return cs.VerifiedChains[0][0].VerifyHostname(t.Client.ServerName) == nil
}

// Limits of the TLS stream layer.
const (
	tlsHandshakeTimeout = 10 * time.Second
	// maxHandshakes bounds the handshakes in flight; connections beyond it
	// are closed at once, so a flood of idle sockets cannot pile up
	// goroutines.
	maxHandshakes = 64
)

// tlsStream is raft's StreamLayer over TLS. Its own loop accepts TCP
// connections and runs each handshake (bounded in time and number) in a
// goroutine; Accept hands raft only connections whose handshake succeeded
// and, with mutual TLS, whose peer is a server. Refused connections are
// logged and closed without raft ever seeing them.
type tlsStream struct {
	ln    net.Listener
	adv   net.Addr
	tls   *TLS
	log   hclog.Logger
	conns chan net.Conn
	slots chan struct{}

	mu        sync.Mutex
	shaking   map[net.Conn]struct{} // handshakes in flight, closed by Close
	done      chan struct{}
	closeOnce sync.Once
}

func newTLSStream(ln net.Listener, adv net.Addr, t *TLS, log hclog.Logger) *tlsStream {
	s := &tlsStream{ln: ln, adv: adv, tls: t, log: log, conns: make(chan net.Conn),
		slots: make(chan struct{}, maxHandshakes), shaking: make(map[net.Conn]struct{}), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

func (s *tlsStream) acceptLoop() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("raft accept", "error", err)
			select {
			case <-s.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case s.slots <- struct{}{}:
			go s.handshake(nc)
		default:
			s.log.Warn("too many raft TLS handshakes in flight; closing a new connection", "remote", nc.RemoteAddr().String())
			nc.Close()
		}
	}
}

func (s *tlsStream) handshake(nc net.Conn) {
	defer func() { <-s.slots }()
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		nc.Close()
		return
	default:
	}
	s.shaking[nc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.shaking, nc)
		s.mu.Unlock()
	}()
	tc := tls.Server(nc, s.tls.Server)
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		select {
		case <-s.done: // closed under its feet by Close
		default:
			s.log.Warn("raft connection refused: TLS handshake failed", "remote", nc.RemoteAddr().String(), "error", err)
		}
		tc.Close()
		return
	}
	if s.tls.Mutual() {
		if cs := tc.ConnectionState(); !s.tls.PeerIsServer(&cs) {
			s.log.Warn("raft connection refused: the client certificate does not name a server",
				"remote", nc.RemoteAddr().String(), "want", s.tls.Client.ServerName)
			tc.Close()
			return
		}
	}
	select {
	case s.conns <- tc:
	case <-s.done:
		tc.Close()
	}
}

// Accept returns the next connection that passed the handshake.
func (s *tlsStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *tlsStream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.done)
		for nc := range s.shaking {
			nc.Close()
		}
		s.mu.Unlock()
		err = s.ln.Close()
	})
	return err
}

func (s *tlsStream) Addr() net.Addr { return s.adv }

// Dial connects to another server and completes the handshake within
// timeout, verifying that its certificate names the servers' name.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), s.tls.Client)
}

// serversOnly lets only other servers call h when servers require client
// certificates (403 for anyone else); without mutual TLS it is h.
func (n *Node) serversOnly(h http.Handler) http.Handler {
	t := n.cfg.TLS
	if t == nil || !t.Mutual() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.PeerIsServer(r.TLS) {
			writeJSON(w, http.StatusForbidden, errorBody{Error: "only servers may call " + r.URL.Path + ": the client certificate does not name " + t.Client.ServerName})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// newHTTPClient returns the transport and client servers call each other's
// HTTP APIs with, and the URL scheme to use.
func newHTTPClient(t *TLS) (*http.Transport, *http.Client, string) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	scheme := "http"
	if t != nil {
		tr.TLSClientConfig = t.Client.Clone()
		scheme = "https"
	}
	return tr, &http.Client{Timeout: 2 * time.Second, Transport: tr}, scheme
}
