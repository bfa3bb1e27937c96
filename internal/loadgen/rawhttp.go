package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// AgentHTTP is a Target that opens and closes sessions through an agent's
// local HTTP API (POST /v1/sessions, DELETE /v1/sessions/{id}) with a plain
// HTTP/1.1 keep-alive client: each call takes an idle connection (or dials
// one), writes the request and reads the answer on the caller's goroutine,
// as a media server's synchronous client (or go-redis) does. Safe for
// concurrent use; it keeps at most conns idle connections.
type AgentHTTP struct {
	host          string
	tenant, class string
	timeout       time.Duration
	idle          chan *rawConn
}

type rawConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

// NewAgentHTTP returns a target for the agent API at addr (host:port or an
// http:// URL) opening sessions of tenant and class, keeping up to conns
// keep-alive connections (one per worker), timeout per request.
func NewAgentHTTP(addr, tenant, class string, conns int, timeout time.Duration) (*AgentHTTP, error) {
	host, err := agentAddr(addr, tenant, class)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("timeout %v: want a positive duration", timeout)
	}
	return &AgentHTTP{host: host, tenant: tenant, class: class, timeout: timeout, idle: make(chan *rawConn, max(conns, 1))}, nil
}

// Admit is POST /v1/sessions: 201 or 200 admitted, 429 refused, anything
// else an error with the answer's body.
func (a *AgentHTTP) Admit(ctx context.Context, session string) (bool, error) {
	code, msg, err := a.do(ctx, "POST", "/v1/sessions", openBody(a.tenant, a.class, session))
	switch {
	case err != nil:
		return false, fmt.Errorf("POST /v1/sessions: %w", err)
	case code == http.StatusCreated || code == http.StatusOK:
		return true, nil
	case code == http.StatusTooManyRequests:
		return false, nil
	default:
		return false, fmt.Errorf("POST /v1/sessions: HTTP %d: %s", code, msg)
	}
}

// Close is DELETE /v1/sessions/{session}: 200, anything else an error.
func (a *AgentHTTP) Close(ctx context.Context, session string) error {
	path := "/v1/sessions/" + url.PathEscape(session)
	code, msg, err := a.do(ctx, "DELETE", path, "")
	if err != nil {
		return fmt.Errorf("DELETE %s: %w", path, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("DELETE %s: HTTP %d: %s", path, code, msg)
	}
	return nil
}

// CloseIdle closes the idle connections; later calls dial new ones.
func (a *AgentHTTP) CloseIdle() {
	for {
		select {
		case rc := <-a.idle:
			rc.c.Close()
		default:
			return
		}
	}
}

func (a *AgentHTTP) get(ctx context.Context) (*rawConn, bool, error) {
	select {
	case rc := <-a.idle:
		return rc, true, nil
	default:
	}
	d := net.Dialer{Timeout: a.timeout}
	c, err := d.DialContext(ctx, "tcp", a.host)
	if err != nil {
		return nil, false, err
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}, false, nil
}

func (a *AgentHTTP) put(rc *rawConn) {
	select {
	case a.idle <- rc:
	default:
		rc.c.Close()
	}
}

// do sends one request and reads its answer. A reused connection that the
// agent had closed while idle (nothing of an answer read) is retried once on
// a new one; nothing else is retried.
func (a *AgentHTTP) do(ctx context.Context, method, path, body string) (int, string, error) {
	for attempt := 0; ; attempt++ {
		rc, reused, err := a.get(ctx)
		if err != nil {
			return 0, "", err
		}
		code, msg, keep, started, err := a.exchange(rc, method, path, body)
		if err != nil {
			rc.c.Close()
			if reused && !started && attempt == 0 && staleConn(err) {
				continue
			}
			return 0, "", err
		}
		if keep {
			a.put(rc)
		} else {
			rc.c.Close()
		}
		return code, msg, nil
	}
}

func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (a *AgentHTTP) exchange(rc *rawConn, method, path, body string) (code int, msg string, keep, started bool, err error) {
	if err := rc.c.SetDeadline(time.Now().Add(a.timeout)); err != nil {
		return 0, "", false, false, err
	}
	w := rc.bw
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(a.host)
	if body != "" {
		w.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
		w.WriteString(strconv.Itoa(len(body)))
	}
	w.WriteString("\r\n\r\n")
	w.WriteString(body)
	if err := w.Flush(); err != nil {
		return 0, "", false, false, err
	}
	if _, err := rc.br.Peek(1); err != nil {
		return 0, "", false, false, err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return 0, "", false, true, err
	}
	var b strings.Builder
	_, err = io.Copy(&b, io.LimitReader(resp.Body, 64<<10))
	if err == nil {
		var n int64
		n, err = io.Copy(io.Discard, resp.Body)
		if n > 0 && err == nil {
			err = fmt.Errorf("answer longer than 64 KiB")
		}
	}
	resp.Body.Close()
	if err != nil {
		return 0, "", false, true, err
	}
	return resp.StatusCode, strings.TrimSpace(b.String()), !resp.Close, true, nil
}
