package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

type apiClient struct {
	t   *testing.T
	srv *httptest.Server
}

func newAPI(t *testing.T, a *Agent) *apiClient {
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return &apiClient{t, srv}
}

// do sends a request and returns status, headers and the decoded JSON body.
func (c *apiClient) do(method, path, body string) (int, http.Header, any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		c.t.Fatalf("%s %s: content type %q, body %s", method, path, ct, raw)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		c.t.Fatalf("%s %s: body %q: %v", method, path, raw, err)
	}
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusTooManyRequests {
		m, ok := v.(map[string]any)
		if _, has := m["error"]; !ok || !has || len(m) != 1 {
			c.t.Fatalf("%s %s: error body %s is not {\"error\":...}", method, path, raw)
		}
	}
	return resp.StatusCode, resp.Header, v
}

func (c *apiClient) expect(method, path, body string, code int) any {
	c.t.Helper()
	got, _, v := c.do(method, path, body)
	if got != code {
		c.t.Fatalf("%s %s %s: status %d, want %d (body %v)", method, path, body, got, code, v)
	}
	return v
}

func TestHTTPOpen(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"), soft("full", 1, 1), wireSuspended("sus"), strict("strict", 10, 0))
	c := newAPI(t, a)
	open := `{"tenant":"t1","class":"audio","session":"s-1","ttl_seconds":30}`
	if v := c.expect("POST", "/v1/sessions", open, 201); v.(map[string]any)["admitted"] != true {
		t.Fatalf("open: %v", v)
	}
	c.expect("POST", "/v1/sessions", open, 200)
	c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"video-hd","session":"s-1"}`, 409)
	c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"audio","session":"s-2"}`, 201)

	for _, tc := range []struct{ body, reason, retry string }{
		{`{"tenant":"nobody","class":"audio","session":"r1"}`, ReasonUnknownTenant, "30"},
		{`{"tenant":"sus","class":"audio","session":"r2"}`, ReasonSuspended, "30"},
		{`{"tenant":"full","class":"audio","session":"r3"}`, ReasonCeiling, "5"},
		{`{"tenant":"strict","class":"audio","session":"r4"}`, ReasonClusterUnreachable, "1"},
	} {
		code, h, v := c.do("POST", "/v1/sessions", tc.body)
		m := v.(map[string]any)
		if code != 429 || m["admitted"] != false || m["reason"] != tc.reason || h.Get("Retry-After") != tc.retry {
			t.Fatalf("%s: %d %v retry-after %q", tc.body, code, v, h.Get("Retry-After"))
		}
	}
	for _, bad := range []string{
		`not json`,
		`{"tenant":"t1","class":"audio","session":"x","extra":1}`,
		`{"tenant":"t1","class":"hologram","session":"x"}`,
		`{"tenant":"","class":"audio","session":"x"}`,
		`{"tenant":"t1","class":"audio","session":""}`,
		`{"tenant":"t1","class":"audio","session":"` + strings.Repeat("x", 129) + `"}`,
		`{"tenant":"` + strings.Repeat("t", 65) + `","class":"audio","session":"x"}`,
		`{"tenant":"t1","class":"audio","session":"has space"}`,
		`{"tenant":"t1","class":"audio","session":"x","ttl_seconds":-1}`,
		`{"tenant":"t1","class":"audio","session":"x","ttl_seconds":1e12}`,
		`{"tenant":"t1","class":"audio","session":"x"} {}`,
	} {
		c.expect("POST", "/v1/sessions", bad, 400)
	}
	c.expect("POST", "/v1/sessions", `{"tenant":"`+strings.Repeat("x", 70<<10)+`"}`, 413)

	// keepalive, close
	c.expect("POST", "/v1/sessions/s-1/keepalive", "", 200)
	c.expect("POST", "/v1/sessions/nope/keepalive", "", 404)
	clk.advance(2500 * time.Millisecond)
	v := c.expect("DELETE", "/v1/sessions/s-1", "", 200)
	if d := v.(map[string]any)["duration_seconds"]; d != 2.5 {
		t.Fatalf("duration %v", d)
	}
	c.expect("DELETE", "/v1/sessions/s-1", "", 404)
	// Methods not allowed and unknown paths answer JSON errors too.
	c.expect("PATCH", "/v1/sessions", "", 405)
	c.expect("GET", "/v1/nothing", "", 404)
	// An id with a slash, escaped in the path.
	c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"ai","session":"a/b"}`, 201)
	c.expect("DELETE", "/v1/sessions/a%2Fb", "", 200)
}

func wireSuspended(tenant string) (ti wire.TenantInfo) {
	ti = meter(tenant)
	ti.Suspended = true
	return ti
}

func TestHTTPListResetStatus(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"), meter("t2"))
	c := newAPI(t, a)
	if v := c.expect("GET", "/v1/sessions", "", 200); len(v.([]any)) != 0 {
		t.Fatalf("empty list: %v", v)
	}
	for _, s := range []string{"c", "a", "b"} {
		c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"audio","session":"`+s+`"}`, 201)
	}
	c.expect("POST", "/v1/sessions", `{"tenant":"t2","class":"video-2k+","session":"z"}`, 201)
	list := c.expect("GET", "/v1/sessions?tenant=t1", "", 200).([]any)
	var ids []string
	for _, e := range list {
		m := e.(map[string]any)
		ids = append(ids, m["session"].(string))
		if _, err := time.Parse(time.RFC3339, m["opened_at"].(string)); err != nil || m["tenant"] != "t1" || m["class"] != "audio" {
			t.Fatalf("entry %v: %v", m, err)
		}
	}
	if strings.Join(ids, ",") != "a,b,c" {
		t.Fatalf("ids %v", ids)
	}
	if all := c.expect("GET", "/v1/sessions", "", 200).([]any); len(all) != 4 {
		t.Fatalf("all: %v", all)
	}
	c.expect("GET", "/v1/sessions?tenant=bad%20id", "", 400)
	st := c.expect("GET", "/v1/status", "", 200).(map[string]any)
	if st["open_sessions"] != 4.0 || st["tenants_known"] != 2.0 || st["connected"] != false || st["server"] != "" ||
		st["id"] != a.ID() || st["unacked_batches"] != 0.0 {
		t.Fatalf("status %v", st)
	}
	if la := st["last_ack"].(map[string]any); la["at"] != nil || la["seq"] != 0.0 {
		t.Fatalf("last_ack %v", la)
	}
	if v := c.expect("POST", "/v1/reset", "", 200); v.(map[string]any)["closed"] != 4.0 {
		t.Fatalf("reset %v", v)
	}
	c.expect("GET", "/healthz", "", 200)
}

func TestHTTPReconcile(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	c := newAPI(t, a)
	c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"audio","session":"keep"}`, 201)
	c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"audio","session":"gone"}`, 201)
	c.expect("POST", "/v1/sessions", `{"tenant":"t1","class":"audio","session":"moved"}`, 201)
	before := a.Sessions("")
	// Invalid entries: 400 and nothing changed.
	for _, bad := range []string{
		`{"sessions":[{"tenant":"t1","class":"audio","session":"keep"},{"tenant":"t1","class":"nope","session":"x"}]}`,
		`{"sessions":[{"tenant":"t1","class":"audio","session":"x"},{"tenant":"t2","class":"audio","session":"x"}]}`,
		`{"sessions":[{"tenant":"t1","class":"audio","session":""}]}`,
		`{"sessions":[{"tenant":"t1","class":"audio","session":"x","ttl":3}]}`,
		`{"sessions":[{"tenant":"t1","class":"audio","session":"x","started_at":"yesterday"}]}`,
		`{}`,
	} {
		c.expect("PUT", "/v1/sessions", bad, 400)
		if after := a.Sessions(""); len(after) != len(before) {
			t.Fatalf("invalid reconcile changed the table: %v", after)
		}
	}
	// An unknown tenant is fine: these sessions exist.
	v := c.expect("PUT", "/v1/sessions", `{"sessions":[
		{"tenant":"t1","class":"audio","session":"keep"},
		{"tenant":"t1","class":"video-hd","session":"moved"},
		{"tenant":"stranger","class":"ai","session":"new"}]}`, 200).(map[string]any)
	b, _ := json.Marshal(v)
	if string(b) != `{"closed":["gone","moved"],"opened":["moved","new"],"opened_over_ceiling":0,"reclassed":["moved"]}` {
		t.Fatalf("reconcile: %s", b)
	}
	if st := a.Status(); st.OpenSessions != 3 {
		t.Fatalf("open %d", st.OpenSessions)
	}
	// started_at: the session counts from then (here, from the agent's
	// start, before which nothing counts).
	clk.advance(3 * time.Second)
	c.expect("PUT", "/v1/sessions", `{"sessions":[
		{"tenant":"t1","class":"audio","session":"keep"},
		{"tenant":"t1","class":"video-hd","session":"moved"},
		{"tenant":"stranger","class":"ai","session":"new"},
		{"tenant":"t1","class":"audio","session":"late","started_at":"`+clk.now().Add(-2*time.Second).Format(time.RFC3339Nano)+`"}]}`, 200)
	if ss := a.Sessions("t1"); len(ss) != 3 || ss[1].Session != "late" || !ss[1].OpenedAt.Equal(clk.now().Add(-2*time.Second)) {
		t.Fatalf("sessions after a reconcile with started_at: %+v", ss)
	}
	v = c.expect("PUT", "/v1/sessions", `{"sessions":[]}`, 200).(map[string]any)
	if len(v["closed"].([]any)) != 4 || len(v["opened"].([]any)) != 0 {
		t.Fatalf("reconcile to empty: %v", v)
	}
}
