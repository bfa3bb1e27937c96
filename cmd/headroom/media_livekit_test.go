package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	lk "github.com/livekit/protocol/livekit"

	"github.com/headroom-rtc/headroom/agent/connect/livekit"
	"github.com/headroom-rtc/headroom/agent/connect/livekit/livekittest"
)

// TestLiveKit: the agent process as LiveKit's webhook receiver, with a
// strict plan of ceiling 1 on the real aggregator. LiveKit's side is its
// own library: webhooks signed as livekit-server signs them, RoomService
// behind the protocol module's generated Twirp server. A reservation made at
// the token endpoint is admitted and confirmed by participant_joined, a
// second one refused; a participant that joins without a reservation is
// counted and removed through RoomService; a participant that RoomService
// lists without a session is counted by the reconcile, and closed once it
// is no longer listed; a webhook with another secret changes nothing.
func TestLiveKit(t *testing.T) {
	const key, secret = "APIheadroom-e2e", "an-e2e-secret-of-at-least-32-chars"
	tl := newTimeline(t)
	defer tl.summary()
	rs := livekittest.NewRoomService(key, secret)
	defer rs.Close()
	s := newStack(t)
	s.startAggregator()
	// The key pair from the environment, as an operator would pass it.
	s.agent = startArgv(t, "agent", []string{binPath, "agent", "--data-dir", filepath.Join(s.dir, "agent"), "--api-addr", s.api,
		"--server", s.wire, "--log-level", "debug", "--livekit-url", rs.URL(), "--livekit-reconcile-interval", "300ms"},
		[]string{"HEADROOM_LIVEKIT_API_KEY=" + key, "HEADROOM_LIVEKIT_API_SECRET=" + secret})
	waitFor(t, 30*time.Second, "agent API up", func() error {
		_, _, err := call("GET", "http://"+s.api+"/v1/status", nil)
		return err
	})
	hook := "http://" + s.api + "/hooks/livekit"
	if code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "solo", "fee_monthly_micros": 1_000_000, "ceiling": 1, "mode": "strict"}); err != nil || code != 201 {
		t.Fatalf("plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/acme/plan", map[string]string{"plan": "solo", "at": "now"}); err != nil || code/100 != 2 {
		t.Fatalf("set plan: %d %s %v", code, body, err)
	}
	reserve := func(identity string) (int, string) {
		code, body, err := call("POST", "http://"+s.api+"/v1/sessions", map[string]any{"tenant": "acme", "class": "video-hd",
			"session": livekit.SessionID("standup", identity), "ttl_seconds": 30, "source": "livekit"})
		if err != nil {
			t.Fatal(err)
		}
		return code, string(body)
	}
	send := func(ev *lk.WebhookEvent, sec string) int {
		t.Helper()
		code, body, err := livekittest.Post(hook, key, sec, ev)
		if err != nil {
			t.Fatal(err)
		}
		if code != 200 && sec == secret {
			t.Fatalf("%s: %d %s", ev.Event, code, body)
		}
		return code
	}
	member := func(identity, sid string) *lk.ParticipantInfo {
		return &lk.ParticipantInfo{Identity: identity, Sid: sid, State: lk.ParticipantInfo_ACTIVE, Attributes: map[string]string{"tenant": "acme"}}
	}
	room := &lk.Room{Name: "standup", Sid: "RM_standup"}
	evID := 0
	event := func(name string, p *lk.ParticipantInfo) *lk.WebhookEvent {
		evID++
		return &lk.WebhookEvent{Event: name, Room: room, Participant: p, Id: fmt.Sprintf("EV_%d", evID), CreatedAt: time.Now().Unix()}
	}

	// The token endpoint reserves alice (the first try may wait for the
	// agent's share of the ceiling), and is refused bob's.
	waitFor(t, 20*time.Second, "alice's reservation admitted", func() error {
		if code, body := reserve("alice"); code != 201 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	waitFor(t, 20*time.Second, "bob's reservation refused at the ceiling", func() error {
		if code, body := reserve("bob"); code != 429 || !strings.Contains(body, `"ceiling"`) {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	tl.mark("alice reserved, bob refused (no token)")
	alice := member("alice", "PA_1")
	rs.SetRoom("standup", alice)
	send(event("participant_joined", alice), secret)
	s.waitOpen("acme", 1, "alice joined")
	waitFor(t, 10*time.Second, "alice's reservation confirmed", func() error {
		_, body, _ := call("GET", "http://"+s.api+"/v1/sessions", nil)
		var ss []struct {
			Session, Source string
			TTL             float64 `json:"ttl_seconds"`
		}
		json.Unmarshal(body, &ss)
		if len(ss) != 1 || ss[0].Session != "standup/alice" || ss[0].Source != "livekit" || ss[0].TTL != 0 {
			return fmt.Errorf("sessions %s", body)
		}
		return nil
	})

	// Carol joins without a reservation, over the strict ceiling: counted,
	// and removed through RoomService (which then no longer lists her, so
	// the reconcile closes her even if her participant_left is lost).
	carol := member("carol", "PC_1")
	rs.SetRoom("standup", alice, carol)
	send(event("participant_joined", carol), secret)
	waitFor(t, 20*time.Second, "carol removed through RoomService", func() error {
		if !slices.Contains(rs.Removed(), "standup/carol") {
			return fmt.Errorf("removed %v", rs.Removed())
		}
		return nil
	})
	s.waitOpen("acme", 1, "carol's session closed by the reconcile after her removal")
	tl.mark("carol joined unreserved over the ceiling: counted, removed, closed")

	// Dave joined and his webhook was lost: RoomService lists him.
	rs.SetRoom("standup", alice, member("dave", "PD_1"))
	s.waitOpen("acme", 2, "dave counted by the RoomService reconcile")
	rs.SetRoom("standup", alice)
	s.waitOpen("acme", 1, "dave's session closed once RoomService no longer lists him")
	tl.mark("dave counted and closed by the reconcile")

	// A webhook signed with another secret changes nothing.
	if code := send(event("participant_left", alice), "another-secret-of-at-least-32-chars"); code != 401 {
		t.Fatalf("a webhook with another secret: %d", code)
	}
	if f := s.tenant("acme"); f.Concurrency.Total != 1 {
		t.Fatalf("after a forged left: %d open", f.Concurrency.Total)
	}
	send(event("participant_left", alice), secret)
	s.waitOpen("acme", 0, "alice left")
	tl.mark("a forged left refused, the real one closed alice")

	var st struct {
		Connectors map[string]struct {
			Hooks       uint64            `json:"hooks"`
			Admitted    uint64            `json:"admitted"`
			Forced      uint64            `json:"forced"`
			BadRequests uint64            `json:"bad_requests"`
			Refused     map[string]uint64 `json:"refused"`
			Reconciles  uint64            `json:"reconciles"`
		} `json:"connectors"`
	}
	_, body, _ := call("GET", "http://"+s.api+"/v1/status", nil)
	json.Unmarshal(body, &st)
	c := st.Connectors["livekit"]
	refused := uint64(0)
	for _, n := range c.Refused {
		refused += n
	}
	// carol's refusal: ceiling, or grant-timeout when this agent's share is
	// what ran out first.
	if c.Hooks != 4 || c.Admitted != 1 || c.Forced != 1 || c.BadRequests != 1 || refused != 1 || c.Refused["ceiling"]+c.Refused["grant-timeout"] != 1 || c.Reconciles == 0 {
		t.Fatalf("agent status: %s", body)
	}
	_, metrics, _ := call("GET", "http://"+s.api+"/metrics", nil)
	if !strings.Contains(string(metrics), `headroom_agent_connector_forced_total{connector="livekit"} 1`) {
		t.Fatalf("metrics lack the forced count")
	}
}
