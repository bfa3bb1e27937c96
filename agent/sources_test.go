package agent

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func sessionIDs(ss []SessionInfo) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Session+"@"+s.Source)
	}
	return out
}

// TestReconcileScopedToSource: a reconcile of one source never opens,
// closes or changes another source's sessions, and the plain Reconcile is
// the scope of SourceAPI.
func TestReconcileScopedToSource(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	mustOpen := func(o OpenOptions) {
		t.Helper()
		if res, err := a.OpenWith(o); err != nil || !res.Admitted {
			t.Fatalf("open %+v: %+v %v", o, res, err)
		}
	}
	mustOpen(OpenOptions{Tenant: "t1", Class: "audio", Session: "api-1"})
	mustOpen(OpenOptions{Tenant: "t1", Class: "audio", Session: "ngx-1", Source: "nginx-rtmp"})
	mustOpen(OpenOptions{Tenant: "t1", Class: "audio", Session: "ngx-2", Source: "nginx-rtmp"})
	mustOpen(OpenOptions{Tenant: "t1", Class: "audio", Session: "lk-1", Source: "livekit"})

	// nginx's list: ngx-2 only, plus lk-1 (another source's: skipped).
	res, err := a.ReconcileScoped(ReconcileScope{Source: "nginx-rtmp"}, []SessionSpec{
		{Tenant: "t1", Class: "audio", Session: "ngx-2"}, {Tenant: "t1", Class: "audio", Session: "lk-1"},
		{Tenant: "t1", Class: "video-hd", Session: "ngx-3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Closed, []string{"ngx-1"}) || !slices.Equal(res.Opened, []string{"ngx-3"}) || !slices.Equal(res.Skipped, []string{"lk-1"}) {
		t.Fatalf("result %+v", res)
	}
	want := []string{"api-1@api", "lk-1@livekit", "ngx-2@nginx-rtmp", "ngx-3@nginx-rtmp"}
	if got := sessionIDs(a.Sessions("")); !slices.Equal(got, want) {
		t.Fatalf("sessions %v, want %v", got, want)
	}
	// The plain reconcile to an empty list closes the API's only.
	opened, closed, err := a.Reconcile([]SessionSpec{})
	if err != nil || len(opened) != 0 || !slices.Equal(closed, []string{"api-1"}) {
		t.Fatalf("plain reconcile: %v %v %v", opened, closed, err)
	}
	if got := a.SourceCounts(); got["nginx-rtmp"] != 2 || got["livekit"] != 1 || got["api"] != 0 || len(got) != 2 {
		t.Fatalf("source counts %v", got)
	}
	if _, err := a.ReconcileScoped(ReconcileScope{Source: "Bad Source"}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad source: %v", err)
	}
}

// TestReconcileScopedOptions: an unlisted TTL session ends at its last
// keepalive; SeenBefore keeps sessions newer than the list; KeepTTL keeps
// reservations; NoOpen opens nothing.
func TestReconcileScopedOptions(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	src := "nginx-rtmp"
	open := func(id string, ttl time.Duration) {
		t.Helper()
		if _, err := a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: id, TTL: ttl, Source: src}); err != nil {
			t.Fatal(err)
		}
	}
	open("old", time.Minute)
	clk.advance(2 * time.Second)
	a.Keepalive("old") // last sign of life at 2 s
	clk.advance(3 * time.Second)
	listTaken := clk.now()
	clk.advance(time.Second)
	open("new", time.Minute) // opened after the list was taken
	clk.advance(time.Second)
	res, err := a.ReconcileScoped(ReconcileScope{Source: src, SeenBefore: listTaken, NoOpen: true},
		[]SessionSpec{{Tenant: "t1", Class: "audio", Session: "ghost"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Closed, []string{"old"}) || len(res.Opened) != 0 {
		t.Fatalf("result %+v", res)
	}
	if got := sessionIDs(a.Sessions("")); !slices.Equal(got, []string{"new@nginx-rtmp"}) {
		t.Fatalf("sessions %v", got)
	}
	// "old" is billed 2 s (to its keepalive), "new" 1 s so far (provisional
	// until a keepalive: a cut holds it back).
	a.Keepalive("new")
	es, _ := cutEntries(a)
	if e, _ := entryOf(es, "t1", "audio"); e.SessionMicros != 3_000_000 || e.Closed != 1 {
		t.Fatalf("entry %+v, want 3 s and one closed", e)
	}
	// KeepTTL leaves the reservation to its TTL.
	res, err = a.ReconcileScoped(ReconcileScope{Source: src, KeepTTL: true}, nil)
	if err != nil || len(res.Closed) != 0 {
		t.Fatalf("keep TTL: %+v %v", res, err)
	}
}

// TestConfirmReservation: a reservation's reserved time is not billed; a
// confirmed session counts from its confirmation without a TTL; one never
// confirmed lapses and bills nothing.
func TestConfirmReservation(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	for _, id := range []string{"joins", "never"} {
		if res, err := a.OpenWith(OpenOptions{Tenant: "t1", Class: "video-hd", Session: id, TTL: 30 * time.Second}); err != nil || !res.Admitted {
			t.Fatal(res, err)
		}
	}
	clk.advance(5 * time.Second) // the client takes 5 s to join
	if err := a.Confirm("joins", "livekit"); err != nil {
		t.Fatal(err)
	}
	if err := a.Confirm("nobody", "livekit"); !errors.Is(err, ErrNotReservation) {
		t.Fatalf("confirm of nothing: %v", err)
	}
	clk.advance(40 * time.Second) // "never" lapses meanwhile
	d, err := a.Close("joins")
	if err != nil || d != 40*time.Second {
		t.Fatalf("close: %v %v, want 40 s", d, err)
	}
	es, _ := cutEntries(a)
	if e, _ := entryOf(es, "t1", "video-hd"); e.SessionMicros != 40_000_000 || e.Closed != 2 || e.Opened != 2 {
		t.Fatalf("entry %+v: want 40 s billed (the joined time only), 2 opened and closed", e)
	}
}

// TestForceAndSetClass: a forced open is counted whatever the plan says;
// SetClass moves a session to another class at once.
func TestForceAndSetClass(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, soft("t1", 1, 1)) // at its ceiling
	if res, _ := a.Open("t1", "audio", "asked", 0); res.Admitted || res.Reason != ReasonCeiling {
		t.Fatalf("plain open over the ceiling: %+v", res)
	}
	res, err := a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "joined", Source: "livekit", Force: true})
	if err != nil || !res.Admitted {
		t.Fatalf("forced: %+v %v", res, err)
	}
	if m := a.TenantMode("t1"); m != "soft" {
		t.Fatalf("mode %q", m)
	}
	if m := a.TenantMode("nobody"); m != "" {
		t.Fatalf("mode of an unknown tenant %q", m)
	}
	clk.advance(2 * time.Second)
	if err := a.SetClass("joined", "video-fhd"); err != nil {
		t.Fatal(err)
	}
	clk.advance(3 * time.Second)
	es, _ := cutEntries(a)
	au, _ := entryOf(es, "t1", "audio")
	fhd, _ := entryOf(es, "t1", "video-fhd")
	if au.SessionMicros != 2_000_000 || au.Closed != 1 || fhd.SessionMicros != 3_000_000 || fhd.Opened != 1 {
		t.Fatalf("audio %+v, video-fhd %+v", au, fhd)
	}
	// The connector that opened it asks again with another class: the
	// session is the one open (the connector classed it since); the API
	// asking so is a conflict.
	if res, err := a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "joined", Source: "livekit"}); err != nil || !res.Existing {
		t.Fatalf("the same connector again: %+v %v", res, err)
	}
	if _, err := a.Open("t1", "audio", "joined", 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("the API with another class: %v", err)
	}
	if err := a.SetClass("nothing", "audio"); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("set class of nothing: %v", err)
	}
	if err := a.SetClass("joined", "8k"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad class: %v", err)
	}
}

// TestPersistSource: the source survives a restart, and a session record
// written before sources (7 elements) loads as one of SourceAPI.
func TestPersistSource(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "n1", Source: "nginx-rtmp", TTL: time.Minute})
	a.Open("t1", "audio", "p1", 0)
	a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "r1", TTL: time.Minute})
	a.Confirm("r1", "livekit")
	mustPersist(t, a)
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	want := []string{"n1@nginx-rtmp", "p1@api", "r1@livekit"}
	if got := sessionIDs(b.Sessions("")); !slices.Equal(got, want) {
		t.Fatalf("restored %v, want %v", got, want)
	}
	if ss := b.Sessions(""); ss[2].TTLSeconds != 0 {
		t.Fatalf("the confirmed reservation came back with a TTL: %+v", ss[2])
	}

	// An old record: [id, tenant, class, ttl, opened, ka, anchor].
	enc := func(n int) []byte {
		t.Helper()
		var buf strings.Builder
		e := msgpack.NewEncoder(&buf)
		e.EncodeArrayLen(n)
		e.EncodeString("old")
		e.EncodeString("t1")
		e.EncodeString("audio")
		for range 4 {
			e.EncodeInt(0)
		}
		if n > 7 {
			e.EncodeString("nginx-rtmp")
		}
		if n > 8 {
			e.EncodeInt(42) // in doubt since
		}
		if n > 9 {
			e.EncodeString("user-7")
		}
		if n > 10 {
			e.EncodeString("a future element")
		}
		return []byte(buf.String())
	}
	var s stSession
	if err := msgpack.Unmarshal(enc(7), &s); err != nil || s.Source != SourceAPI || s.ID != "old" {
		t.Fatalf("old record: %+v %v", s, err)
	}
	if err := msgpack.Unmarshal(enc(8), &s); err != nil || s.Source != "nginx-rtmp" || s.Doubt != 0 {
		t.Fatalf("a record with a source: %+v %v", s, err)
	}
	if err := msgpack.Unmarshal(enc(11), &s); err != nil || s.Source != "nginx-rtmp" || s.Doubt != 42 || s.User != "user-7" {
		t.Fatalf("newer record: %+v %v", s, err)
	}
}

// TestConnectorCounts: a connector's handle counts its hooks, admissions,
// refusals (its own and admission's) and reconciles, which GET /v1/status
// and /metrics show.
func TestConnectorCounts(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, soft("t1", 1, 0))
	if _, err := a.Connector("api"); err == nil {
		t.Fatal("a connector named api")
	}
	c, err := a.Connector("nginx-rtmp")
	if err != nil {
		t.Fatal(err)
	}
	if c2, _ := a.Connector("nginx-rtmp"); c2 != c {
		t.Fatal("a second handle for one name")
	}
	for range 4 {
		c.Hook()
	}
	c.Open(OpenOptions{Tenant: "t1", Class: "audio", Session: "s1"})
	c.Open(OpenOptions{Tenant: "t1", Class: "audio", Session: "s1"}) // already open: not counted again
	c.Open(OpenOptions{Tenant: "t1", Class: "audio", Session: "s2"}) // ceiling
	c.Refuse(ReasonUnmappedTenant)
	c.Open(OpenOptions{Tenant: "t 1", Class: "audio", Session: "s3"}) // bad
	c.Reconcile(ReconcileScope{NoOpen: true}, []SessionSpec{{Tenant: "t1", Class: "audio", Session: "s1"}})
	c.ReconcileFailed(errors.New("stat unreachable"))
	st := a.Status().Connectors["nginx-rtmp"]
	if st.Hooks != 4 || st.Admitted != 1 || st.Refused[ReasonCeiling] != 1 || st.Refused[ReasonUnmappedTenant] != 1 ||
		st.BadRequests != 1 || st.Open != 1 || st.Reconciles != 2 || st.ReconcileErrors != 1 ||
		st.LastReconcile == nil || st.LastReconcile.Error != "stat unreachable" {
		t.Fatalf("status %+v", st)
	}
	if ss := c.Sessions(); len(ss) != 1 || ss[0].Session != "s1" || ss[0].Source != "nginx-rtmp" {
		t.Fatalf("sessions %+v", ss)
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`headroom_agent_connector_hooks_total{connector="nginx-rtmp"} 4`,
		`headroom_agent_connector_refused_total{connector="nginx-rtmp",reason="unmapped-tenant"} 1`,
		`headroom_agent_connector_refused_total{connector="nginx-rtmp",reason="ceiling"} 1`,
		`headroom_agent_connector_sessions_open{connector="nginx-rtmp"} 1`,
		`headroom_agent_connector_reconcile_errors_total{connector="nginx-rtmp"} 1`,
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	resp, err = http.Get(srv.URL + "/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"source":"nginx-rtmp"`) {
		t.Errorf("GET /v1/sessions: %s", body)
	}
}
