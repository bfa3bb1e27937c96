package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// apiAgent is an agent with a strict tenant t1 (plenty of share) and t2
// (ceiling 1, share 1).
func apiAgent(t *testing.T) *Agent {
	t.Helper()
	a, err := New(Config{DataDir: t.TempDir(), Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	pushTenants(t, a, true, strict("t1", 1000, 0), strict("t2", 1, 0))
	grantLocally(t, a, "t1", "", 1000, time.Hour)
	grantLocally(t, a, "t2", "", 1, time.Hour)
	return a
}

// startAPIServer serves a's Handler through an APIServer on loopback.
func startAPIServer(t *testing.T, a *Agent) (string, *APIServer, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewAPIServer(&http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String(), s, done
}

var volatile = regexp.MustCompile(`("duration_seconds":|"opened_at":|"last_keepalive":)("[^"]*"|[0-9.e+-]+)`)

type answer struct {
	code                    int
	body, ctype, retryAfter string
}

// exchange sends raw requests on one connection and reads an answer for
// each.
func exchange(t *testing.T, addr string, reqs []string) []answer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var out []answer
	for _, r := range reqs {
		if _, err := io.WriteString(c, r); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to %q: %v", r, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("answer to %q: %v", r, err)
		}
		// Durations and times differ from run to run.
		body := volatile.ReplaceAllString(string(b), "$1#")
		out = append(out, answer{resp.StatusCode, body, resp.Header.Get("Content-Type"), resp.Header.Get("Retry-After")})
	}
	return out
}

func post(body string) string {
	return "POST /v1/sessions HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: " +
		itoa(len(body)) + "\r\n\r\n" + body
}

func del(id string) string { return "DELETE /v1/sessions/" + id + " HTTP/1.1\r\nHost: agent\r\n\r\n" }

// TestAPIServerAnswersAsNetHTTP: the same requests on one keep-alive
// connection get the same answers from the APIServer as from net/http's
// server, hot routes, handed-off routes and bad input alike; the
// connection keeps working after a hand-off.
func TestAPIServerAnswersAsNetHTTP(t *testing.T) {
	reqs := []string{
		post(`{"tenant":"t1","class":"audio","session":"s1"}`),
		post(`{"tenant":"t1","class":"audio","session":"s1"}`), // already open: 200
		post(`{"tenant":"t2","class":"audio","session":"a"}`),
		post(`{"tenant":"t2","class":"audio","session":"b"}`),            // refused: 429, Retry-After
		post(`{"tenant":"t1","class":"video-hd","session":"s1"}`),        // conflict: 409
		post(`{"tenant":"t1","class":"audio","session":"s2","bogus":1}`), // unknown field: 400
		post(`{"tenant":"t1"`), // bad JSON: 400
		del("s1"),
		del("s1"), // unknown: 404
		del("a"),
		"POST /v1/sessions HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n\r\n" + // handed off
			"2e\r\n" + `{"tenant":"t1","class":"audio","session":"s3"}` + "\r\n0\r\n\r\n",
		post(`{"tenant":"t1","class":"audio","session":"s4"}`), // after the hand-off
		"GET /v1/sessions?tenant=t1 HTTP/1.1\r\nHost: agent\r\n\r\n",
		"GET /nowhere HTTP/1.1\r\nHost: agent\r\n\r\n",
		del("s3"),
	}
	plain := httptest.NewServer(apiAgent(t).Handler())
	defer plain.Close()
	want := exchange(t, strings.TrimPrefix(plain.URL, "http://"), reqs)
	addr, srv, _ := startAPIServer(t, apiAgent(t))
	got := exchange(t, addr, reqs)
	if n := srv.fastServed.Load(); n != 10 {
		t.Errorf("%d requests answered on the fast path before the hand-off, want 10", n)
	}
	for i := range reqs {
		if got[i] != want[i] {
			t.Errorf("request %d %q:\n got  %+v\n want %+v", i, strings.SplitN(reqs[i], "\r\n", 2)[0], got[i], want[i])
		}
	}
	if want[3].code != 429 || want[3].retryAfter == "" || want[4].code != 409 || want[8].code != 404 {
		t.Errorf("the reference answers are not the cases meant: %+v", want)
	}
	// Only hot requests before any hand-off, on a fresh connection: the
	// fast path answers them all.
	before := srv.fastServed.Load()
	got = exchange(t, addr, []string{post(`{"tenant":"t1","class":"audio","session":"f1"}`), del("f1"), del("f1")})
	if n := srv.fastServed.Load() - before; n != 3 {
		t.Errorf("%d of 3 hot requests answered on the fast path", n)
	}
	if got[0].code != 201 || got[1].code != 200 || got[2].code != 404 || got[0].ctype != "application/json" {
		t.Errorf("fast path: %+v", got)
	}
}

func TestHotRoute(t *testing.T) {
	for _, c := range []struct {
		method, target string
		want           bool
	}{
		{"POST", "/v1/sessions", true},
		{"POST", "/v1/sessions?x=1", false},
		{"POST", "/v1/sessions/", false},
		{"DELETE", "/v1/sessions/abc", true},
		{"DELETE", "/v1/sessions/", false},
		{"DELETE", "/v1/sessions/..", false},
		{"DELETE", "/v1/sessions/a/keepalive", false},
		{"DELETE", "/v1/sessions/a%2Fb", false},
		{"GET", "/v1/sessions", false},
		{"PUT", "/v1/sessions", false},
	} {
		if got := hotRoute(c.method, c.target); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.method, c.target, got, c.want)
		}
	}
}

// TestAPIServerShutdown: idle keep-alive connections are closed and Serve
// returns ErrServerClosed.
func TestAPIServerShutdown(t *testing.T) {
	addr, s, done := startAPIServer(t, apiAgent(t))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, post(`{"tenant":"t1","class":"audio","session":"x"}`))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("open: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("the idle connection is still open after Shutdown")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
}
