package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/wire"
)

// alertT0 is mid-period, so entry times stay in 2026-11 unless a test
// moves on.
var alertT0 = time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)

// alertReceiver is a webhook that records every POST and answers with
// what handle returns for the n-th one (1-based; nil: 200).
type alertReceiver struct {
	URL    string
	handle func(n int, al Alert) int

	mu       sync.Mutex
	posts    []Alert // every POST, in order
	accepted []Alert // those answered 2xx
	keys     []string
}

func newAlertReceiver(t *testing.T, handle func(n int, al Alert) int) *alertReceiver {
	r := &alertReceiver{handle: handle}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var al Alert
		if err := json.NewDecoder(req.Body).Decode(&al); err != nil || req.Method != http.MethodPost ||
			req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook got %s %s: %v", req.Method, req.Header.Get("Content-Type"), err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.posts = append(r.posts, al)
		r.keys = append(r.keys, req.Header.Get("Idempotency-Key"))
		n := len(r.posts)
		r.mu.Unlock()
		code := http.StatusOK
		if r.handle != nil {
			code = r.handle(n, al)
		}
		if code/100 == 2 {
			r.mu.Lock()
			r.accepted = append(r.accepted, al)
			r.mu.Unlock()
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *alertReceiver) got() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert(nil), r.accepted...)
}

func (r *alertReceiver) all() (posts []Alert, keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert(nil), r.posts...), append([]string(nil), r.keys...)
}

// waitAlerts polls until the receiver has accepted n alerts.
func (r *alertReceiver) waitAlerts(t *testing.T, n int) []Alert {
	t.Helper()
	alertWait(t, "webhook alerts", func() bool { return len(r.got()) >= n })
	got := r.got()
	if len(got) != n {
		t.Fatalf("%d alerts, want %d: %+v", len(got), n, got)
	}
	return got
}

func alertWait(t interface {
	Helper()
	Fatalf(string, ...any)
}, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// alertRig is a state machine (applied by an fsm.Harness, as Raft would)
// with an alerter on its onChange hook and running its sender. Tenants are
// put on starter (ceiling 100, 300,000 unit-minutes included).
type alertRig struct {
	h       *fsm.Harness
	a       *alerter
	clock   *fakeClock
	leading atomic.Bool
	seq     uint64
}

func newAlertRig(t *testing.T, h *fsm.Harness, clock *fakeClock, webhook string, queue int, leading bool) *alertRig {
	r := &alertRig{h: h, clock: clock}
	r.leading.Store(leading)
	r.a = newAlerter(h.F, hclog.NewNullLogger(), nil, webhook, queue, r.leading.Load, clock.Now)
	r.a.backoff, r.a.maxBackoff = time.Millisecond, 4*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.a.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.lead(leading)
	return r
}

// lead makes the server leader or follower, and waits until its sender has
// seen it.
func (r *alertRig) lead(on bool) {
	r.h.T.Helper()
	r.leading.Store(on)
	select {
	case r.a.wake <- struct{}{}:
	default:
	}
	alertWait(r.h.T, "the sender to see the leadership", func() bool {
		r.a.mu.Lock()
		defer r.a.mu.Unlock()
		return r.a.leader == on
	})
}

// newAlertHarness returns one rig on its own state machine, with agent a1
// known to it.
func newAlertHarness(t *testing.T, webhook string, queue int) *alertRig {
	h := fsm.NewHarness(t)
	r := newAlertRig(t, h, &fakeClock{t: alertT0}, webhook, queue, true)
	h.F.OnChange = r.a.changed
	h.Items(alertT0, "", fsm.Full("a1", 1, 0))
	return r
}

// send applies one batch of agent a1 at the clock's time.
func (r *alertRig) send(entries ...wire.DeltaEntry) {
	r.h.T.Helper()
	r.seq++
	res := r.h.Items(r.clock.Now(), "starter", fsm.Batch("a1", 1, r.seq, entries...))
	if res[0].Status != fsm.StatusApplied {
		r.h.T.Fatalf("batch %d: %+v", r.seq, res[0])
	}
}

// setOpen brings a tenant's open audio sessions to n.
func (r *alertRig) setOpen(tenant string, n uint64) {
	r.h.T.Helper()
	o := r.h.Tenant(tenant).Open
	have := o.Total()
	if n >= have {
		r.send(fsm.Open(tenant, "audio", n-have))
	} else {
		r.send(fsm.Closed(tenant, "audio", have-n))
	}
}

// use adds audio minutes (one unit-minute each) to a tenant's usage.
func (r *alertRig) use(tenant string, minutes uint64) {
	r.h.T.Helper()
	r.send(wire.DeltaEntry{Tenant: tenant, Class: "audio", SessionMicros: minutes * 60_000_000})
}

func (r *alertRig) detected() uint64 { return r.a.snapshot().Detected }

// ringID is the id of the crossing this server detected seq-th.
func (r *alertRig) ringID(seq uint64) string {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	return r.a.ring[(seq-1)%uint64(len(r.a.ring))].alert.ID
}

func checkAlert(t *testing.T, al Alert, tenant string, kind AlertKind, th uint32, value float64, limit uint64) {
	t.Helper()
	if al.Tenant != tenant || al.Kind != kind || al.ThresholdPct != th || al.Value != value || al.Limit != limit || al.Plan != "starter" {
		t.Errorf("alert %+v, want %s %s %d%% value %v of %d on starter", al, tenant, kind, th, value, limit)
	}
	if want := alertID(tenant, kind, th, al.Period, al.RaftIndex); al.ID != want || len(al.ID) != 32 {
		t.Errorf("alert id %q, want %q", al.ID, want)
	}
	if at, err := time.Parse(time.RFC3339, al.At); err != nil || at.IsZero() {
		t.Errorf("alert at %q: %v", al.At, err)
	}
}

// TestAlertCrossingFiresOnce: a tenant rising through a threshold fires
// once; further batches above it fire nothing; a jump over several
// thresholds fires the highest only.
func TestAlertCrossingFiresOnce(t *testing.T) {
	rcv := newAlertReceiver(t, nil)
	r := newAlertHarness(t, rcv.URL, 16)
	r.setOpen("t1", 50)
	if n := r.detected(); n != 0 {
		t.Fatalf("%d alerts at 50%%", n)
	}
	r.setOpen("t1", 75)
	if n := r.detected(); n != 1 {
		t.Fatalf("%d alerts after crossing 70%%, want 1", n)
	}
	got := rcv.waitAlerts(t, 1)
	checkAlert(t, got[0], "t1", AlertConcurrency, 70, 75, 100)
	if got[0].Utilization != 75 || got[0].Period != "2026-11" || got[0].At != alertT0.Format(time.RFC3339) || got[0].RaftIndex != r.h.Index {
		t.Errorf("alert %+v", got[0])
	}
	for _, n := range []uint64{80, 85, 72, 89, 71, 89} { // many batches above 70%, none reaching 90%
		r.setOpen("t1", n)
	}
	if n := r.detected(); n != 1 {
		t.Fatalf("%d alerts after repeated batches above the threshold, want 1", n)
	}
	r.setOpen("t2", 95) // crosses 70% and 90% in one batch: one alert, 90%
	// Delivery is in order: once t2's alert is in, a refire of t1 would be too.
	got = rcv.waitAlerts(t, 2)
	checkAlert(t, got[1], "t2", AlertConcurrency, 90, 95, 100)
}

// TestAlertHysteresisRefires: a threshold re-arms only once utilization has
// fallen below it by the hysteresis, so a tenant hovering at a threshold
// alerts once per real crossing.
func TestAlertHysteresisRefires(t *testing.T) {
	rcv := newAlertReceiver(t, nil)
	r := newAlertHarness(t, rcv.URL, 16)
	steps := []struct {
		open  uint64
		fires uint32 // threshold fired, 0 for none
	}{
		{75, 70},
		{67, 0}, {71, 0}, // within 5 points below 70: not re-armed
		{64, 0}, {70, 70}, // below 65: re-armed, fires again
		{100, 100},
		{97, 0}, {100, 0}, {96, 0}, {100, 0}, {95, 0}, {100, 0}, // hovering at the ceiling
		{94, 0}, {100, 100},
		{0, 0}, {92, 90}, // 100 re-armed too, and 90
	}
	var want []uint32
	for i, s := range steps {
		before := r.detected()
		r.setOpen("t1", s.open)
		fired := r.detected() - before
		if (s.fires == 0) != (fired == 0) || fired > 1 {
			t.Fatalf("step %d (open %d): %d alerts, want threshold %d", i, s.open, fired, s.fires)
		}
		if s.fires != 0 {
			want = append(want, s.fires)
		}
	}
	got := rcv.waitAlerts(t, len(want))
	ids := map[string]bool{}
	for i, al := range got {
		if al.ThresholdPct != want[i] || al.Kind != AlertConcurrency {
			t.Errorf("alert %d: %d%% %s, want %d%%", i, al.ThresholdPct, al.Kind, want[i])
		}
		ids[al.ID] = true
	}
	if len(ids) != len(got) {
		t.Errorf("ids repeat across crossings: %+v", got)
	}
}

// TestAlertBothKinds: unit-minutes of the period against the included ones
// fire like concurrency does, once per threshold and period.
func TestAlertBothKinds(t *testing.T) {
	rcv := newAlertReceiver(t, nil)
	r := newAlertHarness(t, rcv.URL, 16)
	r.use("t1", 200_000) // 66.7% of 300,000
	r.use("t1", 20_000)  // 73.3%
	r.setOpen("t1", 91)
	r.use("t1", 100_000) // 106.7%: 90% and 100% at once
	r.use("t1", 50_000)
	r.setOpen("t1", 93)
	got := rcv.waitAlerts(t, 3)
	checkAlert(t, got[0], "t1", AlertUnitMinutes, 70, 220_000, 300_000)
	checkAlert(t, got[1], "t1", AlertConcurrency, 90, 91, 100)
	checkAlert(t, got[2], "t1", AlertUnitMinutes, 100, 320_000, 300_000)
	if got[0].Utilization != 73.33 {
		t.Errorf("utilization %v, want 73.33", got[0].Utilization)
	}

	// A new period starts from nothing: its crossings are new alerts.
	r.clock.Set(time.Date(2026, 12, 1, 0, 0, 5, 0, time.UTC))
	r.use("t1", 250_000)
	got = rcv.waitAlerts(t, 4)
	checkAlert(t, got[3], "t1", AlertUnitMinutes, 70, 250_000, 300_000)
	if got[3].Period != "2026-12" || got[3].ID == got[0].ID {
		t.Errorf("december alert %+v", got[3])
	}
	if n := r.detected(); n != 4 {
		t.Errorf("%d alerts, want 4", n)
	}
}

// TestAlertRetriesThenSucceedsWithSameID: a webhook failing with 500 gets
// the same alert again, same id, until it accepts it.
func TestAlertRetriesThenSucceedsWithSameID(t *testing.T) {
	rcv := newAlertReceiver(t, func(n int, _ Alert) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	r := newAlertHarness(t, rcv.URL, 16)
	r.setOpen("t1", 100)
	alertWait(t, "delivery", func() bool { return r.a.snapshot().Sent == 1 })
	posts, keys := rcv.all()
	if len(posts) != 3 {
		t.Fatalf("%d POSTs, want 3", len(posts))
	}
	for i, p := range posts {
		if p.ID != posts[0].ID || keys[i] != p.ID {
			t.Errorf("POST %d: id %q key %q, want %q", i, p.ID, keys[i], posts[0].ID)
		}
	}
	if st := r.a.snapshot(); st.Failed != 0 || len(rcv.got()) != 1 {
		t.Errorf("stats %+v, accepted %d", st, len(rcv.got()))
	}
}

// TestAlertGivesUpAfterBoundedAttempts: a webhook that keeps failing gets
// alertAttempts POSTs; one refusing with a 4xx gets one.
func TestAlertGivesUpAfterBoundedAttempts(t *testing.T) {
	for _, tc := range []struct {
		code     int
		attempts int
	}{{http.StatusServiceUnavailable, alertAttempts}, {http.StatusBadRequest, 1}} {
		rcv := newAlertReceiver(t, func(int, Alert) int { return tc.code })
		r := newAlertHarness(t, rcv.URL, 16)
		r.setOpen("t1", 100)
		r.setOpen("t2", 100)
		alertWait(t, "giving up", func() bool { return r.a.snapshot().Failed == 2 })
		posts, _ := rcv.all()
		if len(posts) != 2*tc.attempts || posts[0].Tenant != "t1" || posts[len(posts)-1].Tenant != "t2" {
			t.Errorf("%d: %d POSTs, want %d per alert, in order", tc.code, len(posts), tc.attempts)
		}
	}
}

// TestAlertQueueBounded: while the webhook is stuck, crossings wait in a
// bounded queue that drops the oldest and counts them.
func TestAlertQueueBounded(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	rcv := newAlertReceiver(t, func(n int, _ Alert) int {
		if n == 1 {
			close(started)
			<-release
		}
		return http.StatusOK
	})
	r := newAlertHarness(t, rcv.URL, 3)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	r.setOpen("t0", 100)
	<-started // t0's alert is in flight
	tenants := []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"}
	for _, tn := range tenants {
		r.setOpen(tn, 100)
	}
	if n := r.detected(); n != 10 {
		t.Fatalf("%d crossings, want 10", n)
	}
	close(release)
	alertWait(t, "deliveries", func() bool { return r.a.snapshot().Sent == 4 })
	got := rcv.waitAlerts(t, 4)
	var names []string
	for _, al := range got {
		names = append(names, al.Tenant)
	}
	if strings.Join(names, ",") != "t0,t7,t8,t9" {
		t.Errorf("delivered %v, want t0 then the newest 3", names)
	}
	if st := r.a.snapshot(); st.Dropped != 6 || st.Sent != 4 {
		t.Errorf("stats %+v, want 6 dropped, 4 sent", st)
	}
}

// TestAlertNewLeaderResendsRecentWithSameIDs: every server detects the
// same crossings with the same ids; a new leader resends those of the last
// alertReplayWindow (a receiver drops the ones the old leader delivered),
// not older ones, and a server that starts with tenants already above a
// threshold (a restart, a snapshot) does not fire them again.
func TestAlertNewLeaderResendsRecentWithSameIDs(t *testing.T) {
	rcv := newAlertReceiver(t, nil)
	clock := &fakeClock{t: alertT0.Add(-10 * time.Minute)}
	// Two replicas applying the same entries: a leader and a follower.
	ha, hb := fsm.NewHarness(t), fsm.NewHarness(t)
	a := newAlertRig(t, ha, clock, rcv.URL, 16, true)
	b := newAlertRig(t, hb, clock, rcv.URL, 16, false)
	ha.F.OnChange, hb.F.OnChange = a.a.changed, b.a.changed
	var seq uint64
	both := func(entries ...wire.DeltaEntry) {
		t.Helper()
		var msgs []wire.Message
		if seq == 0 {
			msgs = append(msgs, fsm.Full("a1", 1, 0))
		}
		seq++
		msgs = append(msgs, fsm.Batch("a1", 1, seq, entries...))
		for _, h := range []*fsm.Harness{ha, hb} {
			h.Items(clock.Now(), "starter", msgs...)
		}
	}
	both(fsm.Open("old", "audio", 100)) // ten minutes before the failover
	clock.Set(alertT0)
	both(fsm.Open("t1", "audio", 95))
	got := rcv.waitAlerts(t, 2) // the leader delivered both
	a.lead(false)               // the leader is cut off...
	both(fsm.Open("t2", "audio", 75))
	b.lead(true) // ...and the follower takes over
	alertWait(t, "the new leader's resends", func() bool { return b.a.snapshot().Sent == 2 })
	all := rcv.waitAlerts(t, 4)
	if all[2].ID != got[1].ID || all[2].Tenant != "t1" {
		t.Errorf("t1 resent as %+v, want id %s", all[2], got[1].ID)
	}
	checkAlert(t, all[3], "t2", AlertConcurrency, 70, 75, 100)
	if st := a.a.snapshot(); st.Sent != 2 {
		t.Errorf("the old leader sent %d, want 2", st.Sent)
	}

	// A server primed from a state with standing alerts (restarted, or
	// restored from a snapshot) sends none of them.
	snap, err := ha.F.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink fsm.MemSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	hc := &fsm.Harness{T: t, F: fsm.NewFSM(nil), Index: ha.Index}
	c := newAlertRig(t, hc, clock, rcv.URL, 16, false)
	hc.F.OnChange = c.a.changed
	if err := hc.F.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	b.lead(false)
	c.lead(true)
	seq++
	for _, h := range []*fsm.Harness{ha, hb, hc} {
		h.Items(clock.Now(), "starter", fsm.Batch("a1", 1, seq, fsm.Open("t1", "audio", 1), fsm.Open("t3", "audio", 90)))
	}
	all = rcv.waitAlerts(t, 5) // only t3's crossing; standing ones are not refired
	checkAlert(t, all[4], "t3", AlertConcurrency, 90, 90, 100)
	if ids := []string{a.ringID(4), b.ringID(4), c.ringID(1)}; ids[0] != all[4].ID || ids[1] != ids[0] || ids[2] != ids[0] {
		t.Errorf("replicas disagree on t3's id: %v", ids)
	}
	if n := c.detected(); n != 1 {
		t.Errorf("restored server detected %d, want 1", n)
	}
}

// lockedBuffer is a log destination safe for concurrent writes and reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAlertMAU: a plan that includes monthly active users alerts as they
// reach its thresholds of them.
func TestAlertMAU(t *testing.T) {
	rcv := newAlertReceiver(t, nil)
	r := newAlertHarness(t, rcv.URL, 16)
	p := defaultPlan(t, "starter")
	p.Name, p.IncludedMAU, p.OveragePerMAU = "chat", 10, 1
	r.h.OK(fsm.CmdPutPlan, &fsm.PutPlanCmd{Time: alertT0.UnixNano(), Plan: p.Normalized(), Create: true})
	r.h.OK(fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: alertT0.UnixNano(), Tenant: "t1", Plan: "chat"})
	day := fsm.DayOf(r.clock.Now().UnixNano())
	users := func(names ...string) {
		r.seq++
		b := fsm.Batch("a1", 1, r.seq)
		b.Users = []wire.UserSet{userSet("t1", day, names...)}
		if res := r.h.Items(r.clock.Now(), "", b); res[0].Status != fsm.StatusApplied {
			t.Fatalf("batch: %+v", res[0])
		}
	}
	users("u1", "u2", "u3", "u4", "u5", "u6") // 60%
	users("u7")                               // 70%
	users("u1", "u2")                         // the same users: nothing
	users("u8", "u9", "u10", "u11")           // 110%: 100% only
	got := rcv.waitAlerts(t, 2)
	for i, want := range []struct {
		th    uint32
		value float64
	}{{70, 7}, {100, 11}} {
		if al := got[i]; al.Kind != AlertMAU || al.ThresholdPct != want.th || al.Value != want.value || al.Limit != 10 || al.Plan != "chat" {
			t.Errorf("alert %d: %+v, want mau %d%% at %v of 10", i, al, want.th, want.value)
		}
	}
	if n := r.detected(); n != 2 {
		t.Errorf("%d alerts, want 2", n)
	}
}
