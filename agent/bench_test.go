package agent

import (
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
)

// BenchmarkOpenClose measures an in-process admission (open) and close pair
// on an agent whose tenant state admits, with 10,000 other sessions open:
// a soft plan (the pushed global figure decides), and a strict one whose
// leased share suffices (the "strict admission" figure of BENCHMARKS.md).
func BenchmarkOpenClose(b *testing.B) {
	for _, mode := range []string{"soft", "strict"} {
		b.Run(mode, func(b *testing.B) {
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
			for i := range ids {
				ids[i] = "session-" + itoa(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				id := ids[i&1023]
				res, err := a.Open("t1", "video-hd", id, 0)
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
