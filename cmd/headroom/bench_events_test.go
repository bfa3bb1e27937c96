package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkEventClients200 measures an aggregator process's CPU and memory
// at steady state without and then with 200 clients on GET /v1/events,
// while an agent process receives about 1,000 session opens and closes a
// second over 1,000 tenants (so each concurrency event carries several
// hundred tenants). The figures come from the aggregator's own /metrics
// (process_cpu_seconds_total, process_resident_memory_bytes,
// go_memstats_heap_inuse_bytes) over a 20 s window per phase; the load
// and the clients run in this process, on the same machine.
func BenchmarkEventClients200(b *testing.B) {
	const (
		tenants = 1000
		clients = 200
		window  = 20 * time.Second
		settle  = 5 * time.Second
	)
	dir := b.TempDir()
	httpAddr, apiAddr := freeAddr(b), freeAddr(b)
	wireAddr := freeAddr(b)
	start(b, "agg", "aggregator", "--data-dir", filepath.Join(dir, "agg"), "--http-addr", httpAddr, "--wire-addr", wireAddr,
		"--raft-addr", freeAddr(b), "--bootstrap", "--default-plan", "payg", "--log-level", "warn")
	start(b, "agent", "agent", "--data-dir", filepath.Join(dir, "agent"), "--server", wireAddr, "--api-addr", apiAddr, "--log-level", "warn")
	agg, api := "http://"+httpAddr, "http://"+apiAddr
	waitFor(b, 60*time.Second, "the aggregator", func() error {
		code, body, err := call("GET", agg+"/healthz", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
	for i := range tenants { // put every tenant on a plan, so agents admit them
		if code, body, err := call("PUT", fmt.Sprintf("%s/v1/tenants/t%04d/plan", agg, i), map[string]string{"plan": "payg"}); err != nil || code != 200 {
			b.Fatalf("set plan: %d %s %v", code, body, err)
		}
	}
	waitFor(b, 60*time.Second, "the agent to know the tenants", func() error {
		code, body, err := call("POST", api+"/v1/sessions", map[string]string{"tenant": fmt.Sprintf("t%04d", tenants-1), "class": "audio", "session": "probe"})
		if err == nil && code != 201 && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})

	// The load: every 10 ms, five opens and five closes on random tenants.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var loadWG sync.WaitGroup
	var sent atomic.Uint64
	for w := range 4 {
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var open []string
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for range 5 {
					id := fmt.Sprintf("w%d-%d", w, n)
					n++
					tenant := fmt.Sprintf("t%04d", rng.IntN(tenants))
					classes := []string{"audio", "video-hd", "video-fhd", "ai"}
					if code, _, err := call("POST", api+"/v1/sessions", map[string]string{"tenant": tenant, "class": classes[rng.IntN(len(classes))], "session": id}); err == nil && code == 201 {
						open = append(open, id)
					}
					if len(open) > 500 {
						i := rng.IntN(len(open))
						call("DELETE", api+"/v1/sessions/"+open[i], nil)
						open[i] = open[len(open)-1]
						open = open[:len(open)-1]
					}
					sent.Add(1)
				}
			}
		}()
	}
	defer loadWG.Wait()
	defer cancel()

	type sample struct {
		at                   time.Time
		cpu, rss, heap, gor  float64
		eventsPub, dropped   float64
		clients, streamsOpen float64
	}
	read := func() sample {
		_, body, err := call("GET", agg+"/metrics", nil)
		if err != nil {
			b.Fatal(err)
		}
		m := map[string]float64{}
		for _, line := range strings.Split(string(body), "\n") {
			if line == "" || line[0] == '#' {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			m[line[:i]] = v
		}
		return sample{at: time.Now(), cpu: m["process_cpu_seconds_total"], rss: m["process_resident_memory_bytes"],
			heap: m["go_memstats_heap_inuse_bytes"], gor: m["go_goroutines"],
			eventsPub: m[`headroom_events_published_total{event="concurrency"}`], dropped: m["headroom_events_dropped_clients_total"],
			clients: m["headroom_events_clients"]}
	}
	measure := func(name string) (cpuPct, rssMB, heapMB float64) {
		s0 := read()
		time.Sleep(window) // a measurement window, not a wait for a condition
		s1 := read()
		cpuPct = 100 * (s1.cpu - s0.cpu) / s1.at.Sub(s0.at).Seconds()
		rssMB, heapMB = s1.rss/(1<<20), s1.heap/(1<<20)
		b.Logf("%s: CPU %.1f%% of a core, RSS %.1f MiB, heap in use %.1f MiB, %v goroutines, %v clients, %.0f concurrency events in the window",
			name, cpuPct, rssMB, heapMB, s1.gor, s1.clients, s1.eventsPub-s0.eventsPub)
		return
	}

	time.Sleep(settle)
	cpu0, rss0, heap0 := measure("no event clients")

	var events, bytes atomic.Uint64
	var cwg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	for range clients {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", agg+"/v1/events", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReaderSize(resp.Body, 64<<10)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					return
				}
				bytes.Add(uint64(len(line)))
				if strings.HasPrefix(string(line), "event: concurrency") {
					events.Add(1)
				}
			}
		}()
	}
	defer cwg.Wait()
	waitFor(b, 30*time.Second, "the clients to connect", func() error {
		if s := read(); s.clients != clients {
			return fmt.Errorf("%v clients", s.clients)
		}
		return nil
	})
	time.Sleep(settle)
	e0, by0, ops0, t0 := events.Load(), bytes.Load(), sent.Load(), time.Now()
	cpu1, rss1, heap1 := measure(fmt.Sprintf("%d event clients", clients))
	secs := time.Since(t0).Seconds()
	ops := float64(sent.Load()-ops0) / secs
	perClient := float64(events.Load()-e0) / secs / clients
	kbps := float64(bytes.Load()-by0) / secs / clients / 1024
	if s := read(); s.dropped != 0 || s.clients != clients {
		b.Errorf("%v clients dropped, %v connected", s.dropped, s.clients)
	}
	b.ReportMetric(cpu0, "cpu%-0clients")
	b.ReportMetric(cpu1, "cpu%-200clients")
	b.ReportMetric(rss0, "rssMiB-0clients")
	b.ReportMetric(rss1, "rssMiB-200clients")
	b.ReportMetric(heap0, "heapMiB-0clients")
	b.ReportMetric(heap1, "heapMiB-200clients")
	b.ReportMetric(perClient, "events/s/client")
	b.ReportMetric(kbps, "KiB/s/client")
	b.ReportMetric(ops, "load-ops/s")
	cancel()
}
