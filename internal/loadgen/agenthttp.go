package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AgentNetHTTP is a Target that opens and closes sessions through an
// agent's local HTTP API (POST /v1/sessions, DELETE /v1/sessions/{id})
// with Go's net/http client over keep-alive connections. Its Transport
// hands every request to a connection's writing and reading goroutines;
// AgentHTTP does the same exchange on the caller's goroutine.
type AgentNetHTTP struct {
	base          string // http://host:port
	tenant, class string
	client        *http.Client
}

// agentAddr checks an agent's address (host:port or an http:// URL) and
// what the sessions will be, and returns host:port.
func agentAddr(addr, tenant, class string) (string, error) {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("agent address %q: want host:port or http://host:port", addr)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("agent address %q: %v", addr, err)
	}
	if tenant == "" || class == "" {
		return "", fmt.Errorf("a tenant and a class are required")
	}
	if strings.ContainsAny(tenant+class, "\"\\") {
		return "", fmt.Errorf("tenant %q or class %q: quotes and backslashes are not valid", tenant, class)
	}
	return u.Host, nil
}

// NewAgentNetHTTP returns a target for the agent API at addr (host:port or
// an http:// URL) opening sessions of tenant and class, with a pool of conns
// keep-alive connections (one per worker) and timeout per request.
func NewAgentNetHTTP(addr, tenant, class string, conns int, timeout time.Duration) (*AgentNetHTTP, error) {
	host, err := agentAddr(addr, tenant, class)
	if err != nil {
		return nil, err
	}
	if conns < 1 {
		conns = 1
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &AgentNetHTTP{base: "http://" + host, tenant: tenant, class: class, client: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

// Admit is POST /v1/sessions: 201 or 200 admitted, 429 refused, anything
// else an error with the answer's body.
func (a *AgentNetHTTP) Admit(ctx context.Context, session string) (bool, error) {
	body := openBody(a.tenant, a.class, session)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/v1/sessions", strings.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	code, msg, err := a.do(req)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusCreated || code == http.StatusOK:
		return true, nil
	case code == http.StatusTooManyRequests:
		return false, nil
	default:
		return false, fmt.Errorf("POST /v1/sessions: HTTP %d: %s", code, msg)
	}
}

// Close is DELETE /v1/sessions/{session}: 200, anything else an error.
func (a *AgentNetHTTP) Close(ctx context.Context, session string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, a.base+"/v1/sessions/"+url.PathEscape(session), nil)
	if err != nil {
		return err
	}
	code, msg, err := a.do(req)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("DELETE /v1/sessions/%s: HTTP %d: %s", session, code, msg)
	}
	return nil
}

func (a *AgentNetHTTP) do(req *http.Request) (int, string, error) {
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	// Read the body whole so that the connection is reused.
	if _, err := io.Copy(&b, io.LimitReader(resp.Body, 64<<10)); err != nil {
		return 0, "", err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, strings.TrimSpace(b.String()), nil
}

// CloseIdle closes the pool's idle connections.
func (a *AgentNetHTTP) CloseIdle() { a.client.CloseIdleConnections() }

func openBody(tenant, class, session string) string {
	return `{"tenant":"` + tenant + `","class":"` + class + `","session":"` + session + `"}`
}
