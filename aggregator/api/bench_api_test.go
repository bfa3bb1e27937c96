package api

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// benchState returns a state machine holding n tenants spread over the
// default plans, with 0 to 1,200 open sessions each over the classes (some
// over their ceiling, many tied), as an FSM built directly.
func benchState(n int) *fsm.FSM {
	f := fsm.NewFSM(plans.Defaults())
	rng := rand.New(rand.NewPCG(7, 7))
	names := []string{"payg", "starter", "growth", "scale"}
	for i := range n {
		t := &fsm.Tenant{Name: fmt.Sprintf("tenant-%06d", i), Plan: names[i%len(names)], Usage: map[string]*fsm.Usage{}}
		for c := range fsm.NumClasses {
			if rng.IntN(3) == 0 {
				t.Open[c] = uint64(rng.IntN(200))
			}
		}
		u := &fsm.Usage{}
		for c := range fsm.NumClasses {
			u.Micros[c] = uint64(rng.IntN(1e9))
			u.Refused[c] = uint64(rng.IntN(10))
		}
		t.Usage["2026-11"] = u
		f.TestingEdit(func(s *fsm.State) { s.Tenants[t.Name] = t })
	}
	return f
}

// percentiles reports p50 and p99 of ds as benchmark metrics.
func percentiles(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(ds[len(ds)/2]), "p50-ms")
	b.ReportMetric(ms(ds[len(ds)*99/100]), "p99-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), "max-ms")
}

// BenchmarkTenantList100k measures GET /v1/tenants?sort=utilization&limit=50
// (the handler, JSON encoding included) over 100,000 tenants: the first
// page, and a page deep in the list by its cursor; idle, and while the
// state machine applies a 1,000-entry agent batch every 10 ms (the read
// lock shares the state with Apply). Goal: p99 ≤ 20 ms.
func BenchmarkTenantList100k(b *testing.B) {
	for _, load := range []string{"idle", "applying"} {
		for _, page := range []string{"first", "deep"} {
			b.Run(load+"/"+page, func(b *testing.B) {
				f := benchState(100_000)
				s := &Server{fsm: f}
				query := "/v1/tenants?sort=utilization&limit=50"
				if page == "deep" {
					var p tenantPage
					f.Read(func(st fsm.View) {
						f.ScanTenants(st, func(rows []fsm.TenantRow) {
							p = listTenants(st, rows, tenantQuery{order: orderUtilization, limit: 50_000})
						})
					})
					query += "&cursor=" + p.next
				}
				if load == "applying" {
					stop := applyLoad(b, f)
					defer stop()
				}
				// The first read after a start builds the index: not timed.
				s.handleTenants(httptest.NewRecorder(), httptest.NewRequest("GET", query, nil))
				ds := make([]time.Duration, 0, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					start := time.Now()
					rec := httptest.NewRecorder()
					s.handleTenants(rec, httptest.NewRequest("GET", query, nil))
					ds = append(ds, time.Since(start))
					if rec.Code != 200 || rec.Header().Get("X-Next-Cursor") == "" {
						b.Fatalf("%d %s", rec.Code, rec.Body)
					}
				}
				b.StopTimer()
				percentiles(b, ds)
			})
		}
	}
}

// applyLoad applies a 1,000-entry batch of agent a1 every 10 ms until
// stopped.
func applyLoad(b *testing.B, f *fsm.FSM) (stop func()) {
	idx := uint64(1)
	data, _ := fsm.EncodeCmd(fsm.CmdAgentItems, fsm.ItemsCmd(t0.UnixNano(), "", &wire.FullState{AgentID: "a1", Epoch: 1}))
	f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
	entries := make([]wire.DeltaEntry, 1000)
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			for i := range entries {
				entries[i] = wire.DeltaEntry{Tenant: fmt.Sprintf("tenant-%06d", (int(seq)*1000+i)%100_000), Class: "audio", Opened: 1, Peak: 1}
			}
			cmd := fsm.AgentItemsCmd{Time: t0.UnixNano() + int64(seq)*1e7, Items: []fsm.AgentItem{{Kind: fsm.ItemDelta,
				Body: wire.Append(nil, &wire.DeltaBatch{AgentID: "a1", Epoch: 1, Seq: seq, Entries: entries})}}}
			data, _ := fsm.EncodeCmd(fsm.CmdAgentItems, &cmd)
			idx++
			f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
		}
	}()
	return func() { close(quit); <-done }
}

// BenchmarkMetricsScrape10k measures one /metrics scrape of the state's
// figures (Raft, Go and process collectors left out) with 10,000 tenants:
// with the default cap (1,000 tenants labelled, the rest under _other) and
// with every tenant labelled.
func BenchmarkMetricsScrape10k(b *testing.B) {
	for _, limit := range []int{DefaultMetricsMaxTenants, 10_000} {
		b.Run(fmt.Sprintf("labelled-%d", limit), func(b *testing.B) {
			f := benchState(10_000)
			reg := prometheus.NewRegistry()
			reg.MustRegister(&stateCollector{s: &Server{fsm: f}, maxTenants: limit})
			h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
			var size int
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
				size = rec.Body.Len()
			}
			b.StopTimer()
			b.ReportMetric(float64(size), "bytes/scrape")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/scrape")
			// And compressed, as Prometheus asks for it.
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/metrics", nil)
			req.Header.Set("Accept-Encoding", "gzip")
			h.ServeHTTP(rec, req)
			n, _ := io.Copy(io.Discard, rec.Body)
			b.ReportMetric(float64(n), "gzip-bytes/scrape")
		})
	}
}
