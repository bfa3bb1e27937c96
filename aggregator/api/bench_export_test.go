package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// BenchmarkExport100k measures one window of the usage export on the
// leader: 100,000 tenants × 6 classes grew (one region), so the cut freezes
// 100,000 records and the leader encodes 600,000 events and POSTs them in
// batches of 1,000 to a local receiver (which reads and counts them),
// committing each accepted batch through Raft (one voter, fsync'd). Setup
// (the usage, through the log) is not timed. Reported: events/s and the
// process's CPU time for the window (leader and the receiver's reads).
func BenchmarkExport100k(b *testing.B) {
	const tenants = 100_000
	var events atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		events.Add(int64(bytes.Count(body, []byte(`"specversion"`))))
	}))
	defer rcv.Close()
	s := raftAPI(b, func(c *Config) {
		c.Export = ExportConfig{URL: rcv.URL, Batch: DefaultExportBatch, Window: time.Millisecond, Backoff: time.Millisecond}
	})
	x := s.export
	classes := []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}
	seq := uint64(0)
	commit := func(msgs ...wire.Message) {
		data, err := fsm.EncodeCmd(fsm.CmdAgentItems, fsm.ItemsCmd(s.stamp(), "", msgs...))
		if err != nil {
			b.Fatal(err)
		}
		if err := applyErr(s.node.Raft.Apply(data, time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	commit(&wire.FullState{AgentID: "a1", Epoch: 1})
	usage := func(round int) {
		for i := 0; i < tenants; i += 1000 {
			es := make([]wire.DeltaEntry, 0, 6000)
			for j := i; j < i+1000; j++ {
				for k, c := range classes {
					es = append(es, wire.DeltaEntry{Tenant: fmt.Sprintf("tenant-%06d", j), Class: c, SessionMicros: uint64(round*1_000_003 + k)})
				}
			}
			seq++
			commit(&wire.DeltaBatch{AgentID: "a1", Epoch: 1, Seq: seq, Entries: es})
		}
	}
	ctx := context.Background()
	var cpu, wall time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		usage(i + 1)
		events.Store(0)
		b.StartTimer()
		start, c0 := time.Now(), cpuTime()
		x.step(ctx)
		wall += time.Since(start)
		cpu += cpuTime() - c0
		if n := events.Load(); n != tenants*6 {
			b.Fatalf("the receiver counted %d events, want %d", n, tenants*6)
		}
	}
	b.ReportMetric(float64(tenants*6*b.N)/wall.Seconds(), "events/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/window")
	b.ReportMetric(wall.Seconds()/float64(b.N), "s/window")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkExportEncode encodes 6,000 events (1,000 records × 6 classes)
// with the export's encoder; BenchmarkExportEncodeSDK, the baseline, the
// same events as CloudEvents SDK events marshalled with encoding/json.
func BenchmarkExportEncode(b *testing.B) {
	st, recs := encodeFixture()
	b.ReportAllocs()
	var body []byte
	for b.Loop() {
		body = append(body[:0], '[')
		for i := range recs {
			for c, d := range recs[i].Delta {
				if len(body) > 1 {
					body = append(body, ',')
				}
				body = appendEvent(body, st, &recs[i], c, d)
			}
		}
		body = append(body, ']')
	}
	b.SetBytes(int64(len(body)))
}

func BenchmarkExportEncodeSDK(b *testing.B) {
	st, recs := encodeFixture()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		evs := make([]cloudevents.Event, 0, 6*len(recs))
		for i := range recs {
			for c, d := range recs[i].Delta {
				e := cloudevents.NewEvent()
				e.SetID(fmt.Sprintf("%d.%d/%s/%s/%s/%s", st.Seq, st.To, recs[i].Tenant, recs[i].Period, recs[i].Region, className[c]))
				e.SetSource(st.Source)
				e.SetType("headroom.usage")
				e.SetSubject(recs[i].Tenant)
				e.SetTime(time.Unix(0, st.To))
				e.SetData(cloudevents.ApplicationJSON, map[string]any{"class": className[c], "seconds": json.Number(appendMicros(nil, d)),
					"unit_minutes": float64(d) / 60e6, "region": recs[i].Region, "period": recs[i].Period})
				evs = append(evs, e)
			}
		}
		body, err := json.Marshal(evs)
		if err != nil {
			b.Fatal(err)
		}
		n = len(body)
	}
	b.SetBytes(int64(n))
}

func encodeFixture() (*fsm.ExportState, []fsm.ExportRecord) {
	st := &fsm.ExportState{Seq: 7, To: time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC).UnixNano(), Source: "headroom/0123456789ab"}
	recs := make([]fsm.ExportRecord, 1000)
	for i := range recs {
		recs[i] = fsm.ExportRecord{ExportRef: fsm.ExportRef{Tenant: fmt.Sprintf("tenant-%06d", i), Period: "2026-12", Region: "eu-west"}}
		for c := range recs[i].Delta {
			recs[i].Delta[c] = uint64(60_000_000 + i*7 + c)
		}
	}
	return st, recs
}

// BenchmarkHistoryChanged1000 measures what the dashboard's history adds to
// each applied entry: recording 1,000 changed tenants (the onChange hook of
// a 1,000-entry batch) into a history of 10,000, each entry a second later.
func BenchmarkHistoryChanged1000(b *testing.B) {
	f := fsm.NewFSM(nil)
	names := make([]string, 1000)
	f.TestingEdit(func(s *fsm.State) { s.Plans["payg"] = plans.Defaults()[0] })
	for i := range 10_000 {
		t := &fsm.Tenant{Name: fmt.Sprintf("tenant-%05d", i), Plan: "payg", Usage: map[string]*fsm.Usage{}}
		t.Open[0] = uint64(i%50 + 1)
		f.TestingEdit(func(s *fsm.State) { s.Tenants[t.Name] = t })
		if i < len(names) {
			names[i] = t.Name
		}
	}
	hist := newHistory(DefaultHistoryMaxTenants)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		at := t0.Add(time.Duration(i) * time.Second).UnixNano()
		f.TestingEdit(func(s *fsm.State) { s.Time = at })
		hist.changed(f, names)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/entry")
}
