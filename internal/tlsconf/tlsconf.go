// Package tlsconf builds the TLS configurations of headroom's servers,
// agents and CLI from PEM files, and makes the private CA and certificates
// of `headroom tls`. It imports nothing of headroom's; the packages that
// use TLS (cluster, aggregator, the agent's dialer) take plain
// *tls.Config values built here by cmd/headroom.
//
// # Names
//
// Every server certificate names ServerName ("server.headroom", a DNS
// subject alternative name) whatever host it runs on, and clients verify
// that name rather than the host they dialled: agents learn servers'
// addresses from redirects and gossip as IPs, and one rule serves agents,
// the CLI and servers calling servers alike. An agent or CLI certificate
// (from the same CA) does not carry it, and has only the client-auth key
// usage, so it cannot pose as a server. With VerifyIncoming, servers
// require a client certificate from the CA on every listener, and the Raft
// listener and the server-to-server HTTP calls further require that the
// peer's certificate names ServerName: only servers replicate.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Names carried by the certificates `headroom tls cert create` makes.
const (
	// ServerName is the name every server certificate carries and every
	// client verifies (unless Files.ServerName says otherwise).
	ServerName = "server.headroom"
	AgentName  = "agent.headroom"
	CLIName    = "cli.headroom"
)

// Files names the PEM files of one process and how it uses them.
type Files struct {
	// CA is the PEM file of the certificate authorities that sign the
	// servers' certificates (and, with VerifyIncoming, the clients').
	CA string
	// Cert and Key are this process's certificate (chain) and private key;
	// both or neither.
	Cert, Key string
	// VerifyIncoming makes servers require a client certificate signed by
	// CA. Servers only.
	VerifyIncoming bool
	// ServerName is the name clients require in a server's certificate.
	// (Optional, default ServerName)
	ServerName string
}

// Any reports whether any TLS file is named.
func (f Files) Any() bool { return f.CA != "" || f.Cert != "" || f.Key != "" || f.VerifyIncoming }

// Bundle is a loaded, checked set of files.
type Bundle struct {
	roots          *x509.CertPool // nil: the system's roots (clients only)
	cert           *tls.Certificate
	leaf           *x509.Certificate
	verifyIncoming bool
	serverName     string
}

// LoadServer loads a server's files: certificate, key and CA are all
// required, the certificate must chain to the CA, be valid now, name the
// server name and allow both server and client authentication (servers
// dial one another).
func LoadServer(f Files, now time.Time) (*Bundle, error) {
	switch {
	case f.Cert == "" || f.Key == "":
		return nil, errors.New("a server needs --tls-cert and --tls-key (and --tls-ca)")
	case f.CA == "":
		return nil, errors.New("a server needs --tls-ca: it verifies the other servers with it")
	}
	b, err := load(f, now)
	if err != nil {
		return nil, err
	}
	if err := b.leaf.VerifyHostname(b.serverName); err != nil {
		return nil, fmt.Errorf("--tls-cert %s does not name %q, which the other servers and the clients verify (make it with `headroom tls cert create --server`, or set --tls-server-name everywhere): %v",
			f.Cert, b.serverName, err)
	}
	if !hasUsage(b.leaf, x509.ExtKeyUsageServerAuth) || !hasUsage(b.leaf, x509.ExtKeyUsageClientAuth) {
		return nil, fmt.Errorf("--tls-cert %s: a server certificate must allow both server and client authentication (extended key usage)", f.Cert)
	}
	return b, nil
}

// LoadClient loads an agent's or the CLI's files: without CA the system's
// roots verify the servers; certificate and key (for servers that require
// client certificates) are optional but go together. VerifyIncoming is
// refused.
func LoadClient(f Files, now time.Time) (*Bundle, error) {
	if f.VerifyIncoming {
		return nil, errors.New("--tls-verify-incoming is a server setting")
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	return load(f, now)
}

func load(f Files, now time.Time) (*Bundle, error) {
	b := &Bundle{verifyIncoming: f.VerifyIncoming, serverName: f.ServerName}
	if b.serverName == "" {
		b.serverName = ServerName
	}
	if f.VerifyIncoming && f.CA == "" {
		return nil, errors.New("--tls-verify-incoming needs --tls-ca to verify client certificates with")
	}
	if f.CA != "" {
		pool, err := readCAs(f.CA, now)
		if err != nil {
			return nil, err
		}
		b.roots = pool
	}
	if f.Cert == "" {
		return b, nil
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", f.Cert, f.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--tls-cert %s: %w", f.Cert, err)
		}
	}
	if err := checkValidity(leaf, now); err != nil {
		return nil, fmt.Errorf("--tls-cert %s: %w", f.Cert, err)
	}
	if b.roots != nil {
		inter := x509.NewCertPool()
		for _, der := range cert.Certificate[1:] {
			if c, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(c)
			}
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: b.roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s is not signed by --tls-ca %s: %w", f.Cert, f.CA, err)
		}
	}
	b.cert, b.leaf = &cert, leaf
	return b, nil
}

// readCAs reads every certificate of a PEM file into a pool; a file without
// one, or with anything but certificates, is an error.
func readCAs(path string, now time.Time) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--tls-ca %s: holds a %q block; want certificates only", path, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca %s: %w", path, err)
		}
		if err := checkValidity(c, now); err != nil {
			return nil, fmt.Errorf("--tls-ca %s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate found", path)
	}
	return pool, nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %q is not valid before %s", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	return slices.Contains(c.ExtKeyUsage, u) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// ServerName is the name clients require in a server's certificate.
func (b *Bundle) ServerName() string { return b.serverName }

// VerifyIncoming reports whether the server requires client certificates.
func (b *Bundle) VerifyIncoming() bool { return b.verifyIncoming }

// NotAfter is when this process's certificate expires (zero without one).
func (b *Bundle) NotAfter() time.Time {
	if b.leaf == nil {
		return time.Time{}
	}
	return b.leaf.NotAfter
}

// Server returns the configuration of a server's listeners: its
// certificate, and client certificates required (VerifyIncoming) or else
// verified when given. Each call returns a new value.
func (b *Bundle) Server() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ClientCAs: b.roots, ClientAuth: tls.VerifyClientCertIfGiven}
	if b.verifyIncoming {
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if b.cert != nil {
		c.Certificates = []tls.Certificate{*b.cert}
	}
	return c
}

// Client returns the configuration for dialing servers: the CA's roots, the
// server name to verify, and this process's certificate if it has one.
// Each call returns a new value.
func (b *Bundle) Client() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: b.roots, ServerName: b.serverName}
	if b.cert != nil {
		c.Certificates = []tls.Certificate{*b.cert}
	}
	return c
}
