package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAgentMemory1M runs an agent process beside an aggregator, opens
// 1,000,000 sessions through its HTTP API (16 keep-alive clients, 100
// tenants on a metered plan), and reports the agent's resident memory 10 s
// after the last open and after its next restart (which restores them from
// disk), and the opens per second: as started by default (--gc-percent
// 25), with the Go runtime's default GOGC=100, and with GOGC=100 and a soft
// memory limit (GOMEMLIMIT, read by the runtime itself):
//
//	go test -run '^$' -bench AgentMemory1M -benchtime 1x -timeout 30m ./cmd/headroom/
func BenchmarkAgentMemory1M(b *testing.B) {
	for _, env := range []string{"", "GOGC=100", "GOMEMLIMIT=250MiB"} {
		name := "default"
		if env != "" {
			name = env
		}
		b.Run(name, func(b *testing.B) { benchAgentMemory(b, env) })
	}
}

func benchAgentMemory(b *testing.B, env string) {
	const sessions, workers, tenants = 1_000_000, 16, 100
	s := newStack(b)
	s.startAggregator()
	if code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "metered", "fee_monthly_micros": 0, "mode": "meter"}); err != nil || code != 201 {
		b.Fatalf("plan: %d %s %v", code, body, err)
	}
	for i := range tenants {
		if code, body, err := call("PUT", fmt.Sprintf("http://%s/v1/tenants/m%02d/plan", s.http, i), map[string]string{"plan": "metered"}); err != nil || code != 200 {
			b.Fatalf("set plan: %d %s %v", code, body, err)
		}
	}
	api := freeAddr(b)
	var environ []string
	if env != "" {
		environ = []string{env}
	}
	ag := startArgv(b, "agent", []string{binPath, "agent", "--data-dir", filepath.Join(s.dir, "agent"), "--api-addr", api, "--server", s.wire, "--log-level", "warn"}, environ)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 30 * time.Second}
	open := func(i int) error {
		body := fmt.Sprintf(`{"tenant":"m%02d","class":"audio","session":"mem-%07d"}`, i%tenants, i)
		resp, err := client.Post("http://"+api+"/v1/sessions", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			return fmt.Errorf("open %d: %d", i, resp.StatusCode)
		}
		return nil
	}
	waitFor(b, 60*time.Second, "the agent admitting every tenant", func() error {
		for i := range tenants {
			if err := open(sessions + i); err != nil {
				return err
			}
		}
		return nil
	})
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	t0 := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= sessions || failed.Load() != nil {
					return
				}
				if err := open(i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	time.Sleep(10 * time.Second) // let the flusher persist and compact, the runtime settle
	rss := procRSS(b, ag)
	ag.signal(syscall.SIGTERM)
	if err := ag.waitExit(120 * time.Second); err != nil {
		b.Fatal(err)
	}
	ag.restart()
	waitFor(b, 120*time.Second, "the restarted agent answering", func() error {
		_, _, err := call("GET", "http://"+api+"/v1/status", nil)
		return err
	})
	time.Sleep(10 * time.Second)
	b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	b.ReportMetric(float64(procRSS(b, ag))/(1<<20), "rss-restarted-MB")
	b.ReportMetric(float64(sessions)/took.Seconds(), "opens/s")
}

// procRSS is the resident memory of p's process (VmRSS).
func procRSS(t testing.TB, p *proc) int64 {
	cmd, _ := p.current()
	pid := cmd.Process.Pid
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(string(rest)), " kB"), &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestAgentGCPercentRefused: --gc-percent below 1 is refused before the
// agent starts.
func TestAgentGCPercentRefused(t *testing.T) {
	out, err := runCLI("agent", "--server", "127.0.0.1:1", "--data-dir", t.TempDir(), "--gc-percent", "0")
	if err == nil || !strings.Contains(out, "--gc-percent 0: want 1 or more") {
		t.Fatalf("--gc-percent 0: %v\n%s", err, out)
	}
}
