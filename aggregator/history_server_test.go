package aggregator

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/api"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// TestHistoryEndpoint: the server's history of a tenant through the API,
// with ?since, and the refusals.
func TestHistoryEndpoint(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)}
	s := newTestServer(t, clock)
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/app1/plan", jsonBody(`{"plan":"starter"}`)))
	if rec.Code != 200 {
		t.Fatalf("set plan: %d", rec.Code)
	}
	commitItems(t, s, fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1, fsm.Open("app1", "audio", 7)))
	clock.Set(clock.Now().Add(2 * time.Minute))
	commitItems(t, s, fsm.Batch("a1", 1, 2, fsm.Closed("app1", "audio", 3)))
	var hj api.HistoryJSON
	if code := get(t, s, "/v1/tenants/app1/history", &hj); code != 200 {
		t.Fatalf("history: %d", code)
	}
	if !hj.Tracked || hj.MinuteSeconds != 60 || len(hj.Points) != 3 || hj.Points[0].Peak != 7 || hj.Points[1].Peak != 7 || hj.Points[2].Peak != 7 || hj.Points[0].Ceiling != 100 {
		t.Fatalf("history %+v", hj)
	}
	if code := get(t, s, "/v1/tenants/app1/history?since=1m", &hj); code != 200 || len(hj.Points) != 2 {
		t.Fatalf("since=1m: %d %+v", code, hj)
	}
	if code := get(t, s, "/v1/tenants/app1/history?since=2026-12-03T09:02:00Z", &hj); code != 200 || len(hj.Points) != 1 || hj.Points[0].Peak != 7 {
		t.Fatalf("since 09:02: %d %+v", code, hj)
	}
	for path, want := range map[string]int{"/v1/tenants/nobody/history": 404, "/v1/tenants/app1/history?since=yesterday": 400, "/v1/tenants/app1/history?since=-1h": 400} {
		if code, body, _ := getRaw(t, s, path); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
}
