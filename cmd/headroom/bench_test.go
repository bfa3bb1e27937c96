package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/aggregator"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

func pickAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// BenchmarkSessionVisible measures, end to end at the default 100 ms flush
// interval, the time from a session admitted by the agent's HTTP API to the
// aggregator's GET /v1/tenants/{id} showing it (polled every millisecond).
// Aggregator and agent run in this process but talk over loopback TCP.
// Goal: p99 ≤ 250 ms.
func BenchmarkSessionVisible(b *testing.B) {
	dir := b.TempDir()
	srv, err := aggregator.New(aggregator.Config{
		DataDir: filepath.Join(dir, "agg"), HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0", RaftAddr: pickAddr(b), Bootstrap: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	if err := waitReady(context.Background(), srv.Ready, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runAgent(ctx, agent.Config{DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.WireAddr()}}, "127.0.0.1:0", nullLogger(), ready)
	}()
	defer func() { cancel(); <-done }()
	api := "http://" + <-ready
	agg := "http://" + srv.HTTPAddr()
	if code, body, err := call("PUT", agg+"/v1/tenants/bench/plan", map[string]string{"plan": "scale"}); err != nil || code != 200 {
		b.Fatalf("set plan: %d %s %v", code, body, err)
	}
	total := func() uint64 {
		_, body, err := call("GET", agg+"/v1/tenants/bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		var t fsm.TenantJSON
		json.Unmarshal(body, &t)
		return t.Concurrency.Total
	}
	open := func(id string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body, err := call("POST", api+"/v1/sessions", map[string]string{"tenant": "bench", "class": "audio", "session": id})
			if err == nil && code == http.StatusCreated {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("open: %d %s %v", code, body, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	open("warm-up")
	for total() != 1 {
		time.Sleep(time.Millisecond)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Sessions arrive at a random phase of the flush interval, as real
		// ones do; right after a visible one would always wait a full one.
		time.Sleep(time.Duration(rand.Int64N(int64(agent.DefaultFlushInterval))))
		t0 := time.Now()
		open(fmt.Sprintf("s-%d", i))
		for total() != uint64(i+2) {
			if time.Since(t0) > 30*time.Second {
				b.Fatal("session never became visible")
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
}
