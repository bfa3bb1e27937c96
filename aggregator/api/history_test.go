package api

import (
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// historyHarness is a state machine whose entries feed a history.
func historyHarness(t *testing.T, max int) (*fsm.Harness, *history) {
	h := fsm.NewHarness(t)
	hist := newHistory(max)
	h.F.OnChange = func(names []string) { hist.changed(h.F, names) }
	return h, hist
}

func peaks(pts []HistoryPointJSON) []uint64 {
	out := make([]uint64, len(pts))
	for i, p := range pts {
		out[i] = p.Peak
	}
	return out
}

// TestHistoryMinutes: a minute's peak is the highest count an entry of it
// left; minutes without an entry carry the previous count; the ceiling is
// the plan's; reads run to the latest entry's minute.
func TestHistoryMinutes(t *testing.T) {
	h, hist := historyHarness(t, 10)
	at := time.Date(2026, 12, 3, 9, 0, 10, 0, time.UTC)
	h.Items(at, "starter", fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1, fsm.Open("t", "audio", 5)))
	h.Items(at.Add(20*time.Second), "", fsm.Batch("a1", 1, 2, fsm.Open("t", "audio", 4)))    // 9 in minute 0
	h.Items(at.Add(40*time.Second), "", fsm.Batch("a1", 1, 3, fsm.Closed("t", "audio", 7)))  // ends minute 0 at 2
	h.Items(at.Add(3*time.Minute), "", fsm.Batch("a1", 1, 4, fsm.Open("t", "video-hd", 1)))  // 3 in minute 3
	h.Items(at.Add(5*time.Minute), "", fsm.Batch("a1", 1, 5, fsm.Open("other", "audio", 1))) // the latest entry: minute 5
	var now int64
	h.F.Read(func(s fsm.View) { now = s.Time() })
	pts, tracked := hist.points("t", 0, now)
	if !tracked || !reflect.DeepEqual(peaks(pts), []uint64{9, 2, 2, 3, 3, 3}) {
		t.Fatalf("tracked %v, peaks %v, want 9 2 2 3 3 3", tracked, peaks(pts))
	}
	if pts[0].At != "2026-12-03T09:00:00Z" || pts[5].At != "2026-12-03T09:05:00Z" || pts[0].Ceiling != 100 {
		t.Fatalf("points %+v", pts)
	}
	since := at.Add(3 * time.Minute).Add(-10 * time.Second).UnixNano() // within minute 3
	if pts, _ := hist.points("t", since, now); len(pts) != 3 || pts[0].At != "2026-12-03T09:03:00Z" {
		t.Fatalf("since minute 3: %+v", pts)
	}
	if pts, tracked := hist.points("nobody", 0, now); tracked || len(pts) != 0 {
		t.Fatalf("an unknown tenant: %v %+v", tracked, pts)
	}
}

// TestHistoryBounded: never more than the cap of tenants, the busiest by
// peak kept; never more than six hours of minutes.
func TestHistoryBounded(t *testing.T) {
	h, hist := historyHarness(t, 3)
	at := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	h.Items(at, "payg", fsm.Full("a1", 1, 0))
	seq := uint64(0)
	for i := 1; i <= 10; i++ {
		seq++
		h.Items(at, "", fsm.Batch("a1", 1, seq, fsm.Open(fmt.Sprintf("t%02d", i), "audio", uint64(i))))
		if n := hist.tracked(); n > 3 {
			t.Fatalf("%d tenants tracked, cap 3", n)
		}
	}
	kept := func() []string {
		hist.mu.Lock()
		defer hist.mu.Unlock()
		var out []string
		for n := range hist.series {
			out = append(out, n)
		}
		sort.Strings(out)
		return out
	}
	if got := kept(); !reflect.DeepEqual(got, []string{"t08", "t09", "t10"}) {
		t.Fatalf("kept %v, want the busiest three", got)
	}
	seq++
	h.Items(at, "", fsm.Batch("a1", 1, seq, fsm.Open("quiet", "audio", 5))) // less busy than any kept
	seq++
	h.Items(at, "", fsm.Batch("a1", 1, seq, fsm.Open("big", "audio", 20))) // busier: replaces t08
	if got := kept(); !reflect.DeepEqual(got, []string{"big", "t09", "t10"}) {
		t.Fatalf("kept %v", got)
	}
	// Twelve hours of minutes, an entry each: at most six hours kept.
	for m := 1; m <= 720; m++ {
		seq++
		h.Items(at.Add(time.Duration(m)*time.Minute), "", fsm.Batch("a1", 1, seq, fsm.Open("t10", "audio", 1)))
	}
	hist.mu.Lock()
	for n, s := range hist.series {
		if len(s.pts) > historyMinutes || cap(s.pts) > 2*historyMinutes {
			t.Errorf("%s: %d points (capacity %d), at most %d", n, len(s.pts), cap(s.pts), historyMinutes)
		}
	}
	hist.mu.Unlock()
	var now int64
	h.F.Read(func(s fsm.View) { now = s.Time() })
	pts, _ := hist.points("t09", 0, now)
	if len(pts) != historyMinutes || pts[len(pts)-1].Peak != 9 {
		t.Fatalf("t09, silent for 12 h: %d points, last %+v", len(pts), pts[len(pts)-1])
	}
	// A deleted tenant leaves the history.
	seq++
	h.Items(at.Add(721*time.Minute), "", fsm.Batch("a1", 1, seq, fsm.Closed("t09", "audio", 9)))
	if res := h.Apply(fsm.CmdTenantOp, &fsm.TenantOpCmd{Time: at.Add(722 * time.Minute).UnixNano(), Tenant: "t09", Op: "delete"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := kept(); !reflect.DeepEqual(got, []string{"big", "t10"}) {
		t.Fatalf("kept %v after t09 was deleted", got)
	}
}
