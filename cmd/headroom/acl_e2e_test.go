package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEndToEndACL runs an aggregator with --acl and agents as processes,
// and uses the CLI as an operator would: bootstrap once, tokens per role,
// an agent without a token kept out, a tenant token that sees its tenant
// only.
func TestEndToEndACL(t *testing.T) {
	s := newStack(t)
	s.agg = start(t, "aggregator", "aggregator", "--data-dir", filepath.Join(s.dir, "agg"), "--acl",
		"--http-addr", s.http, "--wire-addr", s.wire, "--raft-addr", s.raft, "--bootstrap")
	waitFor(t, 30*time.Second, "aggregator healthy", func() error {
		code, body, err := call("GET", "http://"+s.http+"/healthz", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("healthz %d %s", code, body)
		}
		return err
	})
	if code, _, _ := call("GET", "http://"+s.http+"/v1/tenants", nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	mint := func(args ...string) (accessor, secret string) {
		t.Helper()
		out, err := runCLI(append(args, "--addr", s.http, "-o", "json")...)
		var tk struct{ Accessor, Secret string }
		if err != nil || json.Unmarshal([]byte(out), &tk) != nil || tk.Secret == "" || tk.Accessor == "" {
			t.Fatalf("%v: %v %s", args, err, out)
		}
		return tk.Accessor, tk.Secret
	}
	opAcc, op := mint("acl", "bootstrap")
	if out, err := runCLI("acl", "bootstrap", "--addr", s.http); err == nil {
		t.Fatalf("a second bootstrap succeeded: %s", out)
	}
	_, agentSecret := mint("token", "create", "--role", "agent", "--token", op)
	_, tenantSecret := mint("token", "create", "--role", "tenant", "--tenant", "acme", "--token", op)
	for _, tn := range []string{"acme", "globex"} {
		if out, err := runCLI("tenant", "set-plan", "--addr", s.http, "--token", op, tn, "payg"); err != nil {
			t.Fatalf("set-plan %s: %v %s", tn, err, out)
		}
	}
	// An agent without a token is kept out; one with an agent token ships.
	bad := freeAddr(t)
	start(t, "agent-without-token", "agent", "--data-dir", filepath.Join(s.dir, "a0"), "--api-addr", bad, "--server", s.wire)
	good := freeAddr(t)
	start(t, "agent", "agent", "--data-dir", filepath.Join(s.dir, "a1"), "--api-addr", good, "--server", s.wire, "--token", agentSecret)
	waitFor(t, 30*time.Second, "agent with a token admits", func() error {
		code, body, err := call("POST", "http://"+good+"/v1/sessions", map[string]string{"tenant": "acme", "class": "audio", "session": "s1"})
		if err == nil && code != 201 && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
	waitFor(t, 30*time.Second, "the session reaches the aggregator", func() error {
		out, err := runCLI("tenant", "show", "--addr", s.http, "--token", op, "-o", "json", "acme")
		if err != nil || !strings.Contains(out, `"total": 1`) {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	_, body, err := call("GET", "http://"+bad+"/v1/status", nil)
	if err != nil || !strings.Contains(string(body), `"connected":false`) {
		t.Errorf("agent without a token: %v %s", err, body)
	}
	// The tenant token reads acme, and globex does not exist for it.
	if out, err := runCLI("tenant", "show", "--addr", s.http, "--token", tenantSecret, "acme"); err != nil {
		t.Errorf("tenant token on its tenant: %v %s", err, out)
	}
	if out, err := runCLI("tenant", "show", "--addr", s.http, "--token", tenantSecret, "globex"); err == nil || !strings.Contains(out, `no tenant "globex"`) {
		t.Errorf("tenant token on another tenant: %v %s", err, out)
	}
	if out, err := runCLI("tenant", "set-plan", "--addr", s.http, "--token", tenantSecret, "acme", "growth"); err == nil {
		t.Errorf("tenant token changed a plan: %s", out)
	}
	// The audit log names the operator's token by accessor only.
	out, err := runCLI("audit", "--addr", s.http, "--token", op, "-o", "json")
	if err != nil || strings.Contains(out, op) || !regexp.MustCompile(`token:`+opAcc).MatchString(out) {
		t.Errorf("audit: %v %s", err, out)
	}
}
