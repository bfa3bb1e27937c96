package nginxrtmp

import (
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// BenchmarkOnPublish: on_publish → reply in process (the connector's
// handler, the agent's admission, no network), with 1,000 other sessions
// open; each admitted client then leaves (on_done) so that 1,000 stay open.
// Reports the reply's p50 and p99, and the same for on_done. The baseline,
// in the same run, is the agent's Go API: Open and Close of a session.
func BenchmarkOnPublish(b *testing.B) {
	b.Run("hook", benchHook)
	b.Run("go-api-baseline", benchGoAPI)
}

func report(b *testing.B, ds []time.Duration, what string) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2])/1e3, what+"-p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100])/1e3, what+"-p99-µs")
}

func benchGoAPI(b *testing.B) {
	r := newRig(b, Config{}, wire.TenantInfo{Tenant: "acme", Plan: "payg", Mode: "meter"})
	for i := range 1000 {
		r.a.Open("acme", "video-hd", "other-"+strconv.Itoa(i), 0)
	}
	open := make([]time.Duration, 0, b.N)
	cl := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := "s-" + strconv.Itoa(i)
		t0 := time.Now()
		if res, err := r.a.Open("acme", "video-hd", id, DefaultTTL); err != nil || !res.Admitted {
			b.Fatal(res, err)
		}
		t1 := time.Now()
		r.a.Close(id)
		open, cl = append(open, t1.Sub(t0)), append(cl, time.Since(t1))
	}
	b.StopTimer()
	report(b, open, "open")
	report(b, cl, "close")
}

func benchHook(b *testing.B) {
	r := newRig(b, Config{}, wire.TenantInfo{Tenant: "acme", Plan: "payg", Mode: "meter"})
	body := func(call string, id int) string {
		return url.Values{"call": {call}, "app": {"live"}, "name": {"cam" + strconv.Itoa(id)}, "clientid": {strconv.Itoa(id)},
			"addr": {"127.0.0.1"}, "tenant": {"acme"}, "type": {"live"}}.Encode()
	}
	serve := func(call string, id int) time.Duration {
		req := httptest.NewRequest("POST", "/hooks/nginx-rtmp", strings.NewReader(body(call, id)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		t0 := time.Now()
		r.c.ServeHTTP(w, req)
		d := time.Since(t0)
		if w.Code != 200 {
			b.Fatalf("%s: %d %s", call, w.Code, w.Body)
		}
		return d
	}
	for i := range 1000 {
		serve(CallPublish, 1_000_000+i)
	}
	pub := make([]time.Duration, 0, b.N)
	done := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		pub = append(pub, serve(CallPublish, i+1))
		done = append(done, serve(CallDone, i+1))
	}
	b.StopTimer()
	if n := r.open(); n != 1000 {
		b.Fatalf("%d open, want 1000", n)
	}
	report(b, pub, "publish")
	report(b, done, "done")
}
