package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/exporttest"
)

// TestExportThroughLeaderKill: three aggregator processes with --export-url
// pointing at a billing system's ingest endpoint in the test, which parses
// every batch with the CloudEvents Go SDK; an agent process with sessions of
// six tenants in three classes. The receiver answers 500 for its first two
// seconds (keeping every other batch, as if only its reply were lost);
// later, at one batch, it keeps it and holds its answer while the test kills
// the leader with -9, so the new leader sends those events again. After the
// sessions are closed, the usage received, deduplicated by event id, equals
// the usage endpoint's figures exactly, per tenant, period and class.
func TestExportThroughLeaderKill(t *testing.T) {
	rcv := exporttest.New()
	defer rcv.Close()
	var (
		mu        sync.Mutex
		first     time.Time
		armed     bool
		held      = make(chan int, 1)
		release   = make(chan struct{})
		releaseMu sync.Once
	)
	t.Cleanup(func() { releaseMu.Do(func() { close(release) }) })
	rcv.Answer = func(n int) exporttest.Reply {
		mu.Lock()
		defer mu.Unlock()
		if first.IsZero() {
			first = time.Now()
		}
		switch {
		case time.Since(first) < 2*time.Second:
			return exporttest.Reply{Code: http.StatusInternalServerError, Keep: n%2 == 0}
		case armed:
			armed = false
			return exporttest.Reply{Code: http.StatusOK, Keep: true, Then: func() {
				held <- n
				<-release // the leader is killed meanwhile
			}}
		}
		return exporttest.Reply{Code: http.StatusOK, Keep: true}
	}

	c := newCluster(t, 3, nil, "--export-url", rcv.URL+"/ingest", "--export-window", "500ms", "--export-batch", "12")
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(60*time.Second, c.servers...)
	tenants := tenantNames("ex", 6)
	c.setPlans(tenants, "payg")
	ag := c.addAgent("ag1", nil, c.wires(c.servers))
	ctx := context.Background()
	classes := []string{"audio", "video-fhd", "ai"}
	var open []string
	openAll := func(round int) {
		for i, tn := range tenants {
			for j, cl := range classes[:1+(i+round)%3] {
				id := fmt.Sprintf("%s-%s-%d-%d", tn, cl, round, j)
				if err := ag.open(ctx, 30*time.Second, tn, cl, id); err != nil {
					t.Fatal(err)
				}
				open = append(open, id)
			}
		}
	}
	closeAll := func() {
		for _, id := range open {
			if err := ag.close(ctx, 30*time.Second, id); err != nil {
				t.Fatal(err)
			}
		}
		open = nil
	}
	openAll(0)
	waitFor(t, 60*time.Second, "batches accepted after the 500s", func() error {
		if st := rcv.Stats(); st.Kept < 4 {
			return fmt.Errorf("receiver: %+v", st)
		}
		return nil
	})
	c.tl.mark("the receiver took %+v", rcv.Stats())

	// Hold the answer to the next batch and kill the leader meanwhile.
	lead, _ := c.waitLeader(30*time.Second, c.servers)
	mu.Lock()
	armed = true
	mu.Unlock()
	var n int
	select {
	case n = <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("no batch came to be held")
	}
	lead.p.kill()
	releaseMu.Do(func() { close(release) })
	c.tl.mark("killed the leader %s while the receiver held the answer to batch %d", lead.name, n)
	closeAll()
	openAll(1)
	lead.p.restart()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(60*time.Second, c.servers...)
	closeAll()
	c.waitAgentsSettled(60*time.Second, ag)

	period := time.Now().UTC().Format("2006-01")
	var want map[string]uint64
	waitFor(t, 90*time.Second, "the export adds up to the usage exactly", func() error {
		if bad := rcv.Bad(); len(bad) > 0 {
			t.Fatalf("bad batches: %v", bad)
		}
		want = map[string]uint64{}
		for _, tn := range tenants {
			s, _, err := c.leader(c.servers)
			if err != nil {
				return err
			}
			var f tenantFig
			if _, err := getJSON(fastc, s.url("/v1/tenants/"+tn+"?consistent=true&period="+period), &f); err != nil {
				return err
			}
			for cl, sec := range f.Usage.SecondsByClass {
				if m := uint64(math.Round(sec * 1e6)); m > 0 {
					want[tn+"/"+period+"/"+cl] = m
				}
			}
		}
		if got := rcv.Totals(); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("received %v\nusage    %v", got, want)
		}
		return nil
	})
	st := rcv.Stats()
	c.tl.mark("exported exactly: %d events (%d repeated ids) in %d batches kept of %d answered, at most %d a batch; %d tenant/class figures",
		st.Events, st.Dupes, st.Kept, st.Batches, st.MaxBatch, len(want))
	if st.Dupes == 0 {
		t.Errorf("no id came twice, though batches were kept and answered 500, and one held through a leader kill: %+v", st)
	}
	if st.MaxBatch > 12 || len(st.Sources) != 1 {
		t.Errorf("receiver: %+v, want batches of at most 12 events from one source", st)
	}
	if len(want) < len(tenants) {
		t.Errorf("usage of %d tenant/class figures, want every tenant's", len(want))
	}
	// Finance's file: every tenant's invoice lines, as `headroom usage`
	// has them.
	s, _, err := c.leader(c.servers)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCLI("export", "invoices", "--addr", s.http, "--period", period)
	if err != nil {
		t.Fatalf("headroom export invoices: %v: %s", err, out)
	}
	body, note, _ := strings.Cut(out, "note: ") // the open period's note, on standard error
	if !strings.Contains(note, "not closed") {
		t.Errorf("no note that the period is open: %q", note)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatalf("the CSV: %v\n%s", err, out)
	}
	var u fsm.UsageReportJSON
	if _, err := getJSON(fastc, s.url("/v1/tenants/"+tenants[0]+"/usage?period="+period), &u); err != nil || u.Invoice == nil {
		t.Fatalf("usage of %s: %v %+v", tenants[0], err, u)
	}
	var mine [][]string
	for _, r := range rows[1:] {
		if r[1] == tenants[0] {
			mine = append(mine, r)
		}
	}
	if len(rows[0]) < 12 || len(mine) != len(u.Invoice.Lines) {
		t.Fatalf("CSV header %v; %s has %d rows, its usage report %d lines", rows[0], tenants[0], len(mine), len(u.Invoice.Lines))
	}
	for i, l := range u.Invoice.Lines {
		if mine[i][3] != string(l.Kind) || mine[i][11] != strconv.FormatInt(int64(l.Amount), 10) {
			t.Errorf("row %v, usage line %+v", mine[i], l)
		}
	}
	c.tl.summary()
}
