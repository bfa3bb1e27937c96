package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/wire"
)

// eventRig is a state machine (applied by an fsm.Harness, as Raft would)
// with an event hub on its hooks, driven by tickers the test sends on, and
// an HTTP server streaming the hub's events.
type eventRig struct {
	h                      *fsm.Harness
	hub                    *eventHub
	clock                  *fakeClock
	tick, keep, leaderTick chan time.Time
	leader                 atomic.Pointer[LeaderEventJSON]
	srv                    *httptest.Server
	seq                    uint64
}

func newEventRig(t *testing.T, withLeader bool, adjust func(*eventHub)) *eventRig {
	r := &eventRig{
		h: fsm.NewHarness(t), clock: &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)},
		tick: make(chan time.Time), keep: make(chan time.Time), leaderTick: make(chan time.Time),
	}
	r.leader.Store(&LeaderEventJSON{Leader: "agg1", Address: "10.0.0.1:9370", Term: 2})
	var leader func() LeaderEventJSON
	if withLeader {
		leader = func() LeaderEventJSON { return *r.leader.Load() }
	}
	r.hub = newEventHub(r.h.F, hclog.NewNullLogger(), r.clock.Now, leader)
	if adjust != nil {
		adjust(r.hub)
	}
	r.h.F.OnChange = r.hub.tenantsChanged
	r.h.F.OnAudit = r.hub.audit
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.hub.run(ctx, r.tick, r.keep, r.leaderTick) }()
	r.srv = httptest.NewServer(r.hub)
	t.Cleanup(func() {
		cancel()
		<-done
		r.srv.Close()
	})
	r.h.Items(r.clock.Now(), "", fsm.Full("a1", 1, 0))
	return r
}

// send applies one batch of agent a1.
func (r *eventRig) send(entries ...wire.DeltaEntry) {
	r.h.T.Helper()
	r.seq++
	if res := r.h.Items(r.clock.Now(), "payg", fsm.Batch("a1", 1, r.seq, entries...)); res[0].Status != fsm.StatusApplied {
		r.h.T.Fatalf("batch %d: %+v", r.seq, res[0])
	}
}

// sseEvent is one event read from a stream; a comment line comes as name
// ":" with the line as data.
type sseEvent struct{ name, data string }

type sseClient struct {
	resp   *http.Response
	events chan sseEvent
}

// openEvents connects to a stream and checks its headers; it returns once
// the headers arrived, which they must without any event.
func openEvents(t *testing.T, url string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("%d, headers %v", resp.StatusCode, resp.Header)
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 1024)}
	go func() {
		defer close(c.events)
		br := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case strings.HasPrefix(line, ":"):
				c.events <- sseEvent{":", line}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if ev.data != "" {
					c.events <- sseEvent{"error", "two data lines in one event"}
				}
				ev.data = strings.TrimPrefix(line, "data: ")
			case line == "":
				if ev.name != "" || ev.data != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			default:
				c.events <- sseEvent{"error", "unexpected line " + line}
			}
		}
	}()
	return c
}

// next returns the next event, failing after a generous deadline.
func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatal("stream ended")
		}
		if ev.name == "error" {
			t.Fatal(ev.data)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return sseEvent{}
}

// expect reads the next event and decodes it, which must be named name.
func (c *sseClient) expect(t *testing.T, name string, v any) {
	t.Helper()
	ev := c.next(t)
	if ev.name != name {
		t.Fatalf("event %q %s, want %q", ev.name, ev.data, name)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(ev.data), v); err != nil {
			t.Fatalf("%s: %v", ev.data, err)
		}
	}
}

// quiet checks that nothing was sent to the clients since the last event
// they read: it sends a keepalive tick and expects the keepalive as the
// very next frame.
func (r *eventRig) quiet(t *testing.T, cs ...*sseClient) {
	t.Helper()
	r.keep <- r.clock.Now()
	for _, c := range cs {
		if ev := c.next(t); ev.name != ":" || ev.data != ": keepalive" {
			t.Fatalf("got %q %s, want nothing before the keepalive", ev.name, ev.data)
		}
	}
}

func figuresOf(ev ConcurrencyEventJSON) map[string]TenantConcurrencyJSON {
	m := map[string]TenantConcurrencyJSON{}
	for _, tc := range ev.Tenants {
		m[tc.Tenant] = tc
	}
	return m
}

func TestEventsConcurrencyCoalescedPerTick(t *testing.T) {
	r := newEventRig(t, true, nil)
	c := openEvents(t, r.srv.URL)
	var lead LeaderEventJSON
	c.expect(t, eventLeader, &lead)
	if lead != (LeaderEventJSON{Leader: "agg1", Address: "10.0.0.1:9370", Term: 2}) {
		t.Fatalf("leader %+v", lead)
	}

	// Many entries between two ticks: one event, with the latest figures.
	r.send(fsm.Open("acme", "audio", 5), fsm.Open("beta", "video-hd", 2))
	r.send(fsm.Open("acme", "audio", 3))
	r.send(fsm.Closed("acme", "audio", 2), fsm.Open("acme", "ai", 1))
	r.quiet(t, c) // nothing before the tick
	r.tick <- r.clock.Now()
	var ev ConcurrencyEventJSON
	c.expect(t, eventConcurrency, &ev)
	if ev.At != "2026-11-26T12:00:00Z" {
		t.Errorf("at %q", ev.At)
	}
	got := figuresOf(ev)
	acme, beta := got["acme"], got["beta"]
	if len(got) != 2 || acme.Concurrency != 7 || acme.ByClass["audio"] != 6 || acme.ByClass["ai"] != 1 || acme.Plan != "payg" || acme.Ceiling != 1000 ||
		acme.Utilization != 0.007 || beta.Concurrency != 2 || len(acme.ByClass) != fsm.NumClasses {
		t.Fatalf("event %+v", ev)
	}

	// A tick with nothing changed sends nothing; nor does one after
	// changes that came back to the figures last sent.
	r.tick <- r.clock.Now()
	r.quiet(t, c)
	r.send(fsm.Open("acme", "audio", 1))
	r.send(fsm.Closed("acme", "audio", 1))
	r.tick <- r.clock.Now()
	r.quiet(t, c)

	// Only the tenants that changed since the previous event.
	r.send(fsm.Open("beta", "video-hd", 1))
	r.tick <- r.clock.Now()
	ev = ConcurrencyEventJSON{}
	c.expect(t, eventConcurrency, &ev)
	if got := figuresOf(ev); len(got) != 1 || got["beta"].Concurrency != 3 {
		t.Fatalf("event %+v, want beta alone", ev)
	}

	// A plan change: a plan event at once, and the new plan and ceiling in
	// the next concurrency event.
	if res := r.h.Apply(fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: r.clock.Now().UnixNano(), Tenant: "acme", Plan: "starter", Operator: "ops"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	var pe AuditJSON
	c.expect(t, eventPlan, &pe)
	if pe.Tenant != "acme" || pe.Kind != "set-plan" || pe.Before != "payg" || pe.After != "starter" || pe.Operator != "ops" || pe.Index == 0 || pe.Time == "" {
		t.Fatalf("plan event %+v", pe)
	}
	r.tick <- r.clock.Now()
	c.expect(t, eventConcurrency, &ev)
	if a := figuresOf(ev)["acme"]; len(ev.Tenants) != 1 || a.Plan != "starter" || a.Ceiling != 100 || a.Utilization != 0.07 {
		t.Fatalf("event %+v", ev)
	}

	// A deleted tenant is sent once more, marked deleted.
	if res := r.h.Apply(fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: r.clock.Now().UnixNano(), Tenant: "gone", Plan: "payg"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	c.expect(t, eventPlan, nil)
	if res := r.h.Apply(fsm.CmdTenantOp, &fsm.TenantOpCmd{Time: r.clock.Now().UnixNano(), Tenant: "gone", Op: "delete"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	pe = AuditJSON{}
	c.expect(t, eventPlan, &pe)
	if pe.Kind != "delete" {
		t.Fatalf("plan event %+v", pe)
	}
	r.tick <- r.clock.Now()
	c.expect(t, eventConcurrency, &ev)
	if g := figuresOf(ev)["gone"]; len(ev.Tenants) != 1 || !g.Deleted || g.Concurrency != 0 {
		t.Fatalf("event %+v", ev)
	}

	// A catalogue change is a plan event too.
	if res := r.h.Apply(fsm.CmdDeletePlan, &fsm.DeletePlanCmd{Time: r.clock.Now().UnixNano(), Name: "scale", Operator: "ops"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	pe = AuditJSON{}
	c.expect(t, eventPlan, &pe)
	if pe.Kind != "plan-delete" || pe.Tenant != "" {
		t.Fatalf("plan event %+v", pe)
	}

	// Leader changes, seen when polled.
	r.leaderTick <- r.clock.Now()
	r.quiet(t, c)
	r.leader.Store(&LeaderEventJSON{Term: 3})
	r.leaderTick <- r.clock.Now()
	c.expect(t, eventLeader, &lead)
	if lead != (LeaderEventJSON{Term: 3}) {
		t.Fatalf("leader %+v", lead)
	}

	// A new stream starts with the current leader.
	c2 := openEvents(t, r.srv.URL)
	c2.expect(t, eventLeader, &lead)
	if lead.Term != 3 {
		t.Fatalf("leader %+v", lead)
	}
}

func TestEventsTenantFilterAndAlerts(t *testing.T) {
	r := newEventRig(t, false, nil)
	al := newAlerter(r.h.F, hclog.NewNullLogger(), nil, "", 16, func() bool { return false }, r.clock.Now)
	al.onAlert = r.hub.alert
	r.h.F.OnChange = func(names []string) { r.hub.tenantsChanged(names); al.changed(names) }
	if res := r.h.Apply(fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: r.clock.Now().UnixNano(), Tenant: "acme", Plan: "starter"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	all := openEvents(t, r.srv.URL)
	one := openEvents(t, r.srv.URL+"?tenant=acme")
	// Without a leader function, no leader event: the headers came alone.
	r.quiet(t, all, one)

	r.send(fsm.Open("acme", "audio", 95), fsm.Open("beta", "audio", 4))
	var a Alert
	all.expect(t, eventAlert, &a)
	if a.Tenant != "acme" || a.Kind != AlertConcurrency || a.ThresholdPct != 90 || a.Value != 95 || a.Limit != 100 || a.ID == "" {
		t.Fatalf("alert %+v", a)
	}
	one.expect(t, eventAlert, &a)
	r.tick <- r.clock.Now()
	var ev ConcurrencyEventJSON
	all.expect(t, eventConcurrency, &ev)
	if len(ev.Tenants) != 2 {
		t.Fatalf("event %+v", ev)
	}
	one.expect(t, eventConcurrency, &ev)
	if len(ev.Tenants) != 1 || ev.Tenants[0].Tenant != "acme" {
		t.Fatalf("filtered event %+v", ev)
	}
	// Another tenant's change reaches only the unfiltered stream.
	r.send(fsm.Open("beta", "audio", 1))
	r.tick <- r.clock.Now()
	all.expect(t, eventConcurrency, &ev)
	r.quiet(t, one)

	resp, err := http.Get(r.srv.URL + "?tenant=" + strings.Repeat("x", 300))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("bad tenant filter: %d", resp.StatusCode)
	}
}

// TestEventsSlowClientDropped: a client that does not read is dropped once
// its queue passes the bound, while a client that reads keeps its stream,
// and publishing never waits for either.
func TestEventsSlowClientDropped(t *testing.T) {
	r := newEventRig(t, false, func(h *eventHub) { h.maxBytes = 256 << 10 })

	// A client that sends its request and never reads.
	addr := strings.TrimPrefix(r.srv.URL, "http://")
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	good := openEvents(t, r.srv.URL)
	waitFor(t, "both clients connected", func() bool { return r.hub.clients() == 2 })

	frame := []byte(": " + strings.Repeat("x", 64<<10) + "\n\n")
	for i := 0; r.hub.clients() == 2; i++ {
		if i > 10_000 {
			t.Fatal("the slow client was never dropped")
		}
		r.hub.publish("", frame)
		if ev := good.next(t); ev.name != ":" || len(ev.data) != len(frame)-2 {
			t.Fatalf("good client got %q (%d bytes)", ev.name, len(ev.data))
		}
	}
	if n := r.hub.stats.dropped.Load(); n != 1 {
		t.Fatalf("%d clients dropped, want 1", n)
	}
	// The slow client's connection is closed: reading it ends.
	waitFor(t, "the slow client's connection to close", func() bool {
		slow.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		buf := make([]byte, 64<<10)
		for {
			if _, err := slow.Read(buf); err != nil {
				var ne net.Error
				return !(errors.As(err, &ne) && ne.Timeout())
			}
		}
	})
	// The good client goes on.
	r.hub.publish("", keepaliveFrame)
	if ev := good.next(t); ev.data != ": keepalive" {
		t.Fatalf("good client got %q", ev.data)
	}
}

// TestEventHubQueueBound checks the queue's bounds without HTTP: offers
// beyond the bytes or frames drop the client, whose queue is released; an
// empty queue takes one frame of any size.
func TestEventHubQueueBound(t *testing.T) {
	h := newEventHub(fsm.NewFSM(nil), nil, time.Now, nil)
	h.maxBytes, h.maxFrames = 1000, 4
	big, _ := h.subscribe("")
	many, _ := h.subscribe("")
	h.publish("", make([]byte, 5000)) // larger than the bound, into empty queues
	if h.clients() != 2 {
		t.Fatal("an empty queue refused a large frame")
	}
	big.take(nil)
	big.written(5000)
	many.take(nil)
	many.written(5000)
	for range 4 {
		h.publish("", []byte("0123456789"))
	}
	if h.clients() != 2 {
		t.Fatal("dropped within the bounds")
	}
	big.take(nil) // big reads; many does not
	h.publish("", []byte("0123456789"))
	select {
	case <-many.gone:
	default:
		t.Fatal("a client over its frame bound was not dropped")
	}
	select {
	case <-big.gone:
		t.Fatal("a client that read was dropped")
	default:
	}
	if many.queue != nil || h.clients() != 1 {
		t.Fatalf("queue %d frames, %d clients", len(many.queue), h.clients())
	}
	h.publish("", make([]byte, 990)) // 40 bytes being written + 10 queued + 990: over
	select {
	case <-big.gone:
	default:
		t.Fatal("a client over its byte bound was not dropped")
	}
	h.close()
	if _, err := h.subscribe(""); err == nil {
		t.Fatal("subscribed to a closed hub")
	}
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventsOutliveServerTimeouts: a stream lasts beyond the HTTP server's
// read and write timeouts (the aggregator's are 30 s; here 50 ms).
func TestEventsOutliveServerTimeouts(t *testing.T) {
	r := newEventRig(t, false, nil)
	srv := httptest.NewUnstartedServer(r.hub)
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 50*time.Millisecond, 50*time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close) // after the client's cleanup: Close waits for open streams
	c := openEvents(t, srv.URL)
	end := time.Now().Add(300 * time.Millisecond) // six times the timeouts
	for time.Now().Before(end) {
		r.quiet(t, c)
		select {
		case <-time.After(10 * time.Millisecond):
		case ev := <-c.events:
			t.Fatalf("unexpected %q %s", ev.name, ev.data)
		}
	}
	r.quiet(t, c)
}
