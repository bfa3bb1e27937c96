package aggregator

import (
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/api"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/internal/exporttest"
	"github.com/headroom-rtc/headroom/internal/metricstest"
	"github.com/headroom-rtc/headroom/wire"
)

// waitUntil polls cond until it returns nil, failing with its last error
// after limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// endpointMicros reads, through the usage endpoint, each tenant's session
// time per period and class (tenant/period/class → µs, zeros left out).
func endpointMicros(t *testing.T, s *Server, tenants []string, periods ...string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, tn := range tenants {
		for _, p := range periods {
			var u fsm.UsageReportJSON
			if code := get(t, s, "/v1/tenants/"+tn+"/usage?period="+p, &u); code != 200 {
				t.Fatalf("usage of %s: %d", tn, code)
			}
			for c, sec := range u.SecondsByClass {
				if m := uint64(math.Round(sec * 1e6)); m > 0 {
					out[tn+"/"+p+"/"+c] = m
				}
			}
		}
	}
	return out
}

// exactly reports how the receiver's totals differ from the usage.
func exactly(got, want map[string]uint64) error {
	if reflect.DeepEqual(got, want) {
		return nil
	}
	return fmt.Errorf("received %v, usage %v", got, want)
}

func exportServer(t *testing.T, clock *fakeClock, rcv *exporttest.Receiver, tweak ...func(*Config)) *Server {
	return newTestServer(t, clock, append([]func(*Config){func(c *Config) {
		c.ExportURL, c.ExportWindow, c.ExportBatch, c.exportBackoff = rcv.URL+"/ingest", 100*time.Millisecond, fsm.NumClasses, 20*time.Millisecond
	}}, tweak...)...)
}

// traffic books usage of tenants t1..t5 in three classes and two regions.
func traffic(t *testing.T, s *Server, seq *uint64, micros uint64) {
	t.Helper()
	var es []wire.DeltaEntry
	for i := 1; i <= 5; i++ {
		for j, c := range []string{"audio", "video-fhd", "ai"} {
			es = append(es, wire.DeltaEntry{Tenant: fmt.Sprintf("t%d", i), Class: c, SessionMicros: micros*uint64(i) + uint64(j)})
		}
	}
	*seq++
	data, err := fsm.EncodeCmd(fsm.CmdAgentItems, fsm.ItemsCmd(s.clock.Stamp(), "", fsm.Batch("a1", 1, *seq, es...)))
	if err != nil {
		t.Fatal(err)
	}
	f := s.node.Raft.Apply(data, 5*time.Second)
	if err := commitErr(f); err != nil {
		t.Fatal(err)
	}
	if st := f.Response().(*fsm.ApplyResult).Items[0].Status; st != fsm.StatusApplied {
		t.Fatalf("batch %d: status %d", *seq, st)
	}
}

var exportTenants = []string{"t1", "t2", "t3", "t4", "t5"}

// TestExportRetriedAndDeduplicatedExactly: the receiver answers 500 to its
// first three batches (keeping the second, as if only its reply was lost);
// the events, parsed by the CloudEvents SDK, after deduplication by id add
// up to the usage endpoint's figures exactly, window after window, in
// batches of at most --export-batch events, with the bearer token.
func TestExportRetriedAndDeduplicatedExactly(t *testing.T) {
	rcv := exporttest.New()
	defer rcv.Close()
	rcv.Answer = func(n int) exporttest.Reply {
		if n <= 3 {
			return exporttest.Reply{Code: 500, Keep: n == 2}
		}
		return exporttest.Reply{Code: 200, Keep: true}
	}
	s := exportServer(t, nil, rcv, func(c *Config) { c.ExportToken = "s3cret" })
	commitItems(t, s, fsm.Full("a1", 1, 0))
	var seq uint64
	period := s.cfg.Now().UTC().Format("2006-01")
	for round := 1; round <= 3; round++ {
		traffic(t, s, &seq, uint64(round)*1_234_567)
		waitUntil(t, 30*time.Second, fmt.Sprintf("round %d exported exactly", round), func() error {
			if bad := rcv.Bad(); len(bad) > 0 {
				t.Fatalf("bad batches: %v", bad)
			}
			return exactly(rcv.Totals(), endpointMicros(t, s, exportTenants, period))
		})
	}
	st := rcv.Stats()
	if st.Dupes == 0 {
		t.Errorf("no duplicate event arrived, though batch 2 was kept and answered 500: %+v", st)
	}
	if st.MaxBatch > 6 || st.Kept < 3 {
		t.Errorf("batches: %+v, want several of at most 6 events", st)
	}
	if st.Token != "Bearer s3cret" || len(st.Sources) != 1 || !strings.HasPrefix(st.Sources[0], "headroom/") {
		t.Errorf("token %q, sources %v", st.Token, st.Sources)
	}
	m, _ := metricstest.Scrape(t, s.api.Handler())
	if m["headroom_export_events_sent_total"] < 15 || m[`headroom_export_batches_failed_total{reason="5xx"}`] < 3 {
		t.Errorf("metrics: sent %v, failed 5xx %v", m["headroom_export_events_sent_total"], m[`headroom_export_batches_failed_total{reason="5xx"}`])
	}
	if _, ok := m["headroom_export_lag_seconds"]; !ok {
		t.Error("no headroom_export_lag_seconds")
	}
}

// TestExportRefusalNotRetried: a 400 without Retry-After is logged with
// the receiver's body and not retried (the export stops, nothing is lost
// or marked sent); a 429 with Retry-After is retried after it.
func TestExportRefusalNotRetried(t *testing.T) {
	rcv := exporttest.New()
	defer rcv.Close()
	var refuse = true
	rcv.Answer = func(n int) exporttest.Reply {
		if refuse {
			return exporttest.Reply{Code: 400, Body: `{"error":"event 7 has no meter"}`}
		}
		return exporttest.Reply{Code: 200, Keep: true}
	}
	var logs lockedBuffer
	s := exportServer(t, nil, rcv, func(c *Config) { c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info}) })
	commitItems(t, s, fsm.Full("a1", 1, 0))
	var seq uint64
	traffic(t, s, &seq, 1_000_000)
	waitUntil(t, 30*time.Second, "the refusal logged with its body", func() error {
		if !strings.Contains(logs.String(), `event 7 has no meter`) {
			return fmt.Errorf("log: %s", logs.String())
		}
		return nil
	})
	m, _ := metricstest.Scrape(t, s.api.Handler())
	if m["headroom_export_blocked"] != 1 || m[`headroom_export_batches_failed_total{reason="4xx"}`] != 1 {
		t.Fatalf("blocked %v, 4xx failures %v", m["headroom_export_blocked"], m[`headroom_export_batches_failed_total{reason="4xx"}`])
	}
	time.Sleep(50 * s.cfg.exportBackoff) // a retry would come within a few backoffs
	if n := rcv.Stats().Batches; n != 1 {
		t.Fatalf("the refused batch was sent %d times", n)
	}
	var pending uint64
	s.fsm.Read(func(st fsm.View) { pending = st.Export().Pending() })
	if pending == 0 {
		t.Fatal("the refused records were marked sent")
	}
}

// TestExportRetryAfter: a 429 with Retry-After: 1 is retried (after it);
// then the totals are exact.
func TestExportRetryAfter(t *testing.T) {
	rcv := exporttest.New()
	defer rcv.Close()
	rcv.Answer = func(n int) exporttest.Reply {
		if n == 1 {
			return exporttest.Reply{Code: 429, Header: http.Header{"Retry-After": {"1"}}}
		}
		return exporttest.Reply{Code: 200, Keep: true}
	}
	s := exportServer(t, nil, rcv)
	commitItems(t, s, fsm.Full("a1", 1, 0))
	var seq uint64
	traffic(t, s, &seq, 3_000_001)
	period := s.cfg.Now().UTC().Format("2006-01")
	waitUntil(t, 30*time.Second, "exported exactly after the 429", func() error {
		return exactly(rcv.Totals(), endpointMicros(t, s, exportTenants, period))
	})
	m, _ := metricstest.Scrape(t, s.api.Handler())
	if m[`headroom_export_batches_failed_total{reason="429"}`] != 1 {
		t.Fatalf("429 failures: %v", m[`headroom_export_batches_failed_total{reason="429"}`])
	}
}

// TestExportBacklogAfterAnHourDown: a receiver down for an hour of the
// clock (one-minute windows, usage in each) holds the windows back; once it
// is back it gets the backlog as one window's events, in bounded batches,
// and the totals are exact.
func TestExportBacklogAfterAnHourDown(t *testing.T) {
	rcv := exporttest.New()
	defer rcv.Close()
	down := true
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	isDown := func() bool { <-mu; defer func() { mu <- struct{}{} }(); return down }
	rcv.Answer = func(n int) exporttest.Reply {
		if isDown() {
			return exporttest.Reply{Code: 503}
		}
		return exporttest.Reply{Code: 200, Keep: true}
	}
	clock := &fakeClock{t: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)}
	s := exportServer(t, clock, rcv, func(c *Config) { c.ExportWindow, c.AgentGrace = time.Minute, 24*time.Hour })
	commitItems(t, s, fsm.Full("a1", 1, 0))
	var seq uint64
	for m := 0; m < 60; m++ {
		clock.Set(clock.Now().Add(time.Minute))
		traffic(t, s, &seq, 60_000_000)
		if m == 0 {
			waitUntil(t, 30*time.Second, "the first window cut", func() error {
				if n := rcv.Stats().Batches; n == 0 {
					return fmt.Errorf("no batch tried yet")
				}
				return nil
			})
		}
	}
	var cutBefore uint64
	s.fsm.Read(func(st fsm.View) { cutBefore = st.Export().Seq })
	if cutBefore != 1 {
		t.Fatalf("%d windows cut while the receiver was down, want 1 held back", cutBefore)
	}
	<-mu
	down = false
	mu <- struct{}{}
	waitUntil(t, 60*time.Second, "the backlog exported exactly", func() error {
		return exactly(rcv.Totals(), endpointMicros(t, s, exportTenants, "2026-12"))
	})
	var cut uint64
	s.fsm.Read(func(st fsm.View) { cut = st.Export().Seq })
	st := rcv.Stats()
	// Cut 1 held 15 events; cut 2 the other 59 minutes of 5 tenants × 3
	// classes: 15 events, not 59 × 15.
	if cut != 2 || st.MaxBatch > 6 || st.Kept > 6 {
		t.Fatalf("after the outage: %d cuts, receiver %+v, usage %v", cut, st, endpointMicros(t, s, exportTenants, "2026-12"))
	}
}

// TestExportConfig: bad settings are refused before anything starts.
func TestExportConfig(t *testing.T) {
	for _, c := range []Config{
		{ExportURL: "ftp://x"},
		{ExportURL: "http://x", ExportWindow: time.Millisecond},
		{ExportURL: "http://x", ExportBatch: 5},
		{ExportURL: "http://x", ExportBatch: api.MaxExportBatch + 1},
	} {
		c.DataDir, c.HTTPAddr, c.WireAddr, c.RaftAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		if s, err := New(c); err == nil {
			s.Close()
			t.Errorf("%+v accepted", c)
		} else if !strings.Contains(err.Error(), "export") {
			t.Errorf("%+v: %v does not name the export", c, err)
		}
	}
}

// commitErr is the error of a commit: Raft's, or the command's refusal.
func commitErr(f raft.ApplyFuture) error {
	if err := f.Error(); err != nil {
		return err
	}
	if res, _ := f.Response().(*fsm.ApplyResult); res != nil && res.Err != nil {
		return res.Err
	}
	return nil
}
