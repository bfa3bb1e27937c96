package agent

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
)

// BenchmarkOpenClose measures an in-process admission (open) and close pair
// on an agent whose tenant state admits, with 10,000 other sessions open:
// a soft plan (the pushed global figure decides), a strict one whose
// leased share suffices (the "strict admission" figure of BENCHMARKS.md),
// and the same strict one with a user on each session (1,024 users).
func BenchmarkOpenClose(b *testing.B) {
	for _, mode := range []string{"soft", "strict", "strict+user"} {
		b.Run(mode, func(b *testing.B) {
			withUser := mode == "strict+user"
			if withUser {
				mode = "strict"
			}
			a, err := New(Config{DataDir: b.TempDir(), Servers: []string{"127.0.0.1:1"}})
			if err != nil {
				b.Fatal(err)
			}
			info := soft("t1", 1_000_000, 0)
			if mode == "strict" {
				info = strict("t1", 1_000_000, 0)
			}
			pushTenants(b, a, true, info, meter("t2"))
			if mode == "strict" {
				grantLocally(b, a, "t1", "", 1_000_000, time.Hour)
			}
			for i := 0; i < 10_000; i++ {
				a.Open("t2", "audio", "bg"+itoa(i), 0)
			}
			ids := make([]string, 1024)
			users := make([]string, 1024)
			for i := range ids {
				ids[i] = "session-" + itoa(i)
				if withUser {
					users[i] = "user-" + itoa(i*7919%1024) // 1,024 users, in another order
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				id := ids[i&1023]
				res, err := a.OpenWith(OpenOptions{Tenant: "t1", Class: "video-hd", Session: id, User: users[i&1023]})
				if err != nil || !res.Admitted {
					b.Fatal(res, err)
				}
				if _, err := a.Close(id); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
		})
	}
}

// BenchmarkCut measures a cut (entries, peaks and the encoded batch) of a
// pending accumulator with 1,000 tenant/class entries.
func BenchmarkCut(b *testing.B) {
	a, err := New(Config{DataDir: b.TempDir(), Servers: []string{"127.0.0.1:1"}, MaxBatchEntries: 1000})
	if err != nil {
		b.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := int64(0)
	for i := 0; i < 1000; i++ {
		te := a.tab.tenant("tenant-"+itoa(i/4), true)
		a.tab.open(te, "s"+itoa(i), plans.Class(1+i%4), 0, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += int64(100 * time.Millisecond)
		if !a.cutLocked(now) {
			b.Fatal("nothing cut")
		}
		if n := len(a.unacked[len(a.unacked)-1].msg.Entries); n != 1000 {
			b.Fatalf("%d entries", n)
		}
		clear(a.unacked)
		a.unacked = a.unacked[:0]
	}
}

// BenchmarkAdmitLatency measures the latency of admissions of a strict
// tenant whose leased share suffices, with N clients at once each doing
// admit + close: in process (the Go API) and over the local HTTP API
// (keep-alive clients on loopback). It reports the admit latency's p50
// and p99 and the pairs per second.
func BenchmarkAdmitLatency(b *testing.B) {
	for _, via := range []string{"inproc", "http", "apiserver"} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/N=%d", via, n), func(b *testing.B) {
				a, err := New(Config{DataDir: b.TempDir(), Servers: []string{"127.0.0.1:1"}})
				if err != nil {
					b.Fatal(err)
				}
				pushTenants(b, a, true, strict("t1", 1_000_000, 0))
				grantLocally(b, a, "t1", "", 1_000_000, time.Hour)
				open, closeS := func(id string) error {
					res, err := a.Open("t1", "audio", id, 0)
					if err == nil && !res.Admitted {
						err = fmt.Errorf("refused: %+v", res)
					}
					return err
				}, func(id string) error { _, err := a.Close(id); return err }
				if via != "inproc" {
					srv := httptest.NewUnstartedServer(a.Handler())
					if via == "apiserver" {
						api := NewAPIServer(srv.Config)
						go api.Serve(srv.Listener)
						defer api.Close()
						srv.URL = "http://" + srv.Listener.Addr().String()
					} else {
						srv.Start()
						defer srv.Close()
					}
					c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
					do := func(method, url, body string, want int) error {
						req, _ := http.NewRequest(method, url, strings.NewReader(body))
						resp, err := c.Do(req)
						if err != nil {
							return err
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != want {
							return fmt.Errorf("%s %s: %d", method, url, resp.StatusCode)
						}
						return nil
					}
					open = func(id string) error {
						return do("POST", srv.URL+"/v1/sessions", `{"tenant":"t1","class":"audio","session":"`+id+`"}`, 201)
					}
					closeS = func(id string) error { return do("DELETE", srv.URL+"/v1/sessions/"+id, "", 200) }
				}
				lat := make([][]time.Duration, n)
				var wg sync.WaitGroup
				var failed atomic.Value
				b.ResetTimer()
				start := time.Now()
				for w := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ds := make([]time.Duration, 0, b.N/n+1)
						for i := w; i < b.N; i += n {
							id := "s-" + itoa(w) + "-" + itoa(i&1023)
							t0 := time.Now()
							if err := open(id); err != nil {
								failed.Store(err)
								return
							}
							ds = append(ds, time.Since(t0))
							if err := closeS(id); err != nil {
								failed.Store(err)
								return
							}
						}
						lat[w] = ds
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if err, _ := failed.Load().(error); err != nil {
					b.Fatal(err)
				}
				var all []time.Duration
				for _, ds := range lat {
					all = append(all, ds...)
				}
				slices.Sort(all)
				if len(all) > 0 {
					b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
					b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pairs/s")
			})
		}
	}
}

// BenchmarkPersist200k measures the agent's persist (what each flush tick
// writes before it sends) with 200,000 sessions open over 2,000 tenants,
// every persist after a flush interval's churn: 500 sessions opened and
// 500 closed, the pending usage cut into a batch (acknowledged before the
// next). It reports the persist's p50, p99 and max, and the bytes it wrote.
func BenchmarkPersist200k(b *testing.B) {
	const open, churn = 200_000, 500
	a, err := New(Config{DataDir: b.TempDir(), Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	a.mu.Lock()
	now := a.now()
	for i := 0; i < open; i++ {
		te := a.tab.tenant("tenant-"+itoa(i%2000), true)
		a.tab.open(te, "s-"+itoa(i), plans.Class(1+i%6), 0, now)
	}
	a.mu.Unlock()
	if err := a.persist(); err != nil { // the first persist writes everything
		b.Fatal(err)
	}
	dirBytes := func() (n int64) {
		ents, _ := os.ReadDir(a.cfg.DataDir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	next := open
	var took []time.Duration
	var written int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		a.mu.Lock()
		now := a.now()
		for j := 0; j < churn; j++ {
			te := a.tab.tenant("tenant-"+itoa(next%2000), true)
			a.tab.open(te, "s-"+itoa(next), plans.Class(1+next%6), 0, now)
			a.tab.close(a.tab.sessions["s-"+itoa(next-open)], now)
			next++
		}
		a.cutLocked(now)
		a.dropAckedLocked(a.nextSeq - 1)
		a.mu.Unlock()
		before := dirBytes()
		b.StartTimer()
		t0 := time.Now()
		if err := a.persist(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
		b.StopTimer()
		written += max(dirBytes()-before, 0)
		b.StartTimer()
	}
	slices.Sort(took)
	q := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(float64(written)/float64(b.N), "bytes/persist")
}

// BenchmarkMemory1M opens 1,000,000 sessions (over 10,000 tenants, no TTL)
// on an agent, persists (which compacts the journal), and reports the
// process's resident memory, once the runtime returned what the burst of
// opening them took, and the Go heap in use (one op: the whole).
func BenchmarkMemory1M(b *testing.B) {
	for i := 0; i < b.N; i++ {
		a, err := New(Config{DataDir: b.TempDir(), Servers: []string{"127.0.0.1:1"}})
		if err != nil {
			b.Fatal(err)
		}
		a.mu.Lock()
		now := a.now()
		for i := 0; i < 1_000_000; i++ {
			te := a.tab.tenant("tenant-"+itoa(i%10_000), true)
			a.tab.open(te, "session-"+itoa(i), plans.Class(1+i%6), 0, now)
		}
		a.mu.Unlock()
		if err := a.persist(); err != nil {
			b.Fatal(err)
		}
		a.waitCompaction()
		if err := a.persist(); err != nil { // commits the base
			b.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(rssBytes(b))/(1<<20), "rss-MB")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
		runtime.KeepAlive(a)
	}
}

// rssBytes is the process's resident set (VmRSS of /proc/self/status).
func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
