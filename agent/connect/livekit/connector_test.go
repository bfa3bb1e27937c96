package livekit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	lk "github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/protojson"
	"github.com/livekit/protocol/webhook"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/agenttest"
	"github.com/headroom-rtc/headroom/agent/connect/livekit/livekittest"
	"github.com/headroom-rtc/headroom/wire"
)

const (
	testKey    = "APIheadroom"
	testSecret = "a-secret-of-at-least-32-characters-long"
)

type rig struct {
	t       *testing.T
	cluster *agenttest.Server
	a       *agent.Agent
	c       *Connector
	srv     *httptest.Server
	evSeq   atomic.Int64
}

func newRig(t *testing.T, cfg Config, tenants ...wire.TenantInfo) *rig {
	t.Helper()
	a, cluster := agenttest.StartAgent(t, tenants...)
	if cfg.APIKey == "" {
		cfg.APIKey, cfg.APISecret = testKey, testSecret
	}
	c, err := New(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return &rig{t: t, cluster: cluster, a: a, c: c, srv: srv}
}

func sign(t *testing.T, key, secret string, body []byte) string {
	t.Helper()
	tok, err := livekittest.Sign(key, secret, body)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post delivers an event signed with key/secret (the rig's by default);
// tamper changes the body after signing.
func (r *rig) post(ev *lk.WebhookEvent, key, secret string, tamper bool) (int, string) {
	r.t.Helper()
	if ev.Id == "" {
		ev.Id = fmt.Sprintf("EV_%d", r.evSeq.Add(1))
	}
	if ev.CreatedAt == 0 {
		ev.CreatedAt = time.Now().Unix()
	}
	body, err := protojson.Marshal(ev)
	if err != nil {
		r.t.Fatal(err)
	}
	if key == "" {
		key, secret = testKey, testSecret
	}
	tok := sign(r.t, key, secret, body)
	if tamper {
		body = bytes.Replace(body, []byte("acme"), []byte("acmf"), 1)
	}
	req, _ := http.NewRequest("POST", r.srv.URL, bytes.NewReader(body))
	req.Header.Set("Content-Type", webhook.ContentType)
	if secret != "-" {
		req.Header.Set("Authorization", tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *rig) send(ev *lk.WebhookEvent) {
	r.t.Helper()
	if code, body := r.post(ev, "", "", false); code != 200 {
		r.t.Fatalf("%s: %d %s", ev.Event, code, body)
	}
}

func joined(roomName, identity, sid string) *lk.WebhookEvent {
	return &lk.WebhookEvent{Event: webhook.EventParticipantJoined, Room: &lk.Room{Name: roomName, Sid: "RM_" + roomName},
		Participant: &lk.ParticipantInfo{Identity: identity, Sid: sid, State: lk.ParticipantInfo_ACTIVE,
			Attributes: map[string]string{"tenant": "acme"}}}
}

func left(roomName, identity, sid string) *lk.WebhookEvent {
	return &lk.WebhookEvent{Event: webhook.EventParticipantLeft, Room: &lk.Room{Name: roomName, Sid: "RM_" + roomName},
		Participant: &lk.ParticipantInfo{Identity: identity, Sid: sid, State: lk.ParticipantInfo_DISCONNECTED}}
}

func track(event, roomName, identity, trackSid string, w, h uint32) *lk.WebhookEvent {
	return &lk.WebhookEvent{Event: event, Room: &lk.Room{Name: roomName},
		Participant: &lk.ParticipantInfo{Identity: identity},
		Track:       &lk.TrackInfo{Sid: trackSid, Type: lk.TrackType_VIDEO, Width: w, Height: h}}
}

// reserve is what the token endpoint does (POST /v1/sessions with a TTL).
func (r *rig) reserve(roomName, identity string, ttl time.Duration) {
	r.t.Helper()
	res, err := r.a.OpenWith(agent.OpenOptions{Tenant: "acme", Class: "video-hd", Session: SessionID(roomName, identity), TTL: ttl, Source: Name})
	if err != nil || !res.Admitted {
		r.t.Fatalf("reserve: %+v %v", res, err)
	}
}

func (r *rig) session(id string) (agent.SessionInfo, bool) {
	for _, s := range r.a.Sessions("") {
		if s.Session == id {
			return s, true
		}
	}
	return agent.SessionInfo{}, false
}

func meter(tenant string) wire.TenantInfo {
	return wire.TenantInfo{Tenant: tenant, Plan: "payg", Mode: "meter"}
}

// TestReserveJoinLeave: reserve → joined → left bills the joined time only;
// a reservation never joined lapses and bills nothing. The events come from
// LiveKit's own notifier, as livekit-server sends them.
func TestReserveJoinLeave(t *testing.T) {
	r := newRig(t, Config{}, meter("acme"))
	webhook.InitWebhookStats(nil) // as livekit-server does at its start
	notifier := webhook.NewURLNotifier(webhook.URLNotifierParams{URL: r.srv.URL, APIKey: testKey, APISecret: testSecret})
	defer notifier.Stop(true)
	notify := func(ev *lk.WebhookEvent) {
		t.Helper()
		if err := notifier.QueueNotify(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	id := SessionID("standup", "alice")
	r.reserve("standup", "alice", 30*time.Second)
	r.reserve("standup", "bob", time.Second) // never joins
	time.Sleep(400 * time.Millisecond)       // alice takes a while to join: not billed
	joinSent := time.Now()
	notify(joined("standup", "alice", "PA_1"))
	if err := agenttest.WaitFor(10*time.Second, func() bool { s, ok := r.session(id); return ok && s.TTLSeconds == 0 }); err != nil {
		t.Fatal("participant_joined did not confirm the reservation")
	}
	joinDone := time.Now()
	time.Sleep(300 * time.Millisecond) // the call
	leftSent := time.Now()
	notify(left("standup", "alice", "PA_1"))
	if err := agenttest.WaitFor(10*time.Second, func() bool { _, ok := r.session(id); return !ok }); err != nil {
		t.Fatal("participant_left did not close the session")
	}
	leftDone := time.Now()
	// bob's reservation lapses (1 s TTL, never kept alive).
	if err := agenttest.WaitFor(10*time.Second, func() bool { return len(r.a.Sessions("")) == 0 }); err != nil {
		t.Fatal("the unjoined reservation did not lapse")
	}
	var billed float64
	if err := agenttest.WaitFor(10*time.Second, func() bool {
		u := r.cluster.Usage("acme", "audio") // the room has no video: audio
		billed = u.Seconds() + r.cluster.Usage("acme", "video-hd").Seconds()
		return r.cluster.Open("acme") == 0 && u.Closed == 1 && r.cluster.Usage("acme", "video-hd").Closed == 2
	}); err != nil {
		t.Fatalf("usage: audio %+v video-hd %+v", r.cluster.Usage("acme", "audio"), r.cluster.Usage("acme", "video-hd"))
	}
	lo, hi := leftSent.Sub(joinDone).Seconds(), leftDone.Sub(joinSent).Seconds()
	if billed < lo || billed > hi {
		t.Fatalf("billed %.3f s; the joined time was between %.3f and %.3f s (the reservation's wait and bob's never-joined reservation bill nothing)", billed, lo, hi)
	}
	if st := r.a.Status().Connectors[Name]; st.Admitted != 1 || st.Hooks != 2 || st.BadRequests != 0 {
		t.Fatalf("connector status %+v", st)
	}
}

// TestSignatureRefused: a webhook without a signature, signed with another
// secret or key, or whose body was changed after signing is 401 and
// changes nothing.
func TestSignatureRefused(t *testing.T) {
	r := newRig(t, Config{}, meter("acme"))
	for _, tc := range []struct {
		name, key, secret string
		tamper            bool
	}{
		{"no signature", testKey, "-", false},
		{"another secret", testKey, "another-secret-of-at-least-32-characters", false},
		{"another key", "APIother", testSecret, false},
		{"tampered body", "", "", true},
	} {
		if code, body := r.post(joined("standup", "acme-user", "PA_1"), tc.key, tc.secret, tc.tamper); code != 401 {
			t.Errorf("%s: %d %s", tc.name, code, body)
		}
	}
	if ss := r.a.Sessions(""); len(ss) != 0 {
		t.Fatalf("sessions after refused webhooks: %+v", ss)
	}
	if st := r.a.Status().Connectors[Name]; st.BadRequests != 4 || st.Admitted != 0 || st.Hooks != 4 {
		t.Fatalf("connector status %+v", st)
	}
	// A verified body that is not an event: 400.
	body := []byte(`{"event":"participant_joined","room":{}}`)
	req, _ := http.NewRequest("POST", r.srv.URL, bytes.NewReader(body))
	req.Header.Set("Authorization", sign(t, testKey, testSecret, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("joined without a room: %d", resp.StatusCode)
	}
	// Too large: 413, read no further than the limit.
	big := bytes.Repeat([]byte("x"), MaxEventBody+1)
	req, _ = http.NewRequest("POST", r.srv.URL, bytes.NewReader(big))
	req.Header.Set("Authorization", sign(t, testKey, testSecret, big))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("a body over the limit: %d", resp.StatusCode)
	}
}

// TestOutOfOrderAndTwice: events delivered twice count once; a left before
// its joined drops the joined; a fast reconnect of the same identity keeps
// one session, which the earlier connection's left does not close.
func TestOutOfOrderAndTwice(t *testing.T) {
	r := newRig(t, Config{}, meter("acme"))
	ev := joined("standup", "alice", "PA_1")
	r.send(ev)
	if code, body := r.post(ev, "", "", false); code != 200 || !strings.Contains(body, "duplicate") { // LiveKit's retry
		t.Fatalf("duplicate: %d %s", code, body)
	}
	if n := len(r.a.Sessions("")); n != 1 {
		t.Fatalf("%d sessions after a duplicate", n)
	}
	// bob's left overtakes his joined.
	r.send(left("standup", "bob", "PB_1"))
	r.send(joined("standup", "bob", "PB_1"))
	if _, ok := r.session(SessionID("standup", "bob")); ok {
		t.Fatal("a joined after its left opened a session")
	}
	// alice reconnects (a new sid) before her first connection's left.
	r.send(joined("standup", "alice", "PA_2"))
	r.send(left("standup", "alice", "PA_1"))
	if _, ok := r.session(SessionID("standup", "alice")); !ok {
		t.Fatal("the left of alice's earlier connection closed her session")
	}
	r.send(left("standup", "alice", "PA_2"))
	if n := len(r.a.Sessions("")); n != 0 {
		t.Fatalf("%d sessions after everyone left", n)
	}
	// One session for alice across her reconnect; none for bob.
	if err := agenttest.WaitFor(10*time.Second, func() bool {
		u := r.cluster.Usage("acme", "audio")
		return u.Opened == 1 && u.Closed == 1 && u.Open == 0
	}); err != nil {
		t.Fatalf("usage %+v", r.cluster.Usage("acme", "audio"))
	}
}

// TestClassByTracks: participants are classed by the room's largest video
// track; an agent participant is ai; room_finished closes everyone.
func TestClassByTracks(t *testing.T) {
	r := newRig(t, Config{}, meter("acme"))
	r.send(joined("standup", "alice", "PA_1"))
	r.send(joined("standup", "bob", "PB_1"))
	bot := joined("standup", "bot", "PC_1")
	bot.Participant.Kind = lk.ParticipantInfo_AGENT
	r.send(bot)
	r.send(joined("other", "carol", "PD_1"))
	classes := func() string {
		var b strings.Builder
		for _, s := range r.a.Sessions("") {
			fmt.Fprintf(&b, "%s=%s ", s.Session, s.Class)
		}
		return strings.TrimSpace(b.String())
	}
	if got, want := classes(), "other/carol=audio standup/alice=audio standup/bob=audio standup/bot=ai"; got != want {
		t.Fatalf("before video: %s, want %s", got, want)
	}
	r.send(track(webhook.EventTrackPublished, "standup", "alice", "TR_1", 1280, 720))
	r.send(track(webhook.EventTrackPublished, "standup", "bob", "TR_2", 1920, 1080))
	if got, want := classes(), "other/carol=audio standup/alice=video-fhd standup/bob=video-fhd standup/bot=ai"; got != want {
		t.Fatalf("with 720p and 1080p: %s, want %s", got, want)
	}
	r.send(track(webhook.EventTrackUnpublished, "standup", "bob", "TR_2", 0, 0))
	if got, want := classes(), "other/carol=audio standup/alice=video-hd standup/bob=video-hd standup/bot=ai"; got != want {
		t.Fatalf("1080p unpublished: %s, want %s", got, want)
	}
	r.send(&lk.WebhookEvent{Event: webhook.EventRoomFinished, Room: &lk.Room{Name: "standup", Sid: "RM_standup"}})
	if got, want := classes(), "other/carol=audio"; got != want {
		t.Fatalf("after room_finished: %s, want %s", got, want)
	}
	// A late joined of the finished room opens nothing.
	r.send(joined("standup", "dave", "PE_1"))
	if got := classes(); got != "other/carol=audio" {
		t.Fatalf("a joined of a finished room: %s", got)
	}
}

// TestUnreservedJoin: a participant that joins without a reservation is
// counted even when admission would refuse it (metering never misses it);
// one whose tenant cannot be derived is not counted, with the reason in the
// connector's refusals.
func TestUnreservedJoin(t *testing.T) {
	r := newRig(t, Config{}, wire.TenantInfo{Tenant: "acme", Plan: "duo", Mode: "soft", Ceiling: 1})
	r.send(joined("standup", "alice", "PA_1"))
	r.send(joined("standup", "bob", "PB_1")) // over the ceiling of 1: counted all the same
	nobody := joined("standup", "eve", "PE_1")
	nobody.Participant.Attributes = nil
	r.send(nobody)
	if n := len(r.a.Sessions("")); n != 2 {
		t.Fatalf("%d sessions, want alice and bob", n)
	}
	st := r.a.Status().Connectors[Name]
	if st.Admitted != 1 || st.Forced != 1 || st.Refused[agent.ReasonCeiling] != 1 || st.Refused[agent.ReasonUnmappedTenant] != 1 {
		t.Fatalf("status %+v", st)
	}
}

func participant(identity, sid string, tracks ...*lk.TrackInfo) *lk.ParticipantInfo {
	return &lk.ParticipantInfo{Identity: identity, Sid: sid, State: lk.ParticipantInfo_ACTIVE,
		Attributes: map[string]string{"tenant": "acme"}, Tracks: tracks}
}

// TestRoomServiceReconcile: RoomService's listing is the truth of the
// connector's sessions: a listed participant holding a reservation is
// confirmed, one without a session counted, every one classed by its
// room's tracks; a session whose participant is gone closes; a reservation
// not joined yet is left to its TTL; a listing that fails changes nothing.
func TestRoomServiceReconcile(t *testing.T) {
	rs := livekittest.NewRoomService(testKey, testSecret)
	defer rs.Close()
	r := newRig(t, Config{URL: rs.URL()}, meter("acme"))
	r.send(joined("standup", "gone", "PG_1"))  // its left will be lost
	r.reserve("standup", "alice", time.Minute) // joined, webhook lost
	r.reserve("standup", "later", time.Minute) // not joined yet
	bob := participant("bob", "PB_1")          // joined, webhook lost, no reservation
	bob.JoinedAtMs = time.Now().UnixMilli()
	rs.SetRoom("standup",
		participant("alice", "PA_1", &lk.TrackInfo{Sid: "TR_1", Type: lk.TrackType_VIDEO, Width: 1920, Height: 1080}),
		bob,
	)
	res, err := r.c.ReconcileNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range r.a.Sessions("") {
		got[s.Session] = fmt.Sprintf("%s ttl=%v src=%s", s.Class, s.TTLSeconds, s.Source)
		if s.Session == "standup/bob" && !s.OpenedAt.Equal(time.UnixMilli(bob.JoinedAtMs)) {
			t.Errorf("bob, opened by the reconcile, counts from %v, not from when RoomService says he joined (%v)", s.OpenedAt, time.UnixMilli(bob.JoinedAtMs))
		}
	}
	want := map[string]string{
		"standup/alice": "video-fhd ttl=0 src=livekit",
		"standup/bob":   "video-fhd ttl=0 src=livekit",
		"standup/later": "video-hd ttl=60 src=livekit",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the reconcile (%+v):\n got %v\nwant %v", res, got, want)
	}
	// The listing fails: nothing changes.
	rs.Close()
	if _, err := r.c.ReconcileNow(context.Background()); err == nil {
		t.Fatal("a reconcile against a dead RoomService succeeded")
	}
	if n := len(r.a.Sessions("")); n != 3 {
		t.Fatalf("%d sessions after a failed listing", n)
	}
	if st := r.a.Status().Connectors[Name]; st.Reconciles != 2 || st.ReconcileErrors != 1 || st.ReconcileClosed != 1 {
		t.Fatalf("status %+v", st)
	}
}

// The removal of a participant that joined without a reservation while its
// strict plan refuses it needs a strict plan, which only the real aggregator
// grants: cmd/headroom's TestLiveKit covers it.
