package loadgen

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// limiter is a Target that admits up to ceiling open sessions and remembers
// the most it ever held and any session closed that it did not hold.
type limiter struct {
	mu      sync.Mutex
	ceiling int
	open    map[string]bool
	most    int
	bad     []string
}

func (l *limiter) Admit(_ context.Context, s string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[s] {
		l.bad = append(l.bad, "reused "+s)
	}
	if len(l.open) >= l.ceiling {
		return false, nil
	}
	l.open[s] = true
	l.most = max(l.most, len(l.open))
	return true, nil
}

func (l *limiter) Close(_ context.Context, s string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open[s] {
		l.bad = append(l.bad, "closed unknown "+s)
	}
	delete(l.open, s)
	return nil
}

func TestRunCountsAndLeavesNothingOpen(t *testing.T) {
	l := &limiter{ceiling: 5, open: map[string]bool{}}
	var progress atomic.Int64
	res, err := Run(context.Background(), l, Options{Workers: 16, Ops: 2000, Hold: 10 * time.Microsecond,
		Progress: func(Progress) { progress.Add(1) }, ProgressEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops < 2000 {
		t.Errorf("ops %d, want at least 2000", res.Ops)
	}
	if res.MaxOpen > 5 || res.MaxOpen < 1 {
		t.Errorf("client counted %d open at most, ceiling 5", res.MaxOpen)
	}
	if res.MaxOpen > int64(l.most) {
		t.Errorf("client counted %d open, the target never held more than %d", res.MaxOpen, l.most)
	}
	if len(l.open) != 0 || len(l.bad) != 0 {
		t.Errorf("left open %d, misuse %v", len(l.open), l.bad)
	}
	if got := res.Latency.Count(); got != uint64(res.Ops+res.Refused) {
		t.Errorf("latency records %d, want ops+refused %d", got, res.Ops+res.Refused)
	}
}

func TestRunHoldsSessionsPerWorker(t *testing.T) {
	l := &limiter{ceiling: 1000, open: map[string]bool{}}
	res, err := Run(context.Background(), l, Options{Workers: 2, Ops: 500, Sessions: 4})
	if err != nil {
		t.Fatal(err)
	}
	// One worker alone holds 4 before it closes its oldest.
	if res.MaxOpen < 4 || res.MaxOpen > 8 {
		t.Errorf("most open %d, want 4 to 8 (2 workers holding 4 each)", res.MaxOpen)
	}
	if len(l.open) != 0 || len(l.bad) != 0 {
		t.Errorf("left open %d, misuse %v", len(l.open), l.bad)
	}
	l = &limiter{ceiling: 5, open: map[string]bool{}}
	res, err = Run(context.Background(), l, Options{Workers: 16, Ops: 2000, Sessions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.MaxOpen > 5 {
		t.Errorf("ceiling 5: client counted %d open at most", res.MaxOpen)
	}
	if len(l.open) != 0 || len(l.bad) != 0 {
		t.Errorf("left open %d, misuse %v", len(l.open), l.bad)
	}
}

type failing struct{ limiter }

func (f *failing) Admit(context.Context, string) (bool, error) { return false, errors.New("down") }

func TestRunStopsOnErrors(t *testing.T) {
	res, err := Run(context.Background(), &failing{}, Options{Workers: 4, Duration: time.Hour, MaxErrors: 3})
	if !errors.Is(err, ErrTooManyErrors) || !strings.Contains(err.Error(), "down") {
		t.Fatalf("err %v, want ErrTooManyErrors naming the first error", err)
	}
	if res.Errors < 3 || res.Ops != 0 {
		t.Errorf("errors %d ops %d", res.Errors, res.Ops)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{{}, {Workers: 1}, {Workers: 0, Ops: 1}, {Workers: 1, Ops: 1, Hold: -1}} {
		if _, err := Run(context.Background(), &limiter{}, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 100_000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}, {1, 100 * time.Millisecond}} {
		got := h.Quantile(c.q)
		if got > c.want || float64(got) < float64(c.want)*(1-1.0/64) {
			t.Errorf("q %v: %v, want within 1/64 below %v", c.q, got, c.want)
		}
	}
	for v := uint64(0); v < 1<<20; v += 7 {
		if lo := lowOf(bucketOf(v)); lo > v || bucketOf(lo) != bucketOf(v) {
			t.Fatalf("value %d: bucket %d starts at %d", v, bucketOf(v), lo)
		}
	}
	o := NewHistogram()
	o.Record(time.Hour)
	h.Merge(o)
	if h.Max() != time.Hour || h.Count() != 100_001 {
		t.Errorf("merge: max %v count %d", h.Max(), h.Count())
	}
}

func TestAgentHTTP(t *testing.T) {
	var mu sync.Mutex
	open := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/sessions":
			var b strings.Builder
			buf := make([]byte, 512)
			n, _ := r.Body.Read(buf)
			b.Write(buf[:n])
			body := b.String()
			switch {
			case strings.Contains(body, `"session":"refuse`):
				w.WriteHeader(429)
			case strings.Contains(body, `"session":"broken`):
				http.Error(w, `{"error":"bad"}`, 400)
			default:
				open[body] = true
				w.WriteHeader(201)
			}
		case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/v1/sessions/"):
			if strings.HasSuffix(r.URL.Path, "/gone") {
				w.WriteHeader(404)
				return
			}
			w.WriteHeader(200)
		default:
			w.WriteHeader(405)
		}
	}))
	defer srv.Close()
	sent := func(body string) bool { mu.Lock(); defer mu.Unlock(); return open[body] }
	testAgentHTTP(t, srv, func() (Target, error) { return NewAgentHTTP(srv.URL, "t1", "audio", 2, 5*time.Second) }, sent)
	testAgentHTTP(t, srv, func() (Target, error) { return NewAgentNetHTTP(srv.URL, "t1", "audio", 2, 5*time.Second) }, sent)
}

func testAgentHTTP(t *testing.T, srv *httptest.Server, mk func() (Target, error), sent func(string) bool) {
	a, err := mk()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := a.Admit(ctx, "s1"); !ok || err != nil {
		t.Errorf("admit s1: %v %v", ok, err)
	}
	if !sent(`{"tenant":"t1","class":"audio","session":"s1"}`) {
		t.Errorf("body not sent")
	}
	if _, raw := a.(*AgentHTTP); raw {
		// The server drops its idle connections: the next call dials
		// again. (net/http's Transport does not retry a POST.)
		srv.CloseClientConnections()
		if ok, err := a.Admit(ctx, "s2"); !ok || err != nil {
			t.Errorf("admit after the server closed the connection: %v %v", ok, err)
		}
	}
	if ok, err := a.Admit(ctx, "refuse-1"); ok || err != nil {
		t.Errorf("refused: %v %v", ok, err)
	}
	if _, err := a.Admit(ctx, "broken-1"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("400: %v", err)
	}
	if err := a.Close(ctx, "s1"); err != nil {
		t.Error(err)
	}
	if err := a.Close(ctx, "gone"); err == nil {
		t.Error("close of an unknown session: no error")
	}
	for _, bad := range []string{"", "ftp://x:1", "http://host", "http://h:1/path", "h:1 x"} {
		if _, err := NewAgentHTTP(bad, "t", "audio", 1, time.Second); err == nil {
			t.Errorf("address %q accepted", bad)
		}
	}
	if _, err := NewAgentHTTP("h:1", `t"`, "audio", 1, time.Second); err == nil {
		t.Error("tenant with a quote accepted")
	}
}
