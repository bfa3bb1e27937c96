package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type files struct {
	t   *testing.T
	dir string
}

func (f files) write(name string, b []byte) string {
	f.t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return p
}

var now = time.Now()

func mustCA(t *testing.T) PEM {
	t.Helper()
	ca, err := NewCA(CertOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustCert(t *testing.T, ca PEM, o CertOptions) PEM {
	t.Helper()
	if o.NotBefore.IsZero() {
		o.NotBefore, o.NotAfter = now.Add(-time.Minute), now.Add(time.Hour)
	}
	p, err := NewCert(ca, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parse(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificatesCarryTheirNames(t *testing.T) {
	ca := mustCA(t)
	caCert := parse(t, ca.Cert)
	if !caCert.IsCA || caCert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("CA: IsCA %v, key %v", caCert.IsCA, caCert.PublicKeyAlgorithm)
	}
	srv := parse(t, mustCert(t, ca, CertOptions{Kind: KindServer, DNS: []string{"agg1.example"}, IPs: []net.IP{net.ParseIP("10.0.0.11")}}).Cert)
	if !slices.Equal(srv.DNSNames, []string{ServerName, "agg1.example", "localhost"}) {
		t.Errorf("server DNS names %v", srv.DNSNames)
	}
	if len(srv.IPAddresses) != 2 || !srv.IPAddresses[0].Equal(net.ParseIP("10.0.0.11")) {
		t.Errorf("server IPs %v", srv.IPAddresses)
	}
	if !slices.Equal(srv.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("server key usage %v", srv.ExtKeyUsage)
	}
	ag := parse(t, mustCert(t, ca, CertOptions{Kind: KindAgent}).Cert)
	if !slices.Equal(ag.DNSNames, []string{AgentName}) || !slices.Equal(ag.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("agent: %v %v", ag.DNSNames, ag.ExtKeyUsage)
	}
	if err := ag.VerifyHostname(ServerName); err == nil {
		t.Error("an agent certificate names the servers")
	}
	if _, err := NewCert(ca, CertOptions{Kind: "root", NotBefore: now, NotAfter: now.Add(time.Hour)}); err == nil {
		t.Error("an unknown kind was accepted")
	}
	if _, err := NewCert(ca, CertOptions{Kind: KindAgent, NotBefore: now, NotAfter: now.Add(1000 * time.Hour)}); err == nil {
		t.Error("a certificate outliving its CA was made")
	}
	if _, err := NewCert(PEM{Cert: ca.Cert, Key: mustCA(t).Key}, CertOptions{Kind: KindAgent, NotBefore: now, NotAfter: now.Add(time.Hour)}); err == nil {
		t.Error("a CA key that does not match its certificate was used")
	}
}

// TestLoadRefusesBadFiles: every bad input is a clear error at start.
func TestLoadRefusesBadFiles(t *testing.T) {
	f := files{t, t.TempDir()}
	ca, other := mustCA(t), mustCA(t)
	caFile := f.write("ca.pem", ca.Cert)
	srv := mustCert(t, ca, CertOptions{Kind: KindServer})
	srvCert, srvKey := f.write("srv.pem", srv.Cert), f.write("srv-key.pem", srv.Key)
	ag := mustCert(t, ca, CertOptions{Kind: KindAgent})
	agCert, agKey := f.write("ag.pem", ag.Cert), f.write("ag-key.pem", ag.Key)
	foreign := mustCert(t, other, CertOptions{Kind: KindServer})
	fCert, fKey := f.write("f.pem", foreign.Cert), f.write("f-key.pem", foreign.Key)
	old := mustCert(t, ca, CertOptions{Kind: KindServer, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	oCert, oKey := f.write("old.pem", old.Cert), f.write("old-key.pem", old.Key)
	garbage := f.write("garbage.pem", []byte("not a PEM file\n"))
	keyAsCA := f.write("key-as-ca.pem", srv.Key)

	if _, err := LoadServer(Files{CA: caFile, Cert: srvCert, Key: srvKey, VerifyIncoming: true}, now); err != nil {
		t.Fatalf("good server files: %v", err)
	}
	if _, err := LoadClient(Files{CA: caFile, Cert: agCert, Key: agKey}, now); err != nil {
		t.Fatalf("good agent files: %v", err)
	}
	for _, c := range []struct {
		name   string
		server bool
		f      Files
		want   string
	}{
		{"server without CA", true, Files{Cert: srvCert, Key: srvKey}, "--tls-ca"},
		{"server without cert", true, Files{CA: caFile}, "--tls-cert"},
		{"garbage CA", true, Files{CA: garbage, Cert: srvCert, Key: srvKey}, "no PEM certificate"},
		{"key as CA", true, Files{CA: keyAsCA, Cert: srvCert, Key: srvKey}, "certificates only"},
		{"missing CA", true, Files{CA: filepath.Join(f.dir, "nope.pem"), Cert: srvCert, Key: srvKey}, "nope.pem"},
		{"garbage cert", true, Files{CA: caFile, Cert: garbage, Key: srvKey}, "garbage.pem"},
		{"mismatched key", true, Files{CA: caFile, Cert: srvCert, Key: agKey}, "private key does not match"},
		{"other CA", true, Files{CA: caFile, Cert: fCert, Key: fKey}, "not signed by --tls-ca"},
		{"expired", true, Files{CA: caFile, Cert: oCert, Key: oKey}, "expired"},
		{"agent cert on a server", true, Files{CA: caFile, Cert: agCert, Key: agKey}, "does not name"},
		{"agent without key", false, Files{CA: caFile, Cert: agCert}, "go together"},
		{"agent verifying incoming", false, Files{CA: caFile, VerifyIncoming: true}, "server setting"},
	} {
		var err error
		if c.server {
			_, err = LoadServer(c.f, now)
		} else {
			_, err = LoadClient(c.f, now)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}

// TestConfigsTalk: a client verifies the server's name and chain; the
// server requires the client's certificate with VerifyIncoming.
func TestConfigsTalk(t *testing.T) {
	f := files{t, t.TempDir()}
	ca := mustCA(t)
	caFile := f.write("ca.pem", ca.Cert)
	srv := mustCert(t, ca, CertOptions{Kind: KindServer})
	sb, err := LoadServer(Files{CA: caFile, Cert: f.write("s.pem", srv.Cert), Key: f.write("s-key.pem", srv.Key), VerifyIncoming: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Server().ClientAuth != tls.RequireAndVerifyClientCert || sb.Client().ServerName != ServerName {
		t.Fatalf("server config: %v %q", sb.Server().ClientAuth, sb.Client().ServerName)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sb.Server())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []*x509.Certificate, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				got <- tc.ConnectionState().PeerCertificates
			}
			tc.Close()
		}
	}()
	ag := mustCert(t, ca, CertOptions{Kind: KindAgent})
	cb, err := LoadClient(Files{CA: caFile, Cert: f.write("a.pem", ag.Cert), Key: f.write("a-key.pem", ag.Key)}, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), cb.Client())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if peers := <-got; len(peers) == 0 || peers[0].DNSNames[0] != AgentName {
		t.Fatalf("the server saw %v", peers)
	}
	wrongName, _ := LoadClient(Files{CA: caFile, ServerName: "other.headroom"}, now)
	if c, err := tls.Dial("tcp", ln.Addr().String(), wrongName.Client()); err == nil {
		c.Close()
		t.Fatal("a client expecting another server name connected")
	}
}
