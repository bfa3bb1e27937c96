package nginxrtmp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/agenttest"
	"github.com/headroom-rtc/headroom/wire"
)

// rig is an agent on a stand-in cluster with the connector's handler.
type rig struct {
	t       testing.TB
	cluster *agenttest.Server
	a       *agent.Agent
	c       *Connector
	srv     *httptest.Server
}

func newRig(t testing.TB, cfg Config, tenants ...wire.TenantInfo) *rig {
	t.Helper()
	a, cluster := agenttest.StartAgent(t, tenants...)
	c, err := New(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return &rig{t: t, cluster: cluster, a: a, c: c, srv: srv}
}

// hook posts a hook as nginx-rtmp does and returns the code, reason header
// and body.
func (r *rig) hook(fields ...string) (int, string, string) {
	r.t.Helper()
	vs := url.Values{"app": {"live"}, "tcurl": {"rtmp://127.0.0.1/live"}, "addr": {"127.0.0.1"}, "flashver": {"FMLE/3.0"}}
	for i := 0; i+1 < len(fields); i += 2 {
		vs.Set(fields[i], fields[i+1])
	}
	resp, err := http.Post(r.srv.URL, "application/x-www-form-urlencoded", strings.NewReader(vs.Encode()))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(ReasonHeader), strings.TrimSpace(string(b))
}

func (r *rig) open() int { return r.a.Status().Connectors[Name].Open }

func soft(tenant string, ceiling uint64) wire.TenantInfo {
	return wire.TenantInfo{Tenant: tenant, Plan: "duo", Mode: "soft", Ceiling: ceiling}
}

func TestHookAdmitsRefusesAndCloses(t *testing.T) {
	r := newRig(t, Config{}, soft("acme", 2))
	pub := func(clientid string, extra ...string) (int, string, string) {
		return r.hook(append([]string{"call", "publish", "name", "cam" + clientid, "clientid", clientid, "type", "live", "tenant", "acme"}, extra...)...)
	}
	if code, _, id := pub("1"); code != 200 || !strings.HasPrefix(id, "rtmp-pub-1-") {
		t.Fatalf("first publisher: %d %q", code, id)
	}
	if code, _, _ := pub("2", "class", "audio"); code != 200 {
		t.Fatalf("second publisher: %d", code)
	}
	code, reason, _ := pub("3")
	if code != 403 || reason != agent.ReasonCeiling {
		t.Fatalf("third publisher over a ceiling of 2: %d %q", code, reason)
	}
	code, reason, _ = r.hook("call", "play", "name", "cam1", "clientid", "4", "tenant", "acme")
	if code != 403 || reason != agent.ReasonCeiling {
		t.Fatalf("player over the ceiling: %d %q", code, reason)
	}
	// No tenant in the URL: refused, and nothing of it is stored.
	code, reason, body := r.hook("call", "publish", "name", "orphan", "clientid", "5")
	if code != 403 || reason != agent.ReasonUnmappedTenant || !strings.Contains(body, `argument "tenant"`) {
		t.Fatalf("unmapped: %d %q %q", code, reason, body)
	}
	// A class argument that names no class is a bad request.
	if code, _, _ := pub("6", "class", "8k"); code != 400 {
		t.Fatalf("bad class: %d", code)
	}
	if code, _, _ := r.hook("call", "publish"); code != 400 {
		t.Fatalf("no clientid: %d", code)
	}
	if code, _, _ := r.hook("call", "dance", "clientid", "1"); code != 400 {
		t.Fatalf("unknown call: %d", code)
	}
	ss := r.a.Sessions("")
	if len(ss) != 2 || ss[0].Class != "video-hd" || ss[1].Class != "audio" || ss[0].Source != Name || ss[0].TTLSeconds != DefaultTTL.Seconds() {
		t.Fatalf("sessions %+v", ss)
	}
	st := r.a.Status().Connectors[Name]
	if st.Admitted != 2 || st.Refused[agent.ReasonCeiling] != 2 || st.Refused[agent.ReasonUnmappedTenant] != 1 || st.BadRequests != 3 || st.Hooks != 8 ||
		st.HookMaxMs <= 0 || st.HookP50Ms > st.HookMaxMs {
		t.Fatalf("connector status %+v", st)
	}

	// on_update keeps alive; on_publish_done and on_done both arrive.
	before := r.a.Sessions("")[0].LastKeepalive
	time.Sleep(5 * time.Millisecond) // a later keepalive time to see (not a wait for anything)
	if code, _, _ := r.hook("call", "update_publish", "name", "cam1", "clientid", "1", "time", "2", "tenant", "acme"); code != 200 {
		t.Fatalf("update: %d", code)
	}
	if after := r.a.Sessions("")[0].LastKeepalive; !after.After(before) {
		t.Fatalf("update did not keep alive: %v then %v", before, after)
	}
	r.hook("call", "publish_done", "name", "cam1", "clientid", "1", "tenant", "acme")
	r.hook("call", "done", "name", "cam1", "clientid", "1", "tenant", "acme")
	if n := r.open(); n != 1 {
		t.Fatalf("%d open after the first left, want 1", n)
	}
	// Nothing of the refused or unmapped hooks reached the cluster but the
	// refusals of acme.
	if err := agenttest.WaitFor(10*time.Second, func() bool { return r.cluster.Open("acme") == 1 }); err != nil {
		t.Fatalf("cluster sees %d open for acme", r.cluster.Open("acme"))
	}
	for _, cls := range []string{"audio", "video-hd", "video-fhd", "ai"} {
		if u := r.cluster.Usage("", cls); u != (agenttest.Usage{}) {
			t.Fatalf("usage of an empty tenant %+v", u)
		}
	}
}

// TestClientIDReused: nginx restarted and hands clientid 1 out again: the
// earlier session ends at its last sign of life, the new one is admitted.
func TestClientIDReused(t *testing.T) {
	r := newRig(t, Config{}, soft("acme", 1))
	if code, _, _ := r.hook("call", "publish", "name", "a", "clientid", "1", "tenant", "acme"); code != 200 {
		t.Fatal(code)
	}
	first := r.a.Sessions("")[0].Session
	time.Sleep(2 * time.Millisecond) // a new millisecond for a new id
	code, _, id := r.hook("call", "publish", "name", "a", "clientid", "1", "tenant", "acme")
	if code != 200 || id == first {
		t.Fatalf("reused clientid: %d %q (first %q)", code, id, first)
	}
	if ss := r.a.Sessions(""); len(ss) != 1 || ss[0].Session != id {
		t.Fatalf("sessions %+v", ss)
	}
}

// TestUpdateOfUnknownClient: a client kept alive that the agent does not
// know is counted again, not cut.
func TestUpdateOfUnknownClient(t *testing.T) {
	r := newRig(t, Config{}, soft("acme", 1))
	code, _, _ := r.hook("call", "update_play", "name", "a", "clientid", "9", "tenant", "acme", "class", "audio")
	if ss := r.a.Sessions(""); code != 200 || len(ss) != 1 || ss[0].Class != "audio" || !strings.HasPrefix(ss[0].Session, "rtmp-play-9-") {
		t.Fatalf("%d %+v", code, ss)
	}
}

// statPage serves a /stat page that the test sets.
type statPage struct {
	mu   sync.Mutex
	body string
	code int
}

func (p *statPage) set(code int, body string) {
	p.mu.Lock()
	p.code, p.body = code, body
	p.mu.Unlock()
}

func (p *statPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.WriteHeader(p.code)
	io.WriteString(w, p.body)
}

// stat writes a page in nginx-rtmp's format: streams of "name:WxH" with
// clients "id" (players) or "id*" (the publisher).
func stat(pid, uptime int, streams map[string][]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<rtmp><nginx_version>1.22.1</nginx_version><pid>%d</pid><uptime>%d</uptime><server><application><name>live</name><live>", pid, uptime)
	for name, clients := range streams {
		n, res, _ := strings.Cut(name, ":")
		fmt.Fprintf(&b, "<stream><name>%s</name>", n)
		for _, c := range clients {
			id, pub := strings.CutSuffix(c, "*")
			fmt.Fprintf(&b, "<client><id>%s</id><address>127.0.0.1</address><time>1000</time>", id)
			if pub {
				b.WriteString("<publishing/>")
			}
			b.WriteString("<active/></client>")
		}
		if w, h, ok := strings.Cut(res, "x"); ok {
			fmt.Fprintf(&b, "<meta><video><width>%s</width><height>%s</height></video><audio></audio></meta>", w, h)
		}
		b.WriteString("</stream>")
	}
	b.WriteString("</live></application></server></rtmp>")
	return b.String()
}

func TestStatReconcile(t *testing.T) {
	page := &statPage{}
	ps := httptest.NewServer(page)
	defer ps.Close()
	r := newRig(t, Config{StatURL: ps.URL}, wire.TenantInfo{Tenant: "acme", Plan: "payg", Mode: "meter"})
	for _, h := range [][]string{
		{"call", "publish", "name", "big", "clientid", "1"},
		{"call", "play", "name", "big", "clientid", "2"},
		{"call", "publish", "name", "small", "clientid", "3"},
		{"call", "play", "name", "small", "clientid", "4"},
	} {
		if code, _, _ := r.hook(append(h, "tenant", "acme")...); code != 200 {
			t.Fatalf("%v: %d", h, code)
		}
	}
	// An unreadable page changes nothing.
	page.set(500, "oops")
	if _, err := r.c.ReconcileNow(context.Background()); err == nil || r.open() != 4 {
		t.Fatalf("failed read: %v, %d open", err, r.open())
	}
	if lr := r.a.Status().Connectors[Name].LastReconcile; lr == nil || lr.Error == "" {
		t.Fatalf("last reconcile %+v", lr)
	}
	// nginx lists the big stream at 1920x1080 with its player, the small
	// one at 320x240 without its player (a lost on_done).
	page.set(200, stat(100, 60, map[string][]string{"big:1920x1080": {"1*", "2"}, "small:320x240": {"3*"}}))
	res, err := r.c.ReconcileNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	classes := map[string]string{}
	for _, s := range r.a.Sessions("") {
		k, id, _, _ := parseSessionID(s.Session)
		classes[fmt.Sprint(k, id)] = s.Class
	}
	want := map[string]string{"pub1": "video-fhd", "play2": "video-fhd", "pub3": "video-hd"}
	if fmt.Sprint(classes) != fmt.Sprint(want) || len(res.Ended()) != 1 || len(res.Reclassed) != 2 { // 1 and 2 reclassed, 4 gone
		t.Fatalf("after the stat: %v (result %+v), want %v", classes, res, want)
	}
	// A reclassed session is still the client's: its on_update finds it.
	if code, _, _ := r.hook("call", "update_publish", "name", "big", "clientid", "1", "tenant", "acme"); code != 200 || r.open() != 3 {
		t.Fatalf("update after reclass: %d, %d open", code, r.open())
	}
	// nginx restarted (a minute later, uptime 0) and lists a new client 1:
	// every session of the earlier nginx ends.
	r.c.cfg.now = func() time.Time { return time.Now().Add(time.Minute) }
	page.set(200, stat(101, 0, map[string][]string{"big": {"1*"}}))
	if _, err := r.c.ReconcileNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := r.open(); n != 0 {
		t.Fatalf("%d open after nginx restarted", n)
	}
	if st := r.a.Status().Connectors[Name]; st.ReconcileClosed != 4 || st.Reconciles != 3 || st.ReconcileErrors != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestStatObserved: the page nginx-rtmp 1.2.2 served on this machine.
func TestStatObserved(t *testing.T) {
	f, err := os.Open("testdata/stat.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := ParseStat(f)
	if err != nil {
		t.Fatal(err)
	}
	cs := st.Clients()
	if st.PID == 0 || len(cs) != 2 || cs[0].ID != 3 || cs[0].Publishing || !cs[1].Publishing || cs[1].Pixels != 320*240 || !cs[1].Known {
		t.Fatalf("%+v %+v", st, cs)
	}
	if _, err := ParseStat(strings.NewReader("<html>not stat</html>")); err == nil {
		t.Fatal("a page without <pid> parsed")
	}
}

func TestSessionIDRoundTrip(t *testing.T) {
	id := sessionID(kindPlay, 42, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixMilli())
	k, c, ms, ok := parseSessionID(id)
	if !ok || k != kindPlay || c != 42 || ms != time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixMilli() {
		t.Fatalf("%q → %v %v %v %v", id, k, c, ms, ok)
	}
	for _, bad := range []string{"rtmp-pub-1", "rtmp-x-1-a", "call-1", "rtmp-pub-z-1"} {
		if _, _, _, ok := parseSessionID(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestHookUser: the stream URL's user argument is the session's user (an
// id that is not a valid one is kept distinct by its hash); without it the
// session has none.
func TestHookUser(t *testing.T) {
	r := newRig(t, Config{}, soft("acme", 10))
	for _, c := range []struct{ clientid, user, want string }{
		{"1", "alice", "alice"},
		{"2", "émile", agent.UserOf("émile")},
		{"3", "", ""},
	} {
		fields := []string{"call", "publish", "name", "cam" + c.clientid, "clientid", c.clientid, "tenant", "acme"}
		if c.user != "" {
			fields = append(fields, "user", c.user)
		}
		code, _, id := r.hook(fields...)
		if code != 200 {
			t.Fatalf("publisher %s: %d", c.clientid, code)
		}
		var got string
		for _, s := range r.a.Sessions("acme") {
			if s.Session == id {
				got = s.User
			}
		}
		if got != c.want {
			t.Errorf("publisher %s with user %q: session user %q, want %q", c.clientid, c.user, got, c.want)
		}
	}
}
