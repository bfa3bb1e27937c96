package aggregator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/api"

	"github.com/hashicorp/go-hclog"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// TestAlertWebhookFromServer: a server configured with a webhook POSTs a
// tenant's crossing, derived from the log, and logs it.
func TestAlertWebhookFromServer(t *testing.T) {
	posts := make(chan api.Alert, 16)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var al api.Alert
		if err := json.NewDecoder(r.Body).Decode(&al); err != nil || r.Method != http.MethodPost {
			t.Errorf("webhook got %s: %v", r.Method, err)
		}
		posts <- al
	}))
	defer rcv.Close()
	var logs lockedBuffer
	at := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	s := newTestServer(t, &fakeClock{t: at}, func(c *Config) {
		c.AlertWebhook, c.AlertThresholds = rcv.URL, []uint32{50, 100}
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	})
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/app1/plan", jsonBody(`{"plan":"starter"}`)))
	if rec.Code != 200 {
		t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
	}
	commitItems(t, s, fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1, fsm.Open("app1", "video-hd", 60)))
	var al api.Alert
	select {
	case al = <-posts:
	case <-time.After(10 * time.Second):
		t.Fatal("no alert posted")
	}
	if al.Tenant != "app1" || al.Kind != api.AlertConcurrency || al.ThresholdPct != 50 || al.Value != 60 || al.Limit != 100 || al.Plan != "starter" || len(al.ID) != 32 {
		t.Errorf("alert %+v, want app1 concurrency 50%% value 60 of 100 on starter", al)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "id="+al.ID) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the alert's log line")
		}
		time.Sleep(2 * time.Millisecond)
	}
	line := logs.String()[strings.Index(logs.String(), "id="+al.ID):]
	for _, kv := range []string{"tenant=app1", "plan=starter", "kind=concurrency", "threshold_pct=50", "value=60", "limit=100"} {
		if !strings.Contains(line[:strings.IndexByte(line, '\n')], kv) {
			t.Errorf("log line %q lacks %s", line, kv)
		}
	}
}

// lockedBuffer is a log destination safe for concurrent writes and reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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
		ths, err := api.ParseAlertThresholds(in)
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
