package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/internal/tlsconf"
)

// testPKI is a private CA with helpers to issue certificates.
type testPKI struct {
	t   *testing.T
	dir string
	ca  tlsconf.PEM
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	now := time.Now()
	ca, err := tlsconf.NewCA(tlsconf.CertOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca}
	p.write("ca.pem", ca.Cert)
	return p
}

func (p *testPKI) write(name string, b []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue makes a certificate valid from nb to na and returns its files.
func (p *testPKI) issue(kind tlsconf.Kind, nb, na time.Time) (cert, key string) {
	p.t.Helper()
	c, err := tlsconf.NewCert(p.ca, tlsconf.CertOptions{Kind: kind, NotBefore: nb, NotAfter: na})
	if err != nil {
		p.t.Fatal(err)
	}
	name := fmt.Sprintf("%s-%d", kind, time.Now().UnixNano())
	return p.write(name+".pem", c.Cert), p.write(name+"-key.pem", c.Key)
}

func (p *testPKI) valid(kind tlsconf.Kind) (string, string) {
	now := time.Now()
	return p.issue(kind, now.Add(-time.Minute), now.Add(time.Hour))
}

// serverTLS is a server's TLS setup; mutual requires client certificates.
func (p *testPKI) serverTLS(mutual bool) *TLS {
	p.t.Helper()
	cert, key := p.valid(tlsconf.KindServer)
	b, err := tlsconf.LoadServer(tlsconf.Files{CA: filepath.Join(p.dir, "ca.pem"), Cert: cert, Key: key, VerifyIncoming: mutual}, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	return &TLS{Server: b.Server(), Client: b.Client()}
}

// clientTLS dials with the certificate (none when cert is "") and trusts
// this CA.
func (p *testPKI) clientTLS(cert, key string) *tls.Config {
	p.t.Helper()
	b, err := tlsconf.LoadClient(tlsconf.Files{CA: filepath.Join(p.dir, "ca.pem")}, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	c := b.Client()
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			p.t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c
}

// TestTLSRaftElectsAndReplicates: three servers whose Raft runs over mutual
// TLS (and whose stats calls, needed to bootstrap, over HTTPS) form a
// cluster and replicate.
func TestTLSRaftElectsAndReplicates(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pki := newPKI(t)
	opts := func(join ...*server) func(*Config) {
		return func(c *Config) {
			c.BootstrapExpect = 3
			c.TLS = pki.serverTLS(true)
			for _, s := range join {
				c.Join = append(c.Join, s.node.GossipAddr())
			}
		}
	}
	n1 := h.start("t1", "", "", "", opts())
	n2 := h.start("t2", "", "", "", opts(n1))
	n3 := h.start("t3", "", "", "", opts(n1, n2))
	all := []*server{n1, n2, n3}
	waitVoters(t, all, 30*time.Second, "t1", "t2", "t3")
	idx := apply(t, all)
	for _, s := range all {
		waitApplied(t, s, idx)
	}
	if got := n1.node.Insecure(); len(got) != 0 {
		t.Fatalf("loopback server reports %v as insecure", got)
	}
}

// TestTLSRaftRefusesStrangers: with mutual TLS the Raft listener hands raft
// only connections from servers of its CA: not plaintext, nor a client
// without a certificate, with one from another CA, an expired one, or an
// agent's certificate of the right CA.
func TestTLSRaftRefusesStrangers(t *testing.T) {
	t.Parallel()
	pki, other := newPKI(t), newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	st := newTLSStream(ln, ln.Addr(), pki.serverTLS(true), hclog.New(&hclog.LoggerOptions{Name: "raft", Output: logs}))
	defer st.Close()
	var (
		mu       sync.Mutex
		accepted []string
	)
	go func() {
		for {
			c, err := st.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c.RemoteAddr().String())
			mu.Unlock()
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	now := time.Now()
	oc, okey := other.valid(tlsconf.KindServer)
	ec, ek := pki.issue(tlsconf.KindServer, now.Add(-2*time.Hour), now.Add(-time.Hour))
	ac, ak := pki.valid(tlsconf.KindAgent)
	refused := func(name string, nc net.Conn) {
		t.Helper()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		nc.Write([]byte("\x00 an AppendEntries RPC in plaintext")) // raft's RPC type byte first
		if _, err := io.ReadFull(nc, make([]byte, 1)); err == nil {
			t.Errorf("%s: the server answered", name)
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the server neither answered nor closed", name)
		}
		nc.Close()
	}
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	refused("plaintext", plain)
	for _, c := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no certificate", pki.clientTLS("", "")},
		{"another CA", func() *tls.Config {
			// Sent even though the server asks for certificates of its CA.
			c := pki.clientTLS("", "")
			foreign := other.clientTLS(oc, okey).Certificates[0]
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
			return c
		}()},
		{"expired", pki.clientTLS(ec, ek)},
		{"agent certificate", pki.clientTLS(ac, ak)},
	} {
		nc, err := tls.Dial("tcp", addr, c.cfg)
		if err != nil { // TLS 1.2 ends the handshake with the refusal
			continue
		}
		refused(c.name, nc)
	}
	sc, sk := pki.valid(tlsconf.KindServer)
	good, err := tls.Dial("tcp", addr, pki.clientTLS(sc, sk))
	if err != nil {
		t.Fatalf("a server's certificate: %v", err)
	}
	defer good.Close()
	want := good.LocalAddr().String()
	waitFor(t, 10*time.Second, "the server's connection accepted", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted) > 0, "none yet"
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(accepted, []string{want}) {
		t.Fatalf("accepted %v, want only the server's %s", accepted, want)
	}
	for _, msg := range []string{"TLS handshake failed", "does not name a server"} {
		if !strings.Contains(logs.tail(1000), msg) {
			t.Errorf("no %q in the log:\n%s", msg, logs.tail(50))
		}
	}
}

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// TestGossipWrongKeyCannotJoin: a server with another key, or none, cannot
// join an encrypted cluster; one with the key can.
func TestGossipWrongKeyCannotJoin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	keyA, keyB := testKey(1), testKey(2)
	n1 := h.start("k1", "", "", "", func(c *Config) { c.Bootstrap, c.GossipKey = true, keyA })
	joinN1 := func(key []byte) func(*Config) {
		return func(c *Config) { c.GossipKey, c.Join = key, []string{n1.node.GossipAddr()} }
	}
	wrong := h.start("k2", "", "", "", joinN1(keyB))
	none := h.start("k3", "", "", "", joinN1(nil))
	for _, s := range []*server{wrong, none} {
		waitFor(t, 20*time.Second, s.id+" fails to join", func() (bool, string) {
			return countJoinFailures(h.logs.tail(1<<20), s.id) > 0, "no failed attempt yet"
		})
	}
	good := h.start("k4", "", "", "", joinN1(keyA))
	waitFor(t, 20*time.Second, "k4 alive in k1's view", func() (bool, string) {
		m, ok := memberOf(n1, "k4")
		return ok && m.Status == StatusAlive, fmt.Sprintf("%+v", m)
	})
	for _, id := range []string{"k2", "k3"} {
		if m, ok := memberOf(n1, id); ok {
			t.Errorf("k1 knows %s: %+v", id, m)
		}
		if m, ok := memberOf(good, id); ok {
			t.Errorf("k4 knows %s: %+v", id, m)
		}
	}
	for _, s := range []*server{wrong, none} {
		if k := s.node.ml.NumMembers(); k != 1 {
			t.Errorf("%s sees %d members", s.id, k)
		}
	}
}

// countJoinFailures counts the failed join attempts id logged.
func countJoinFailures(log, id string) int {
	k := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, id+":") && strings.Contains(line, "could not join the cluster yet") {
			k++
		}
	}
	return k
}

// TestKeyringRotation: install, use and remove on a live three-server
// cluster through one server lose no member; the keyring survives a
// restart (and wins over the old key on the command line); a server with
// only the new key joins afterwards.
func TestKeyringRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	keyA, keyB := testKey(1), testKey(2)
	opts := func(join ...*server) func(*Config) {
		return func(c *Config) {
			c.BootstrapExpect = 3
			c.GossipKey = keyA
			for _, s := range join {
				c.Join = append(c.Join, s.node.GossipAddr())
			}
		}
	}
	n1 := h.start("r1", "", "", "", opts())
	n2 := h.start("r2", "", "", "", opts(n1))
	n3 := h.start("r3", "", "", "", opts(n1, n2))
	all := []*server{n1, n2, n3}
	waitVoters(t, all, 30*time.Second, "r1", "r2", "r3")
	for _, s := range all {
		waitFor(t, 20*time.Second, s.id+" sees everyone alive", func() (bool, string) { return allAlive(s, "r1", "r2", "r3") })
	}

	// A watcher records any server declared failed during the rotation.
	var (
		mu   sync.Mutex
		lost []string
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for _, s := range all {
				for _, r := range s.node.members.all() {
					if r.status != StatusAlive {
						mu.Lock()
						lost = append(lost, fmt.Sprintf("%s sees %s %s", s.id, r.id, r.status))
						mu.Unlock()
					}
				}
			}
			sleepCtx(ctx, 20*time.Millisecond)
		}
	}()

	step := func(op KeyringOp, key []byte, wantKeys ...[]byte) {
		t.Helper()
		res, err := n2.node.KeyringAll(context.Background(), op, key)
		if err != nil {
			t.Fatalf("%s: %v (%+v)", op, err, res)
		}
		var want []string
		for _, k := range wantKeys {
			want = append(want, b64(k))
		}
		if len(res.Servers) != 3 {
			t.Fatalf("%s reached %+v", op, res.Servers)
		}
		for _, st := range res.Servers {
			if !slices.Equal(st.Keys, want) || st.Primary != want[0] {
				t.Fatalf("%s: %s has %v, want %v", op, st.ID, st.Keys, want)
			}
		}
	}
	step(KeyringList, nil, keyA)
	// Using or removing out of order is refused and changes nothing.
	if _, err := n1.node.KeyringAll(context.Background(), KeyringUse, keyB); !errors.Is(err, ErrKeyringRefused) {
		t.Fatalf("use of a key not installed: %v", err)
	}
	if _, err := n1.node.KeyringAll(context.Background(), KeyringRemove, keyA); !errors.Is(err, ErrKeyringRefused) {
		t.Fatalf("remove of the primary: %v", err)
	}
	step(KeyringInstall, keyB, keyA, keyB)
	step(KeyringUse, keyB, keyB, keyA)
	step(KeyringRemove, keyA, keyB)

	// Gossip goes on with the new key: a server that knows only it joins.
	n4 := h.start("r4", "", "", "", func(c *Config) { c.GossipKey, c.Join = keyB, []string{n3.node.GossipAddr()} })
	for _, s := range append(all, n4) {
		waitFor(t, 20*time.Second, s.id+" sees r4 alive", func() (bool, string) { return allAlive(s, "r1", "r2", "r3", "r4") })
	}
	cancel()
	wg.Wait()
	if len(lost) > 0 {
		t.Fatalf("members lost during the rotation: %v", lost)
	}

	// The keyring is on disk, readable by its owner only, and wins over
	// the old key still on the command line after a restart.
	path := filepath.Join(n2.dir, KeyringFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v", path, fi.Mode().Perm())
	}
	raftAddr, gossipAddr := n2.node.Addr(), n2.node.GossipAddr()
	n2.stop()
	back := h.start("r2", n2.dir, raftAddr, gossipAddr, opts())
	if st, err := back.node.LocalKeyring(); err != nil || !slices.Equal(st.Keys, []string{b64(keyB)}) {
		t.Fatalf("after a restart: %+v %v", st, err)
	}
	for _, s := range []*server{n1, n3, back} {
		waitFor(t, 30*time.Second, s.id+" sees the restarted r2 alive", func() (bool, string) { return allAlive(s, "r1", "r2", "r3", "r4") })
	}
}

// allAlive reports whether s sees every id alive.
func allAlive(s *server, ids ...string) (bool, string) {
	for _, id := range ids {
		m, ok := memberOf(s, id)
		if !ok || m.Status != StatusAlive {
			return false, fmt.Sprintf("%s: %+v", id, m)
		}
	}
	return true, ""
}

// TestKeyringFile: a keyring file that cannot be used stops the server
// with a clear error; gossip without a key or keyring is unencrypted, and
// says so on a non-loopback address.
func TestKeyringFile(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not JSON":  "{",
		"no key":    `{"keys":[]}`,
		"short key": `{"keys":["` + b64(make([]byte, 8)) + `"]}`,
		"not b64":   `{"keys":["***"]}`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, KeyringFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := Open(Config{DataDir: dir, BindAddr: "127.0.0.1:0", ServerID: "x", GossipAddr: "127.0.0.1:0"}, &countFSM{})
		if err == nil {
			n.Shutdown()
			t.Errorf("%s: a bad keyring file was accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), KeyringFile) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	if _, err := ParseGossipKey(b64(make([]byte, 20))); err == nil {
		t.Error("a 20-byte key was accepted")
	}
	n, err := Open(Config{DataDir: t.TempDir(), BindAddr: "0.0.0.0:0", ServerID: "x", GossipAddr: "0.0.0.0:0", AdvertiseHost: "127.0.0.1"}, &countFSM{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	got := strings.Join(n.Insecure(), "; ")
	if !strings.Contains(got, "raft plaintext on ") || !strings.Contains(got, "gossip unencrypted on 0.0.0.0:") || strings.Contains(got, ":0;") {
		t.Fatalf("insecure: %q", got)
	}
	if _, err := n.LocalKeyring(); !errors.Is(err, ErrGossipUnencrypted) {
		t.Fatalf("keyring of an unencrypted server: %v", err)
	}
}
