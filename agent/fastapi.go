package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APIServer serves the local HTTP API the way srv would, with one
// difference in how, not what: a request for one of the two hot routes —
// POST /v1/sessions and DELETE /v1/sessions/{session} — that arrives on a
// plain keep-alive HTTP/1.1 connection is read, handed to srv.Handler and
// answered on the connection's own goroutine, without net/http's
// per-request machinery (its background reader goroutine and the wake-ups
// that go with it, which the profile in BENCHMARKS.md shows costing more
// than the handler). The handler is the same, so every answer is the same.
//
// Anything else — another route, a chunked or 100-continue body, a body
// over 64 KiB, Connection: close, HTTP/1.0, a header the fast reader does
// not take — hands the connection, with what was read of it, to srv, which
// serves that request and the rest of the connection as it always has.
// srv's ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout bound
// the fast path too (defaults when 0: 10 s, 30 s, 30 s, 2 min).
type APIServer struct {
	srv     *http.Server
	handoff *connQueue

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*fastConn]bool // true while a request is being served
	closing bool
	wg      sync.WaitGroup

	fastServed atomic.Int64 // requests answered on the fast path
}

// NewAPIServer returns a server for srv's Handler; srv must not be served
// elsewhere.
func NewAPIServer(srv *http.Server) *APIServer {
	return &APIServer{srv: srv, conns: map[*fastConn]bool{}}
}

type fastConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

// Serve accepts connections on ln until Shutdown or Close; it returns
// http.ErrServerClosed then, or the listener's error.
func (s *APIServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing || s.ln != nil {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.handoff = newConnQueue(ln.Addr())
	s.mu.Unlock()
	go s.srv.Serve(s.handoff)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		fc := &fastConn{c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		s.conns[fc] = false
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(fc)
	}
}

func (s *APIServer) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops accepting, closes idle connections, waits for requests
// being served (until ctx ends) and shuts srv down the same way.
func (s *APIServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for fc, busy := range s.conns {
		if !busy {
			fc.c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if e := s.srv.Shutdown(ctx); err == nil {
		err = e
	}
	return err
}

// Close closes the listener and every connection at once.
func (s *APIServer) Close() error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for fc := range s.conns {
		fc.c.Close()
	}
	s.mu.Unlock()
	return s.srv.Close()
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *APIServer) serveConn(fc *fastConn) {
	handedOff := false
	defer func() {
		if p := recover(); p != nil {
			s.logf("agent API: panic serving %v: %v", fc.c.RemoteAddr(), p)
		}
		s.mu.Lock()
		delete(s.conns, fc)
		s.mu.Unlock()
		if !handedOff {
			fc.c.Close()
		}
		s.wg.Done()
	}()
	idle := durationOr(s.srv.IdleTimeout, 2*time.Minute)
	headTimeout := durationOr(s.srv.ReadHeaderTimeout, 10*time.Second)
	readTimeout := durationOr(s.srv.ReadTimeout, 30*time.Second)
	writeTimeout := durationOr(s.srv.WriteTimeout, 30*time.Second)
	for {
		fc.c.SetReadDeadline(time.Now().Add(idle))
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return
		}
		s.conns[fc] = true
		s.mu.Unlock()
		start := time.Now()
		fc.c.SetReadDeadline(start.Add(headTimeout))
		req, headLen, ok, err := peekHotRequest(fc.br)
		if err != nil {
			return
		}
		if !ok {
			// Not for the fast path: net/http serves this request and
			// the rest of the connection, from what is buffered on.
			fc.c.SetReadDeadline(time.Time{})
			handedOff = true
			s.handoff.push(&prefixConn{Conn: fc.c, r: fc.br})
			return
		}
		fc.br.Discard(headLen)
		fc.c.SetReadDeadline(start.Add(readTimeout))
		body := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(fc.br, body); err != nil {
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.RemoteAddr = fc.c.RemoteAddr().String()
		w := &fastWriter{header: http.Header{}}
		s.srv.Handler.ServeHTTP(w, req)
		fc.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		w.writeTo(fc.bw)
		if err := fc.bw.Flush(); err != nil {
			return
		}
		s.fastServed.Add(1)
		s.mu.Lock()
		s.conns[fc] = false
		closing := s.closing
		s.mu.Unlock()
		if closing {
			return
		}
	}
}

func (s *APIServer) logf(format string, args ...any) {
	if s.srv.ErrorLog != nil {
		s.srv.ErrorLog.Printf(format, args...)
	}
}

// peekHotRequest looks at the request head buffered in br without consuming
// it. ok is true for a request the fast path takes (then req is ready but
// for its body and headLen is the head's length); false hands it to
// net/http. err is a connection that failed or timed out.
func peekHotRequest(br *bufio.Reader) (req *http.Request, headLen int, ok bool, err error) {
	var head []byte
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head = buf[:i+4]
			break
		}
		if br.Buffered() >= br.Size() {
			return nil, 0, false, nil // a long head: net/http answers it
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			if br.Buffered() > 0 && errors.Is(err, bufio.ErrBufferFull) {
				return nil, 0, false, nil
			}
			return nil, 0, false, err
		}
	}
	lines := strings.Split(string(head[:len(head)-4]), "\r\n")
	method, target, proto, okLine := parseRequestLine(lines[0])
	if !okLine || proto != "HTTP/1.1" || !hotRoute(method, target) {
		return nil, 0, false, nil
	}
	hdr := make(http.Header, len(lines)-1)
	host, contentLength, haveLength := "", int64(0), false
	for _, line := range lines[1:] {
		name, value, found := strings.Cut(line, ":")
		if !found || name == "" || strings.ContainsAny(name, " \t") {
			return nil, 0, false, nil // folding or a malformed field
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		value = strings.Trim(value, " \t")
		switch key {
		case "Host":
			if host != "" {
				return nil, 0, false, nil
			}
			host = value
		case "Content-Length":
			n, err := strconv.ParseInt(value, 10, 64)
			if haveLength || err != nil || n < 0 || n > maxOpenBody {
				return nil, 0, false, nil
			}
			contentLength, haveLength = n, true
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer":
			return nil, 0, false, nil
		case "Connection":
			if !strings.EqualFold(value, "keep-alive") {
				return nil, 0, false, nil
			}
		}
		hdr[key] = append(hdr[key], value)
	}
	if host == "" || (method == http.MethodDelete && contentLength != 0) {
		return nil, 0, false, nil
	}
	req, err = http.NewRequest(method, "http://"+host+target, nil)
	if err != nil || req.URL.Host != host {
		return nil, 0, false, nil
	}
	req.Header, req.Host, req.RequestURI, req.ContentLength = hdr, host, target, contentLength
	return req, len(head), true, nil
}

func parseRequestLine(line string) (method, target, proto string, ok bool) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	return method, target, proto, ok1 && ok2 && !strings.Contains(proto, " ")
}

// hotRoute: POST /v1/sessions, or DELETE /v1/sessions/{session} with a
// plain id (anything net/http's mux would clean, unescape or redirect is
// left to it).
func hotRoute(method, target string) bool {
	switch method {
	case http.MethodPost:
		return target == "/v1/sessions"
	case http.MethodDelete:
		id, found := strings.CutPrefix(target, "/v1/sessions/")
		return found && id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/?#%")
	}
	return false
}

// fastWriter buffers one answer.
type fastWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *fastWriter) Header() http.Header { return w.header }

func (w *fastWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *fastWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(b)
}

func (w *fastWriter) writeTo(bw *bufio.Writer) {
	code := w.code
	if code == 0 {
		code = http.StatusOK
	}
	if w.header.Get("Content-Type") == "" && w.body.Len() > 0 {
		w.header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	w.header.Del("Content-Length")
	w.header.Del("Transfer-Encoding")
	w.header.Del("Connection")
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	for k, vs := range w.header {
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("Content-Length: ")
	bw.WriteString(strconv.Itoa(w.body.Len()))
	bw.WriteString("\r\nDate: ")
	bw.WriteString(time.Now().UTC().Format(http.TimeFormat))
	bw.WriteString("\r\n\r\n")
	bw.Write(w.body.Bytes())
}

// prefixConn is a connection handed to net/http with what the fast path
// already buffered of it.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// connQueue is the listener net/http serves: the connections handed off.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error   { q.once.Do(func() { close(q.done) }); return nil }
func (q *connQueue) Addr() net.Addr { return q.addr }
