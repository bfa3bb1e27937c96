package aggregator

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/headroom-rtc/headroom/aggregator/api"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/internal/tlsconf"
	"github.com/headroom-rtc/headroom/wire"
)

// pki is a private CA for tests, writing PEM files into a temporary
// directory.
type pki struct {
	t   *testing.T
	dir string
	ca  tlsconf.PEM
	n   int
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	now := time.Now()
	ca, err := tlsconf.NewCA(tlsconf.CertOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca}
	p.write("ca.pem", ca.Cert)
	return p
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

func (p *pki) write(name string, b []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

func (p *pki) issue(kind tlsconf.Kind, nb, na time.Time) (cert, key string) {
	p.t.Helper()
	c, err := tlsconf.NewCert(p.ca, tlsconf.CertOptions{Kind: kind, NotBefore: nb, NotAfter: na})
	if err != nil {
		p.t.Fatal(err)
	}
	p.n++
	name := fmt.Sprintf("%s-%d", kind, p.n)
	return p.write(name+".pem", c.Cert), p.write(name+"-key.pem", c.Key)
}

func (p *pki) valid(kind tlsconf.Kind) (string, string) {
	now := time.Now()
	return p.issue(kind, now.Add(-time.Minute), now.Add(time.Hour))
}

func (p *pki) serverTLS(mutual bool) *cluster.TLS {
	p.t.Helper()
	cert, key := p.valid(tlsconf.KindServer)
	b, err := tlsconf.LoadServer(tlsconf.Files{CA: p.caFile(), Cert: cert, Key: key, VerifyIncoming: mutual}, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	return &cluster.TLS{Server: b.Server(), Client: b.Client()}
}

// client trusts this CA and presents cert (none when "").
func (p *pki) client(cert, key string) *tls.Config {
	p.t.Helper()
	b, err := tlsconf.LoadClient(tlsconf.Files{CA: p.caFile(), Cert: cert, Key: key}, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	return b.Client()
}

// startSecure starts a single-server aggregator on the real clock; tweak
// adjusts its configuration.
func startSecure(t *testing.T, tweak func(*Config)) *Server {
	t.Helper()
	if tweak == nil {
		return newTestServer(t, nil)
	}
	return newTestServer(t, nil, tweak)
}

func httpsClient(c *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
}

func localAddr(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return "127.0.0.1:" + port
}

// TestTLSRefusesStrangers: with mutual TLS, the HTTP API and the agent
// stream refuse a client without a certificate, with one from another CA
// or an expired one, and fail plaintext cleanly (HTTP answers 400); the
// server goes on serving clients with good certificates, and keeps its
// server-to-server calls for servers.
func TestTLSRefusesStrangers(t *testing.T) {
	t.Parallel()
	ca, other := newPKI(t), newPKI(t)
	s := startSecure(t, func(c *Config) { c.TLS = ca.serverTLS(true) })
	httpAddr, wireAddr := localAddr(s.HTTPAddr()), localAddr(s.WireAddr())

	now := time.Now()
	oc, okey := other.valid(tlsconf.KindAgent)
	ec, ek := ca.issue(tlsconf.KindAgent, now.Add(-2*time.Hour), now.Add(-time.Hour))
	strangers := []struct {
		name string
		cfg  *tls.Config
	}{
		{"no certificate", ca.client("", "")},
		{"another CA", func() *tls.Config {
			// Sent even though the server asks for certificates of its CA.
			c, foreign := ca.client("", ""), other.client(oc, okey).Certificates[0]
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
			return c
		}()},
		{"expired", func() *tls.Config {
			c := ca.client("", "")
			pair, err := tls.LoadX509KeyPair(ec, ek)
			if err != nil {
				t.Fatal(err)
			}
			c.Certificates = []tls.Certificate{pair}
			return c
		}()},
	}
	for _, c := range strangers {
		if _, err := httpsClient(c.cfg).Get("https://" + httpAddr + "/v1/status"); err == nil {
			t.Errorf("HTTP, %s: answered", c.name)
		} else {
			t.Logf("HTTP, %s: %v", c.name, err)
		}
		if m, err := wireHello(wireAddr, c.cfg); err == nil {
			t.Errorf("wire, %s: answered %v", c.name, m)
		} else {
			t.Logf("wire, %s: %v", c.name, err)
		}
	}

	// Plaintext to TLS ports.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + httpAddr + "/v1/status")
	if err != nil {
		t.Fatalf("plaintext HTTP: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
		t.Errorf("plaintext HTTP: %d %s", resp.StatusCode, body)
	}
	if m, err := wireHello(wireAddr, nil); err == nil {
		t.Errorf("plaintext wire: answered %v", m)
	} else {
		t.Logf("plaintext wire: %v", err)
	}

	// Good clients are served.
	ac, ak := ca.valid(tlsconf.KindAgent)
	agentTLS := ca.client(ac, ak)
	resp, err = httpsClient(agentTLS).Get("https://" + httpAddr + "/v1/status")
	if err != nil {
		t.Fatalf("HTTP with an agent certificate: %v", err)
	}
	var st api.StatusJSON
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(st.Insecure) != 0 {
		t.Fatalf("status %d, insecure %v", resp.StatusCode, st.Insecure)
	}
	if m, err := wireHello(wireAddr, agentTLS); err != nil {
		t.Fatalf("wire with an agent certificate: %v", err)
	} else if _, ok := m.(*wire.Welcome); !ok {
		t.Fatalf("wire with an agent certificate: %T %+v", m, m)
	}

	// Server-to-server calls need a server's certificate.
	for _, path := range []string{cluster.StatsPath, cluster.KeyringLocalPath} {
		resp, err := httpsClient(agentTLS).Get("https://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s with an agent certificate: %d", path, resp.StatusCode)
		}
	}
	sc, sk := ca.valid(tlsconf.KindServer)
	resp, err = httpsClient(ca.client(sc, sk)).Get("https://" + httpAddr + cluster.StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s with a server certificate: %d", cluster.StatsPath, resp.StatusCode)
	}
}

// wireHello opens an agent stream (TLS unless cfg is nil), sends Hello
// and returns the first message back, or the error that ended the stream.
func wireHello(addr string, cfg *tls.Config) (wire.Message, error) {
	var (
		nc  net.Conn
		err error
	)
	d := &net.Dialer{Timeout: 5 * time.Second}
	if cfg != nil {
		nc, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		nc, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteFrame(nc, &wire.Hello{AgentID: "a1", Epoch: uint64(time.Now().UnixNano()), Version: wire.ProtocolVersion}); err != nil {
		return nil, err
	}
	r := wire.NewReader(nc, wire.DefaultMaxFrame)
	for {
		m, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("no answer and not closed: %w", err)
		}
		if err != nil {
			return nil, err
		}
		if _, push := m.(*wire.TenantState); !push {
			return m, nil
		}
	}
}

// TestInsecureStatus: a server listening beyond loopback without TLS says
// so in its status; with mutual TLS, or on loopback, it has nothing to say.
func TestInsecureStatus(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	wide := func(tls *cluster.TLS, acl ...bool) func(*Config) {
		return func(c *Config) {
			c.HTTPAddr, c.WireAddr, c.RaftAddr, c.AdvertiseAddr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0", "127.0.0.1"
			c.TLS = tls
			c.ACL = len(acl) > 0 && acl[0]
		}
	}
	for _, c := range []struct {
		name  string
		tweak func(*Config)
		want  []string
	}{
		{"loopback", nil, nil},
		{"plaintext", wide(nil), []string{"http plaintext on ", "wire plaintext on ", "raft plaintext on ", "ACLs off on "}},
		{"TLS", wide(ca.serverTLS(false)), []string{"raft accepts peers without client certificates", "ACLs off on "}},
		{"mutual TLS", wide(ca.serverTLS(true)), []string{"ACLs off on "}},
		{"mutual TLS and ACLs", wide(ca.serverTLS(true), true), nil},
	} {
		s := startSecure(t, c.tweak)
		got := s.Insecure()
		if c.tweak == nil || c.name == "plaintext" {
			resp, err := http.Get("http://" + localAddr(s.HTTPAddr()) + "/v1/status")
			if err != nil {
				t.Fatal(err)
			}
			var st api.StatusJSON
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil || st.Insecure == nil || strings.Join(st.Insecure, ";") != strings.Join(got, ";") {
				t.Errorf("%s: status says insecure %q (%v), the server %q", c.name, st.Insecure, err, got)
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: insecure %q, want %q", c.name, got, c.want)
			continue
		}
		for i, w := range c.want {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("%s: insecure %q, want %q", c.name, got, c.want)
			}
		}
	}
}

// TestKeyringNeedsOperator: the gossip keys are an operator's business.
func TestKeyringNeedsOperator(t *testing.T) {
	t.Parallel()
	f := newACLFixture(t)
	for _, path := range []string{cluster.KeyringPath, cluster.KeyringLocalPath} {
		if rec := do(t, f.s, "GET", path, f.reader.Secret, ""); rec.Code != http.StatusForbidden {
			t.Errorf("reader GET %s: %d %s", path, rec.Code, rec.Body)
		}
		if rec := do(t, f.s, "POST", path, f.ag.Secret, `{"op":"install","key":"AAAAAAAAAAAAAAAAAAAAAA=="}`); rec.Code != http.StatusForbidden {
			t.Errorf("agent POST %s: %d %s", path, rec.Code, rec.Body)
		}
		// Allowed; this server's gossip is off, which it says.
		if rec := do(t, f.s, "GET", path, f.operator.Secret, ""); rec.Code == http.StatusForbidden || !strings.Contains(rec.Body.String(), "gossip encryption is off") {
			t.Errorf("operator GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}
