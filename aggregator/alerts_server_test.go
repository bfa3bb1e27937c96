package aggregator

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// TestAlertWebhookFromServer: a server configured with a webhook POSTs a
// tenant's crossing, derived from the log, and logs it.
func TestAlertWebhookFromServer(t *testing.T) {
	rcv := newAlertReceiver(t, nil)
	var logs lockedBuffer
	clock := &fakeClock{t: alertT0}
	s := newTestServer(t, clock, func(c *Config) {
		c.AlertWebhook, c.AlertThresholds = rcv.URL, []uint32{50, 100}
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	})
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/app1/plan", jsonBody(`{"plan":"starter"}`)))
	if rec.Code != 200 {
		t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
	}
	commitItems(t, s, fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1, fsm.Open("app1", "video-hd", 60)))
	got := rcv.waitAlerts(t, 1)
	checkAlert(t, got[0], "app1", AlertConcurrency, 50, 60, 100)
	alertWait(t, "the alert's log line", func() bool { return strings.Contains(logs.String(), "id="+got[0].ID) })
	line := logs.String()[strings.Index(logs.String(), "id="+got[0].ID):]
	for _, kv := range []string{"tenant=app1", "plan=starter", "kind=concurrency", "threshold_pct=50", "value=60", "limit=100"} {
		if !strings.Contains(line[:strings.IndexByte(line, '\n')], kv) {
			t.Errorf("log line %q lacks %s", line, kv)
		}
	}
}

// TestAlertThresholdsFlag: --alert-thresholds takes ascending percentages
// from 1 to 1000; anything else is refused with an error that says why, as
// is a bad webhook URL, before the server opens anything.
func TestAlertThresholdsFlag(t *testing.T) {
	for in, want := range map[string]string{
		"70,90,100":  "[70 90 100]",
		" 50 , 80% ": "[50 80]",
		"1,1000":     "[1 1000]",
		"":           "empty",
		"0,50":       "from 1 to 1000",
		"70,1001":    "from 1 to 1000",
		"90,70":      "70 after 90: want ascending",
		"70,70":      "70 after 70",
		"70,,90":     `"" is not a whole percentage`,
		"seventy":    `"seventy" is not a whole percentage`,
		"-5":         "not a whole percentage",
		"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17": "at most 16",
	} {
		ths, err := ParseAlertThresholds(in)
		got := fmt.Sprint(ths)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	for _, cfg := range []Config{
		{AlertThresholds: []uint32{90, 70}},
		{AlertThresholds: []uint32{0}},
		{AlertWebhook: "ftp://example.com/x"},
		{AlertWebhook: "not a url"},
	} {
		cfg.DataDir, cfg.HTTPAddr, cfg.WireAddr, cfg.RaftAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("%+v accepted", cfg)
		} else if !strings.Contains(err.Error(), "alert") {
			t.Errorf("error %q does not name the alert setting", err)
		}
	}
}
