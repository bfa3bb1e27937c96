package agent

import (
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// TestClosedMinutes: every way a session ends adds its duration, rounded up
// to a whole minute, to the ClosedMinutes of the interval it ended in; an
// expired session's duration ends at its last keepalive.
func TestClosedMinutes(t *testing.T) {
	const min = int64(time.Minute)
	type sess struct {
		id    string
		class plans.Class
		ttl   time.Duration
		open  int64
		ka    int64 // a keepalive at this time, if not 0
		close int64 // closed at this time, if not 0
	}
	cases := []struct {
		name string
		sess []sess
		// end runs at endAt after the explicit closes: "" nothing, "expire",
		// "reset" or "reconcile" (to an empty list).
		end   string
		endAt int64
		want  map[string]uint64 // class → ClosedMinutes of the cut at endAt
		open  uint64            // sessions still open after
	}{
		{name: "30 s is one minute", sess: []sess{{id: "a", class: plans.Audio, close: 30 * sec}}, endAt: 30 * sec,
			want: map[string]uint64{"audio": 1}},
		{name: "exactly a minute is one", sess: []sess{{id: "a", class: plans.Audio, close: min}}, endAt: min,
			want: map[string]uint64{"audio": 1}},
		{name: "a nanosecond over is two", sess: []sess{{id: "a", class: plans.Audio, close: min + 1}}, endAt: min + 1,
			want: map[string]uint64{"audio": 2}},
		{name: "closed at once is none", sess: []sess{{id: "a", class: plans.Audio, open: 5 * sec, close: 5 * sec}}, endAt: 5 * sec,
			want: map[string]uint64{}},
		{name: "each session rounded on its own, per class",
			sess: []sess{
				{id: "a", class: plans.Audio, close: 10 * sec},            // 1
				{id: "b", class: plans.Audio, open: sec, close: 11 * sec}, // 1 (the two together are 20 s)
				{id: "c", class: plans.VideoHD, close: 61 * sec},          // 2
				{id: "d", class: plans.VideoHD, open: 2 * sec},            // still open: nothing yet
			},
			endAt: 61 * sec, want: map[string]uint64{"audio": 2, "video-hd": 2}, open: 1},
		{name: "expired at the last keepalive, not at expiry",
			sess: []sess{{id: "a", class: plans.AI, ttl: 10 * time.Second, ka: 55 * sec}}, // expires at 70 s: 55 s is 1 minute, 70 s would be 2
			end:  "expire", endAt: 70 * sec, want: map[string]uint64{"ai": 1}},
		{name: "reset closes every session",
			sess: []sess{{id: "a", class: plans.Audio}, {id: "b", class: plans.Audio, open: 30 * sec}},
			end:  "reset", endAt: 90 * sec, want: map[string]uint64{"audio": 3}}, // 90 s: 2, 60 s: 1
		{name: "reconcile closes what the media server no longer lists",
			sess: []sess{{id: "a", class: plans.Video2K}},
			end:  "reconcile", endAt: 3*min + sec, want: map[string]uint64{"video-2k": 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := newTable()
			te := tab.tenant("t1", true)
			byID := map[string]*session{}
			for _, s := range tc.sess {
				byID[s.id] = tab.open(te, s.id, s.class, s.ttl, s.open)
			}
			for _, s := range tc.sess {
				if s.ka != 0 {
					tab.keepalive(byID[s.id], s.ka)
				}
			}
			for _, s := range tc.sess {
				if s.close != 0 {
					tab.close(byID[s.id], s.close)
				}
			}
			switch tc.end {
			case "expire":
				if n := tab.expireDue(tc.endAt); n != 1 {
					t.Fatalf("expired %d", n)
				}
			case "reset":
				tab.reset(tc.endAt)
			case "reconcile":
				tab.reconcile(map[string]reconItem{}, tc.endAt)
			}
			es, _ := tab.cut(tc.endAt)
			for _, c := range plans.AllClasses {
				e, _ := entryOf(es, "t1", c.String())
				if e.ClosedMinutes != tc.want[c.String()] {
					t.Errorf("%s: %d closed minutes, want %d (%+v)", c, e.ClosedMinutes, tc.want[c.String()], e)
				}
			}
			if n := uint64(tab.openCount()); n != tc.open {
				t.Errorf("%d open, want %d", n, tc.open)
			}
			// The next interval starts from none.
			es, _ = tab.cut(tc.endAt + sec)
			for _, e := range es {
				if e.ClosedMinutes != 0 {
					t.Errorf("next interval: %+v", e)
				}
			}
		})
	}
}

// TestFullStateSumsClosedMinutes: a FullState carries the rounded minutes
// of every unacknowledged batch, summed like the session time.
func TestFullStateSumsClosedMinutes(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	for _, id := range []string{"s1", "s2", "s3"} {
		if _, err := a.Open("t1", "audio", id, 0); err != nil {
			t.Fatal(err)
		}
	}
	clk.advance(30 * time.Second)
	a.Close("s1") // 1 minute
	cutNow(a)
	clk.advance(61 * time.Second)
	a.Close("s2") // 91 s: 2 minutes
	cutNow(a)
	a.mu.Lock()
	fs := a.fullStateLocked()
	var batches []*wire.DeltaBatch
	for _, b := range a.unacked {
		batches = append(batches, b.msg)
	}
	a.mu.Unlock()
	if len(batches) != 2 {
		t.Fatalf("%d unacked batches, want 2", len(batches))
	}
	sum := sumEntries(batches)[usageKey{"t1", "audio"}]
	u, _ := entryOf(fs.Usage, "t1", "audio")
	if u.ClosedMinutes != 3 || sum.ClosedMinutes != 3 || u.SessionMicros != sum.SessionMicros {
		t.Fatalf("full state usage %+v, batches %+v: want 3 closed minutes in both", u, sum)
	}
}
