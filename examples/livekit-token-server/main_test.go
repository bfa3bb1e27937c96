package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/agenttest"
	"github.com/headroom-rtc/headroom/wire"
)

// TestTokenEndpoint: an admitted reservation gets a LiveKit token for the
// room, identity and tenant; a refused one gets none; the reservation is
// on the agent as a LiveKit session with the TTL.
func TestTokenEndpoint(t *testing.T) {
	cluster, err := agenttest.NewServer(wire.TenantInfo{Tenant: "acme", Plan: "solo", Mode: "soft", Ceiling: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	a, err := agent.New(agent.Config{DataDir: t.TempDir(), Servers: []string{cluster.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := agenttest.WaitFor(10*time.Second, func() bool { return a.Status().TenantsKnown == 1 }); err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(a.Handler())
	defer api.Close()
	const key, secret = "APIkey", "a-secret-of-at-least-32-characters-long"
	ts := httptest.NewServer(&tokenServer{agent: api.URL, key: key, secret: secret, url: "ws://lk", ttl: 30 * time.Second, client: http.DefaultClient})
	defer ts.Close()
	get := func(q string) (int, tokenResponse) {
		resp, err := http.Get(ts.URL + "/token?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr tokenResponse
		json.NewDecoder(resp.Body).Decode(&tr)
		return resp.StatusCode, tr
	}
	code, tr := get("tenant=acme&room=stand%20up&identity=alice")
	if code != 200 || tr.Token == "" || tr.Session != "stand%20up/alice" {
		t.Fatalf("admitted: %d %+v", code, tr)
	}
	v, err := auth.ParseAPIToken(tr.Token)
	if err != nil {
		t.Fatal(err)
	}
	_, grants, err := v.Verify(secret)
	if err != nil || grants.Identity != "alice" || grants.Video.Room != "stand up" || !grants.Video.RoomJoin || grants.Attributes["tenant"] != "acme" {
		t.Fatalf("token grants %+v %v", grants, err)
	}
	ss := a.Sessions("acme")
	if len(ss) != 1 || ss[0].Session != "stand%20up/alice" || ss[0].Source != "livekit" || ss[0].TTLSeconds != 30 {
		t.Fatalf("reservation %+v", ss)
	}
	if code, tr := get("tenant=acme&room=standup&identity=bob"); code != 429 || tr.Token != "" || tr.Reason != agent.ReasonCeiling {
		t.Fatalf("over the ceiling: %d %+v", code, tr)
	}
	if code, tr := get("room=standup&identity=bob"); code != 400 || tr.Token != "" {
		t.Fatalf("no tenant: %d %+v", code, tr)
	}
	api.Close()
	if code, tr := get("tenant=acme&room=standup&identity=carol"); code != 503 || tr.Token != "" {
		t.Fatalf("agent down: %d %+v", code, tr)
	}
}
