package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/internal/tlsconf"
)

// pkiFiles are the PEM files `headroom tls` made in dir.
type pkiFiles struct {
	dir                          string
	ca, server, serverKey        string
	agent, agentKey, cli, cliKey string
}

// makePKI runs `headroom tls ca create` and `tls cert create` as an
// operator would.
func makePKI(t *testing.T) pkiFiles {
	t.Helper()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", dir},
		{"tls", "cert", "create", "--server", "--dir", dir, "--ca", filepath.Join(dir, "headroom-ca.pem"), "--ca-key", filepath.Join(dir, "headroom-ca-key.pem"), "--dns", "agg.example", "--ip", "127.0.0.2"},
		{"tls", "cert", "create", "--agent", "--dir", dir, "--ca", filepath.Join(dir, "headroom-ca.pem"), "--ca-key", filepath.Join(dir, "headroom-ca-key.pem")},
		{"tls", "cert", "create", "--cli", "--dir", dir}, // the CA's files in --dir by default
	} {
		if out, err := runCLI(args...); err != nil {
			t.Fatalf("headroom %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	f := pkiFiles{dir: dir, ca: p("headroom-ca.pem"),
		server: p("headroom-server-0.pem"), serverKey: p("headroom-server-0-key.pem"),
		agent: p("headroom-agent-0.pem"), agentKey: p("headroom-agent-0-key.pem"),
		cli: p("headroom-cli-0.pem"), cliKey: p("headroom-cli-0-key.pem")}
	for _, key := range []string{p("headroom-ca-key.pem"), f.serverKey, f.agentKey, f.cliKey} {
		if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", key, fi.Mode(), err)
		}
	}
	// A second certificate of a kind gets the next number.
	if out, err := runCLI("tls", "cert", "create", "--agent", "--dir", dir, "--ca", f.ca, "--ca-key", p("headroom-ca-key.pem")); err != nil || !strings.Contains(out, "headroom-agent-1.pem") {
		t.Fatalf("second agent certificate: %v %s", err, out)
	}
	return f
}

func (f pkiFiles) cliFlags() []string {
	return []string{"--tls-ca", f.ca, "--tls-cert", f.cli, "--tls-key", f.cliKey}
}

// httpsClient trusts the CA and presents the CLI's certificate.
func (f pkiFiles) httpsClient(t *testing.T) *http.Client {
	t.Helper()
	b, err := tlsconf.LoadClient(tlsconf.Files{CA: f.ca, Cert: f.cli, Key: f.cliKey}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: b.Client()}}
}

// TestSecureCluster: three servers with mutual TLS everywhere and encrypted
// gossip elect a leader and replicate; an agent ships over TLS; the CLI
// works with a certificate and fails cleanly without one or in plaintext;
// the gossip key is rotated through one server without losing a member,
// and a server restarted with the old key on its command line comes back
// with the new keyring.
func TestSecureCluster(t *testing.T) {
	pki := makePKI(t)
	oldKey, err := runCLI("keyring", "generate")
	if err != nil {
		t.Fatal(err)
	}
	oldKey = strings.TrimSpace(oldKey)
	c := newCluster(t, 3, nil, "--tls-ca", pki.ca, "--tls-cert", pki.server, "--tls-key", pki.serverKey,
		"--tls-verify-incoming", "--gossip-key", oldKey)
	c.startAll()
	hc := pki.httpsClient(t)
	status := func(s *hServer) (statusJSON, error) {
		var st statusJSON
		_, err := getJSON(hc, "https://"+s.http+"/v1/status", &st)
		return st, err
	}
	waitFor(t, 60*time.Second, "a leader with three voters, seen by all", func() error {
		for _, s := range c.servers {
			st, err := status(s)
			if err != nil {
				return fmt.Errorf("%s: %v", s.name, err)
			}
			if st.LeaderID == "" || len(st.Voters) != 3 {
				return fmt.Errorf("%s: leader %q, voters %v", s.name, st.LeaderID, st.Voters)
			}
			if len(st.Insecure) != 0 {
				return fmt.Errorf("%s: insecure %v", s.name, st.Insecure)
			}
		}
		return nil
	})
	c.tl.mark("three TLS servers elected a leader")

	// The CLI: with its certificate it works through any server; without
	// TLS flags, or without a certificate, it fails with a clear error.
	s1 := c.servers[0]
	args := append([]string{"tenant", "set-plan", "--addr", s1.http}, pki.cliFlags()...)
	waitFor(t, 30*time.Second, "set-plan over TLS", func() error {
		out, err := runCLI(append(args, "acme", "growth")...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := runCLI("tenant", "list", "--addr", s1.http); err == nil || !strings.Contains(out, "speaks HTTPS") {
		t.Errorf("plaintext CLI: %v %s", err, out)
	}
	if out, err := runCLI("tenant", "list", "--addr", s1.http, "--tls-ca", pki.ca); err == nil || !strings.Contains(out, "certificate required") {
		t.Errorf("CLI without a certificate: %v %s", err, out)
	}
	if out, err := runCLI(append([]string{"health", "--addr", s1.http}, pki.cliFlags()...)...); err != nil || !strings.Contains(out, "ready") {
		t.Errorf("headroom health over mutual TLS: %v %s", err, out)
	}
	env := []string{"HEADROOM_ADDR=" + s1.http, "HEADROOM_CACERT=" + pki.ca, "HEADROOM_CLIENT_CERT=" + pki.cli, "HEADROOM_CLIENT_KEY=" + pki.cliKey}
	cmd := exec.Command(binPath, "tenant", "list")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "acme") {
		t.Errorf("CLI configured by the environment: %v %s", err, out)
	}

	// An agent ships over TLS; every server replicates its session.
	a := c.addAgent("agent1", nil, c.wires(c.servers), "--tls-ca", pki.ca, "--tls-cert", pki.agent, "--tls-key", pki.agentKey)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.open(ctx, 30*time.Second, "acme", "audio", "call-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every server counts the session", func() error {
		for _, s := range c.servers {
			var f tenantFig
			if _, err := getJSON(hc, "https://"+s.http+"/v1/tenants/acme", &f); err != nil {
				return err
			}
			if f.Concurrency.Total != 1 {
				return fmt.Errorf("%s counts %d", s.name, f.Concurrency.Total)
			}
		}
		return nil
	})
	c.tl.mark("the agent's session replicated to every server")

	// Rotate the gossip key through one server.
	newKey, err := runCLI("keyring", "generate")
	if err != nil {
		t.Fatal(err)
	}
	newKey = strings.TrimSpace(newKey)
	keyring := func(args ...string) string {
		t.Helper()
		out, err := runCLI(append(append([]string{"keyring"}, args[0], "--addr", c.servers[1].http, "-o", "json"), append(pki.cliFlags(), args[1:]...)...)...)
		if err != nil {
			t.Fatalf("keyring %v: %v\n%s", args, err, out)
		}
		return out
	}
	if out, err := runCLI(append([]string{"keyring", "use", "--addr", s1.http}, append(pki.cliFlags(), newKey)...)...); err == nil || !strings.Contains(out, "install it first") {
		t.Fatalf("use before install: %v %s", err, out)
	}
	keyring("install", newKey)
	keyring("use", newKey)
	keyring("remove", oldKey)
	var res cluster.KeyringResult
	if err := json.Unmarshal([]byte(keyring("list")), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Servers) != 3 {
		t.Fatalf("keyring list: %+v", res)
	}
	for _, st := range res.Servers {
		if !slices.Equal(st.Keys, []string{newKey}) {
			t.Fatalf("%s has keys %v, want only the new one", st.ID, st.Keys)
		}
	}
	c.tl.mark("gossip key rotated")
	membersAlive := func(s *hServer) error {
		out, err := runCLI(append([]string{"members", "--addr", s.http, "-o", "json"}, pki.cliFlags()...)...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var ms []struct{ ID, Status string }
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			return err
		}
		if len(ms) != 3 {
			return fmt.Errorf("%s sees %+v", s.name, ms)
		}
		for _, m := range ms {
			if m.Status != string(cluster.StatusAlive) {
				return fmt.Errorf("%s sees %+v", s.name, ms)
			}
		}
		return nil
	}
	for _, s := range c.servers {
		if err := membersAlive(s); err != nil {
			t.Fatalf("after the rotation: %v", err)
		}
	}

	// A server restarted with the old key on its command line keeps the
	// new keyring from its data directory and rejoins.
	victim := c.servers[2]
	victim.p.kill()
	victim.p.restart()
	waitFor(t, 60*time.Second, victim.name+" alive again in everyone's view", func() error {
		for _, s := range c.servers {
			if err := membersAlive(s); err != nil {
				return err
			}
		}
		return nil
	})
	if !strings.Contains(victim.p.logText(), "the keyring wins") {
		t.Error("the restarted server did not warn that its keyring wins over --gossip-key")
	}
	c.tl.summary()
}

// TestSecureStartErrors: bad TLS files or gossip keys stop a process at
// start with a clear error; a server listening beyond loopback without TLS
// warns at start and in its status.
func TestSecureStartErrors(t *testing.T) {
	pki := makePKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("nothing here"), 0o600)
	agg := func(extra ...string) []string {
		return append([]string{"aggregator", "--data-dir", t.TempDir(), "--bootstrap", "--http-addr", "127.0.0.1:0",
			"--wire-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, extra...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{agg("--tls-ca", garbage, "--tls-cert", pki.server, "--tls-key", pki.serverKey), "no PEM certificate"},
		{agg("--tls-ca", pki.ca, "--tls-cert", pki.agent, "--tls-key", pki.agentKey), "does not name"},
		{agg("--tls-ca", pki.ca, "--tls-cert", pki.server, "--tls-key", pki.agentKey), "private key does not match"},
		{agg("--tls-verify-incoming"), "--tls-cert"},
		{agg("--gossip-addr", "127.0.0.1:0", "--gossip-key", "c2hvcnQ="), "want 16, 24 or 32"},
		{agg("--gossip-addr", "127.0.0.1:0", "--gossip-key", "not base64!"), "base64"},
		{[]string{"agent", "--data-dir", t.TempDir(), "--server", "127.0.0.1:1", "--tls-cert", pki.agent, "--tls-key", pki.agentKey}, "needs --tls-ca"},
		{[]string{"tls", "cert", "create", "--server", "--agent", "--dir", dir}, "exactly one"},
		{[]string{"tls", "ca", "create", "--dir", pki.dir}, "exists"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, binPath, c.args...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("headroom %s: %v, output %q; want an error saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}

	// Plaintext beyond loopback.
	port := func() string { _, p, _ := net.SplitHostPort(freeAddr(t)); return p }
	httpPort := port()
	p := start(t, "wide", "aggregator", "--data-dir", t.TempDir(), "--bootstrap", "--advertise-addr", "127.0.0.1",
		"--http-addr", "0.0.0.0:"+httpPort, "--wire-addr", "0.0.0.0:"+port(), "--raft-addr", "0.0.0.0:"+port())
	var st statusJSON
	waitFor(t, 30*time.Second, "status of a server on 0.0.0.0", func() error {
		_, err := getJSON(httpc, "http://127.0.0.1:"+httpPort+"/v1/status", &st)
		return err
	})
	if len(st.Insecure) != 4 || !strings.HasPrefix(st.Insecure[0], "http plaintext on ") || !strings.HasPrefix(st.Insecure[3], "ACLs off on ") {
		t.Errorf("insecure %q", st.Insecure)
	}
	if log := p.logText(); strings.Count(log, "[WARN]  aggregator: INSECURE: ") != 4 {
		t.Errorf("want four INSECURE warnings in the log (http, wire, raft plaintext; ACLs off):\n%s", log)
	}
}
