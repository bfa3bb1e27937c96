package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// hookTimer sits between nginx-rtmp and the agent and times each hook as
// nginx sees it: from the request's first byte to the reply's first byte
// (nginx opens one connection per hook), by call. It adds one loopback hop.
type hookTimer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	times  map[string][]time.Duration
}

func newHookTimer(t testing.TB, target string) *hookTimer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hookTimer{ln: ln, target: target, times: map[string][]time.Duration{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go h.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return h
}

func (h *hookTimer) addr() string { return h.ln.Addr().String() }

func (h *hookTimer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		return
	}
	t0 := time.Now()
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	vs, _ := url.ParseQuery(string(body))
	up, err := net.Dial("tcp", h.target)
	if err != nil {
		return
	}
	defer up.Close()
	req.Body = io.NopCloser(bytes.NewReader(body))
	if err := req.Write(up); err != nil {
		return
	}
	ur := bufio.NewReader(up)
	if _, err := ur.Peek(1); err != nil {
		return
	}
	d := time.Since(t0)
	io.Copy(c, ur)
	h.mu.Lock()
	h.times[vs.Get("call")] = append(h.times[vs.Get("call")], d)
	h.mu.Unlock()
}

func (h *hookTimer) of(call string) []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.times[call])
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*p/100)]
}

// BenchmarkNginxRTMP, with the real nginx-rtmp and ffmpeg, 1,000 sessions
// open on the agent: on_publish → reply as nginx sees it (p50, p99);
// ffmpeg's publish start → visible on the aggregator; ffmpeg's publish start
// → nginx drops it at a refusal (the process exits). Baseline in the same
// run: the agent's POST /v1/sessions over loopback HTTP with the same 1,000
// open. Run with -benchtime 1x: each run does 20 admitted and 10 refused
// publishes.
func BenchmarkNginxRTMP(b *testing.B) {
	needTools(b, "nginx", "ffmpeg")
	for range b.N {
		benchNginxOnce(b)
	}
}

func benchNginxOnce(b *testing.B) {
	s := newStack(b)
	s.startAggregator()
	s.startAgent("--nginx-rtmp", "--log-level", "info")
	for _, p := range []map[string]any{
		{"name": "open-bar", "fee_monthly_micros": 0, "ceiling": 0, "mode": "meter"},
		{"name": "one", "fee_monthly_micros": 1_000_000, "ceiling": 1, "mode": "soft"},
	} {
		if code, body, err := call("POST", "http://"+s.http+"/v1/plans", p); err != nil || code != 201 {
			b.Fatalf("plan: %d %s %v", code, body, err)
		}
	}
	for tn, plan := range map[string]string{"acme": "open-bar", "full": "one"} {
		if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/"+tn+"/plan", map[string]string{"plan": plan, "at": "now"}); err != nil || code/100 != 2 {
			b.Fatalf("set plan: %d %s %v", code, body, err)
		}
	}
	// 1,000 sessions open (and full's one), timing the API's opens.
	var api []time.Duration
	waitFor(b, 20*time.Second, "the agent knows the plans", func() error {
		code, body, err := call("POST", "http://"+s.api+"/v1/sessions", map[string]string{"tenant": "full", "class": "audio", "session": "full-1"})
		if err == nil && code != 201 && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
	for i := range 1000 {
		t0 := time.Now()
		code, body, err := call("POST", "http://"+s.api+"/v1/sessions", map[string]string{"tenant": "acme", "class": "audio", "session": "bg-" + strconv.Itoa(i)})
		api = append(api, time.Since(t0))
		if err != nil || code != 201 {
			b.Fatalf("background session: %d %s %v", code, body, err)
		}
	}
	s.waitOpen("acme", 1000, "1,000 sessions open")
	timer := newHookTimer(b, s.api)
	ngx := startNginx(b, timer.addr(), "10s", freeAddr(b))
	url := func(stream, tenant string) string {
		return "rtmp://" + ngx.rtmp + "/live/" + stream + "?tenant=" + tenant
	}

	var visible, refused []time.Duration
	for i := range 20 {
		t0 := time.Now()
		p := publish(b, fmt.Sprintf("pub%d", i), "160x120", 10, url(fmt.Sprintf("cam%d", i), "acme"))
		if err := poll(30*time.Second, 5*time.Millisecond, func() error {
			if f := s.tenant("acme"); f.Concurrency.Total != 1001 {
				return fmt.Errorf("%d open", f.Concurrency.Total)
			}
			return nil
		}); err != nil {
			b.Fatalf("publisher %d not visible: %v", i, err)
		}
		visible = append(visible, time.Since(t0))
		p.p.kill()
		s.waitOpen("acme", 1000, "the publisher's close")
	}
	for i := range 10 {
		t0 := time.Now()
		p := publish(b, fmt.Sprintf("refused%d", i), "160x120", 10, url(fmt.Sprintf("x%d", i), "full"))
		if err := p.p.waitExit(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		refused = append(refused, time.Since(t0))
	}
	pubs := timer.of("publish")
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(pct(pubs, 50)), "on_publish-p50-ms")
	b.ReportMetric(ms(pct(pubs, 99)), "on_publish-p99-ms")
	b.ReportMetric(ms(pct(api, 50)), "baseline-POST-sessions-p50-ms")
	b.ReportMetric(ms(pct(api, 99)), "baseline-POST-sessions-p99-ms")
	b.ReportMetric(ms(pct(visible, 50)), "publish-to-visible-p50-ms")
	b.ReportMetric(ms(pct(visible, 99)), "publish-to-visible-max-ms")
	b.ReportMetric(ms(pct(refused, 50)), "publish-to-rejected-p50-ms")
	b.ReportMetric(ms(pct(refused, 99)), "publish-to-rejected-max-ms")
	b.Logf("%d on_publish timed (%d admitted, %d refused expected); on_done %d", len(pubs), 20, 10, len(timer.of("done")))
}
