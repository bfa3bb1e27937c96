package mosquitto_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/agenttest"
	"github.com/headroom-rtc/headroom/agent/connect/mosquitto"
	"github.com/headroom-rtc/headroom/wire"
)

// The plugin's Go side against a real agent's API (the broker's part is
// TestMosquitto in cmd/headroom, with the real Mosquitto).
func agentAPI(t *testing.T, tenants ...wire.TenantInfo) (*agent.Agent, string) {
	t.Helper()
	a, _ := agenttest.StartAgent(t, tenants...)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func plugin(t *testing.T, url string, opts map[string]string) (*mosquitto.Plugin, *[]string) {
	t.Helper()
	o := map[string]string{"agent": url, "separator": ":"}
	for k, v := range opts {
		o[k] = v
	}
	cfg, err := mosquitto.ParseOptions(o)
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	cfg.Log = func(_ bool, msg string) { logged = append(logged, msg) }
	p, err := mosquitto.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(time.Now())
	return p, &logged
}

func TestTakeoverAndRefusedDisconnect(t *testing.T) {
	a, url := agentAPI(t, wire.TenantInfo{Tenant: "acme", Plan: "p", Mode: "soft", Ceiling: 2})
	p, logged := plugin(t, url, nil)
	if ok, _ := p.Connect(1, "d1", "acme:d1"); !ok {
		t.Fatal("d1 refused")
	}
	if ok, _ := p.Connect(2, "d1", "acme:d1"); !ok { // a takeover of d1
		t.Fatal("the takeover refused")
	}
	p.Disconnect(1, "d1") // the old connection's late DISCONNECT
	if n := a.Status().OpenSessions; n != 1 {
		t.Fatalf("after a takeover %d open, want 1", n)
	}
	if ok, _ := p.Connect(3, "d2", "acme:d2"); !ok {
		t.Fatal("d2 refused: the takeover was counted twice")
	}
	if ok, reason := p.Connect(4, "d3", "acme:d3"); ok || reason != agent.ReasonCeiling {
		t.Fatalf("d3 over a ceiling of 2: %v %q", ok, reason)
	}
	p.Disconnect(4, "") // a refused client's DISCONNECT: no client id
	if ok, reason := p.Connect(5, "x", ":x"); ok || reason != mosquitto.ReasonUnmappedTenant {
		t.Fatalf("a username with no tenant: %v %q", ok, reason)
	}
	if n := a.Status().OpenSessions; n != 2 {
		t.Fatalf("after refusals %d open, want 2", n)
	}
	if !strings.Contains(strings.Join(*logged, "\n"), `client "d3" refused (not authorised): ceiling`) {
		t.Fatalf("the broker's log lacks the refusal: %q", *logged)
	}
	p.Disconnect(2, "d1")
	if s := a.Sessions(""); len(s) != 1 || s[0].Session != "mqtt:d2" || s[0].Class != "device" || s[0].Source != "mosquitto" || s[0].User != "d2" {
		t.Fatalf("after d1's DISCONNECT: %+v", s)
	}
	if st := a.Status().Connectors["mosquitto"]; st.Refused[mosquitto.ReasonUnmappedTenant] != 1 || st.Refused[agent.ReasonCeiling] != 1 {
		t.Fatalf("connector status %+v", st)
	}

	// A restarted broker's plugin reconciles the empty set at start.
	plugin(t, url, nil)
	if n := a.Status().OpenSessions; n != 0 {
		t.Fatalf("after a broker restart %d open, want 0", n)
	}
}

// The agent unreachable: fail open lets the device in and the next
// reconcile counts it once the agent answers; fail closed refuses it.
func TestFailOpenAndClosed(t *testing.T) {
	a, _ := agentAPI(t, wire.TenantInfo{Tenant: "acme", Plan: "p", Mode: "meter"})
	var down atomic.Bool
	down.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		a.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	closed, _ := plugin(t, srv.URL, map[string]string{"fail": "closed"})
	if ok, reason := closed.Connect(1, "d1", "acme:d1"); ok || reason != mosquitto.ReasonAgentUnreachable {
		t.Fatalf("fail closed: %v %q", ok, reason)
	}
	open, logged := plugin(t, srv.URL, nil)
	if ok, _ := open.Connect(1, "d1", "acme:d1"); !ok {
		t.Fatal("fail open refused")
	}
	connected := time.Now()
	if !strings.Contains(strings.Join(*logged, "\n"), "fail open") {
		t.Fatalf("no log of the fail-open admission: %q", *logged)
	}
	if n := a.Status().OpenSessions; n != 0 {
		t.Fatalf("%d open at an agent that was down", n)
	}
	down.Store(false)
	open.Tick(time.Now().Add(time.Minute))
	if s := a.Sessions(""); len(s) != 1 || s[0].Session != "mqtt:d1" || s[0].Source != "mosquitto" {
		t.Fatalf("after the reconcile: %+v, want the device let in", s)
	} else if s[0].OpenedAt.After(connected) {
		t.Fatalf("the device let in while the agent was down counts from %v, after its CONNECT (before %v)", s[0].OpenedAt, connected)
	}
}

func TestParseOptions(t *testing.T) {
	for _, bad := range []map[string]string{
		{"agent": "127.0.0.1:9380"}, {"tenant_from": "password"}, {"fail": "maybe"}, {"timeout": "0s"}, {"colour": "blue"},
	} {
		if _, err := mosquitto.ParseOptions(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	cfg, err := mosquitto.ParseOptions(map[string]string{"tenant_from": "client-id", "separator": "/"})
	if err != nil || !cfg.FailOpen || cfg.Class != "device" || cfg.Tenant("u", "acme/toy-1") != "acme" || cfg.Tenant("u", "solo") != "solo" {
		t.Fatalf("%+v %v", cfg, err)
	}
	if id := mosquitto.SessionID("has space"); !strings.HasPrefix(id, "mqtt:h-") {
		t.Fatalf("session id of an id with a space: %q", id)
	}
}
