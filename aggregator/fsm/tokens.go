package fsm

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/headroom-rtc/headroom/plans"
)

// ACL tokens. A token is a random secret; the replicated state keeps only
// its SHA-256 (SecretHash) under a public accessor id, so neither the log,
// snapshots nor a compromised follower's disk reveal a usable secret. The
// secret is shown once, to whoever created the token.

// Roles a token has.
const (
	// RoleOperator may do everything.
	RoleOperator = "operator"
	// RoleReader may read every endpoint and the dashboard.
	RoleReader = "reader"
	// RoleTenant may read only its tenant's figures, usage, cost and
	// advice; other tenants do not exist for it.
	RoleTenant = "tenant"
	// RoleAgent may open an agent stream (ship deltas, receive tenant
	// state) and nothing on HTTP.
	RoleAgent = "agent"
)

func validRole(r string) bool {
	switch r {
	case RoleOperator, RoleReader, RoleTenant, RoleAgent:
		return true
	}
	return false
}

// Token is one ACL token, as the state keeps it.
type Token struct {
	Accessor    string `msgpack:"a"`
	SecretHash  string `msgpack:"h"` // hex SHA-256 of the secret
	Role        string `msgpack:"r"`
	Tenant      string `msgpack:"t,omitempty"` // RoleTenant only
	Description string `msgpack:"d,omitempty"`
	Created     int64  `msgpack:"c"`           // entry time, unix ns
	CreatedBy   string `msgpack:"b,omitempty"` // accessor of the creator; "bootstrap"
}

// HashSecret is the form a secret is kept and looked up in.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// NewSecret returns a fresh accessor id and secret.
func NewSecret() (accessor, secret string) {
	var b [16 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
}

// TokenCreateCmd adds a token; with Bootstrap, only while no token was
// ever bootstrapped.
type TokenCreateCmd struct {
	Time      int64  `msgpack:"t"`
	Token     Token  `msgpack:"k"`
	Bootstrap bool   `msgpack:"b,omitempty"`
	Operator  string `msgpack:"o,omitempty"`
}

// TokenRevokeCmd deletes a token by accessor.
type TokenRevokeCmd struct {
	Time     int64  `msgpack:"t"`
	Accessor string `msgpack:"a"`
	Operator string `msgpack:"o,omitempty"`
}

func (c *TokenCreateCmd) when() int64 { return c.Time }
func (c *TokenRevokeCmd) when() int64 { return c.Time }

func (c *TokenCreateCmd) apply(a *applier) *ApplyResult {
	tk := c.Token
	switch {
	case c.Bootstrap && a.s.ACLBootstrapped:
		return refused("ACL already bootstrapped")
	case !validRole(tk.Role):
		return refused("role %q: want operator, reader, tenant or agent", tk.Role)
	case (tk.Role == RoleTenant) != (tk.Tenant != ""):
		return refused("a token has a tenant if and only if its role is tenant")
	case len(tk.SecretHash) != 2*sha256.Size || len(tk.Accessor) == 0 || len(tk.Description) > 256:
		return refused("malformed token")
	case a.s.Tokens[tk.Accessor] != nil:
		return refused("accessor %q exists", tk.Accessor)
	}
	if tk.Tenant != "" {
		if err := plans.ValidateTenantID(tk.Tenant); err != nil {
			return refused("%v", err)
		}
	}
	if a.s.Tokens == nil {
		a.s.Tokens = make(map[string]*Token)
	}
	tk.Created = a.now
	if c.Bootstrap {
		a.s.ACLBootstrapped = true
		tk.CreatedBy = "bootstrap"
	}
	a.s.Tokens[tk.Accessor] = &tk
	a.s.tokenIndex()[tk.SecretHash] = tk.Accessor
	a.audit(AuditEntry{Tenant: tk.Tenant, Kind: "token-create", Operator: c.Operator, After: tokenDesc(&tk)})
	return &ApplyResult{}
}

func (c *TokenRevokeCmd) apply(a *applier) *ApplyResult {
	tk := a.s.Tokens[c.Accessor]
	if tk == nil {
		return refused("no token %q", c.Accessor)
	}
	delete(a.s.Tokens, c.Accessor)
	delete(a.s.tokenIndex(), tk.SecretHash)
	a.audit(AuditEntry{Tenant: tk.Tenant, Kind: "token-revoke", Operator: c.Operator, Before: tokenDesc(tk)})
	return &ApplyResult{}
}

// tokenDesc is how the audit log names a token: never its secret.
func tokenDesc(tk *Token) string {
	s := fmt.Sprintf("%s %s", tk.Accessor, tk.Role)
	if tk.Tenant != "" {
		s += " " + tk.Tenant
	}
	return s
}

// tokenIndex maps secret hashes to accessors; it is derived from Tokens
// (not encoded in snapshots), built on first use under the write lock
// (Apply) or by Restore before the state is published.
func (s *State) tokenIndex() map[string]string {
	if s.byHash == nil {
		s.byHash = make(map[string]string, len(s.Tokens))
		for acc, tk := range s.Tokens {
			s.byHash[tk.SecretHash] = acc
		}
	}
	return s.byHash
}

// TokenBySecret returns the token whose secret is secret, or nil.
func (s *State) TokenBySecret(secret string) *Token {
	if secret == "" || len(s.Tokens) == 0 {
		return nil
	}
	h := HashSecret(secret)
	if s.byHash == nil { // not built yet: only reads since start
		for _, tk := range s.Tokens {
			if tk.SecretHash == h {
				return tk
			}
		}
		return nil
	}
	return s.Tokens[s.byHash[h]]
}
