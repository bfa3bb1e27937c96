package aggregator

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/wire"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newTestServer starts a single-server aggregator on a controllable clock;
// opts adjust its configuration.
// newTestServer starts a single-server aggregator on clock (nil: the real
// one), adjusted by opts, and waits until it is ready.
func newTestServer(t testing.TB, clock *fakeClock, opts ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0", RaftAddr: freePort(t), Bootstrap: true}
	if clock != nil {
		cfg.Now = clock.Now
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for ok, why := s.Ready(); !ok; ok, why = s.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// commitItems puts agent messages into the log at the clock's time.
func commitItems(t *testing.T, s *Server, msgs ...wire.Message) {
	t.Helper()
	data, err := fsm.EncodeCmd(fsm.CmdAgentItems, fsm.ItemsCmd(s.clock.Stamp(), "", msgs...))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.node.Raft.Apply(data, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s *Server, path string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if v != nil && rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatal(err)
		}
	}
	return rec.Code
}

// TestScriptedDayUsageAndCost runs a scripted day of a pay-as-you-go
// tenant through the log on a controllable clock and compares its usage
// report and invoice with the hand-computed table in testdata.
func TestScriptedDayUsageAndCost(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC)}
	s := newTestServer(t, clock)
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/app1/plan", jsonBody(`{"plan":"payg"}`)))
	if rec.Code != 200 {
		t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
	}
	at := func(h, m int) { clock.Set(time.Date(2026, 11, 3, h, m, 0, 0, time.UTC)) }
	hour := uint64(time.Hour / time.Microsecond)
	at(9, 0)
	commitItems(t, s, fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "app1", Class: "audio", Opened: 100, Peak: 100}))
	at(10, 0) // 100 audio sessions for an hour: 6,000 minutes
	commitItems(t, s, fsm.Batch("a1", 1, 2,
		wire.DeltaEntry{Tenant: "app1", Class: "audio", Closed: 100, SessionMicros: 100 * hour},
		wire.DeltaEntry{Tenant: "app1", Class: "video-hd", Opened: 50, Peak: 50}))
	at(11, 0) // 50 HD video sessions for an hour: 3,000 minutes; 12 refused
	commitItems(t, s, fsm.Batch("a1", 1, 3, wire.DeltaEntry{Tenant: "app1", Class: "video-hd", Closed: 50, SessionMicros: 50 * hour, Refused: 12, Peak: 50}))

	var got fsm.UsageReportJSON
	if code := get(t, s, "/v1/tenants/app1/usage?period=2026-11", &got); code != 200 {
		t.Fatalf("usage: %d", code)
	}
	var want struct {
		PCU          uint64             `json:"pcu"`
		UnitMinutes  float64            `json:"unit_minutes"`
		Seconds      map[string]float64 `json:"seconds_by_class"`
		Day          fsm.DayJSON        `json:"day"`
		TotalMicros  int64              `json:"total_micros"`
		LineAmounts  map[string]int64   `json:"line_amounts_micros"`
		LineQuantity map[string]uint64  `json:"line_quantities"`
	}
	b, err := os.ReadFile("testdata/scripted_day.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got.PCU != want.PCU || got.UnitMinutes != want.UnitMinutes {
		t.Errorf("pcu %d, unit-minutes %v; want %d, %v", got.PCU, got.UnitMinutes, want.PCU, want.UnitMinutes)
	}
	for c, sec := range want.Seconds {
		if got.SecondsByClass[c] != sec {
			t.Errorf("%s: %v s, want %v", c, got.SecondsByClass[c], sec)
		}
	}
	if len(got.Days) != 3 || got.Days[2].Date != want.Day.Date || got.Days[2].Peak != want.Day.Peak || got.Days[2].Refused != want.Day.Refused {
		t.Errorf("days %+v, want 3 days ending with %+v", got.Days, want.Day)
	}
	if got.Invoice == nil {
		t.Fatalf("no invoice: %s", got.InvoiceError)
	}
	if int64(got.Invoice.Total) != want.TotalMicros {
		t.Errorf("total %d µ, want %d µ; lines %+v", got.Invoice.Total, want.TotalMicros, got.Invoice.Lines)
	}
	for _, l := range got.Invoice.Lines {
		key := string(l.Kind) + ":" + l.Class
		if a, ok := want.LineAmounts[key]; !ok || int64(l.Amount) != a || l.Quantity != want.LineQuantity[key] {
			t.Errorf("line %s: %d %s for %d µ; want %d for %d µ", key, l.Quantity, l.Unit, l.Amount, want.LineQuantity[key], a)
		}
	}
	if len(got.Invoice.Lines) != len(want.LineAmounts) {
		t.Errorf("%d lines, want %d: %+v", len(got.Invoice.Lines), len(want.LineAmounts), got.Invoice.Lines)
	}
	var adv struct {
		Recommended string `json:"recommended"`
	}
	if code := get(t, s, "/v1/tenants/app1/advice?period=2026-11", &adv); code != 200 || adv.Recommended == "" {
		t.Errorf("advice: %d %+v", code, adv)
	}
	if code := get(t, s, "/v1/tenants/app1/usage?period=2026-13", nil); code != 400 {
		t.Errorf("bad period: %d", code)
	}
	if code := get(t, s, "/v1/tenants/nobody/advice", nil); code != 404 {
		t.Errorf("unknown tenant: %d", code)
	}
}
