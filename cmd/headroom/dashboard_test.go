package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The web dashboard in a real browser: Debian's chromium, headless, driven
// over the DevTools protocol, against a real `headroom dev` with simulated
// traffic. .ci/run installs chromium; outside CI a machine without it skips.

// chromiumPath finds the browser: $HEADROOM_CHROMIUM, else chromium on the
// PATH. In CI (CI=true) a missing browser fails the test.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("HEADROOM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no chromium on the PATH (apt-get install chromium, or set HEADROOM_CHROMIUM)"
	if os.Getenv("CI") == "true" {
		tb.Fatal(why + ": CI must have it; .ci/run installs it")
	}
	tb.Skip(why + "; skipping the browser test outside CI")
	return ""
}

// dashStack is a `headroom dev` process: aggregator, agent and simulator.
type dashStack struct {
	http, api string
	url       string
	dev       *proc
}

func startDashStack(tb testing.TB) *dashStack {
	tb.Helper()
	d := &dashStack{http: freeAddr(tb), api: freeAddr(tb)}
	d.url = "http://" + d.http
	d.dev = start(tb, "dev", "dev", "--data-dir", filepath.Join(tb.TempDir(), "dev"),
		"--http-addr", d.http, "--wire-addr", freeAddr(tb), "--raft-addr", freeAddr(tb), "--api-addr", d.api,
		"--report", "0", "--log-level", "info")
	waitFor(tb, 60*time.Second, "headroom dev serving the simulated tenants", func() error {
		var ts []tenantFig
		if err := getJSONInto(d.url+"/v1/tenants", &ts); err != nil {
			return err
		}
		var open uint64
		for _, t := range ts {
			open += t.Concurrency.Total
		}
		if len(ts) < len(demoScenarios) || open == 0 {
			return fmt.Errorf("%d tenants, %d sessions open", len(ts), open)
		}
		return nil
	})
	return d
}

func getJSONInto(url string, v any) error {
	code, body, err := call("GET", url, nil)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	return json.Unmarshal(body, v)
}

func (d *dashStack) concurrency(tenant string) (uint64, error) {
	var t tenantFig
	err := getJSONInto(d.url+"/v1/tenants/"+tenant, &t)
	return t.Concurrency.Total, err
}

// probeTenant puts a tenant of the test's own on a plan and opens n
// sessions for it on the agent, so its figure stands still.
func (d *dashStack) probeTenant(tb testing.TB, tenant, plan string, n int) {
	tb.Helper()
	if code, body, err := call("PUT", d.url+"/v1/tenants/"+tenant+"/plan", map[string]string{"plan": plan}); err != nil || code != 200 {
		tb.Fatalf("putting %s on %s: %d %s %v", tenant, plan, code, body, err)
	}
	for i := range n {
		sess := fmt.Sprintf("%s-%d", tenant, i)
		waitFor(tb, 30*time.Second, "agent admits "+sess, func() error {
			code, body, err := call("POST", "http://"+d.api+"/v1/sessions", map[string]string{"tenant": tenant, "class": "audio", "session": sess})
			if err != nil {
				return err
			}
			if code != 201 && code != 200 {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
	}
	waitFor(tb, 30*time.Second, tenant+"'s sessions counted", func() error {
		c, err := d.concurrency(tenant)
		if err == nil && c != uint64(n) {
			err = fmt.Errorf("%d open, want %d", c, n)
		}
		return err
	})
}

// browser is one headless chromium with one tab, and what its console
// said.
type browser struct {
	tb  testing.TB
	ctx context.Context

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
}

func newBrowser(tb testing.TB, execPath string) *browser {
	tb.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(tb.Logf))
	b := &browser{tb: tb, ctx: ctx}
	messages := chromedp.Console(ctx) // starts the browser; subscribes before any page loads
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, m)
			b.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		cancelTab()
		cancelAlloc() // kills chromium and waits for it
		<-done
		if tb.Failed() {
			b.mu.Lock()
			defer b.mu.Unlock()
			for _, m := range b.messages {
				tb.Logf("browser console: %s (%s)", m, m.URL)
			}
		}
	})
	if _, err := chromedp.Run(ctx, chromedp.Title()); err != nil {
		tb.Fatalf("starting %s: %v", execPath, err)
	}
	return b
}

// do runs actions with a deadline.
func (b *browser) do(limit time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.tb.Fatalf("%s: %v", what, err)
	}
}

func evalIn[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// open shows a page of the dashboard (hash routing: no reload) and waits
// until it has drawn its figures.
func (b *browser) open(hash, page string) {
	b.tb.Helper()
	if _, err := evalIn[string](b, "location.hash = "+strconv.Quote(hash)); err != nil {
		b.tb.Fatalf("going to %s: %v", hash, err)
	}
	b.waitPage(page)
}

func (b *browser) waitPage(page string) {
	b.tb.Helper()
	b.do(30*time.Second, "page "+page+" drawn", chromedp.WaitReady(chromedp.CSS(`#view[data-page="`+page+`"][data-ready="true"]`)))
}

// attr reads an attribute of the first element matching a CSS selector,
// "" when there is none.
func (b *browser) attr(sel, name string) (string, error) {
	return evalIn[string](b, fmt.Sprintf(`(() => { const el = document.querySelector(%s); return el ? (el.getAttribute(%s) || '') : ''; })()`,
		strconv.Quote(sel), strconv.Quote(name)))
}

// errors are the console errors and uncaught exceptions so far.
func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.messages {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			out = append(out, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
		}
	}
	return out
}

func (b *browser) screenshot(dir, name string) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.tb.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.tb.Fatal(err)
	}
}

func TestDashboardInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	d := startDashStack(t)
	b := newBrowser(t, chrome)
	shots := t.ArtifactDir()
	t.Logf("screenshots in %s (kept after the run with go test -artifacts -outputdir DIR)", shots)

	// The overview loads, connects to the event stream and shows every
	// tenant, without a console error.
	b.do(30*time.Second, "loading the dashboard", chromedp.Navigate(d.url+"/"))
	b.waitPage("overview")
	b.do(30*time.Second, "event stream connected", chromedp.WaitReady(chromedp.CSS(`#live-status[data-state="live"]`)))
	waitFor(t, 30*time.Second, "overview counts the simulated tenants", func() error {
		n, err := b.attr("#ov-tenants", "data-value")
		if err == nil && n != strconv.Itoa(len(demoScenarios)) {
			err = fmt.Errorf("overview shows %q tenants, want %d", n, len(demoScenarios))
		}
		return err
	})
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("the overview logged errors:\n%s", strings.Join(errs, "\n"))
	}
	b.screenshot(shots, "overview.png")
	b.do(10*time.Second, "phone-sized viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.screenshot(shots, "overview-phone.png")
	b.do(10*time.Second, "laptop-sized viewport", chromedp.EmulateViewport(1280, 900))

	// A busy simulated tenant: the figure on its page is one the API gave
	// within the last update (events come at most once a second; the
	// agents flush every 100 ms).
	b.open("#/tenant/voiceroom", "tenant")
	type reading struct {
		at time.Time
		v  uint64
	}
	var api []reading
	waitFor(t, 30*time.Second, "voiceroom's concurrency on the page equals the API's within one update", func() error {
		v, err := d.concurrency("voiceroom")
		if err != nil {
			return err
		}
		api = append(api, reading{time.Now(), v})
		shown, err := b.attr("#tenant-concurrency", "data-value")
		if err != nil {
			return err
		}
		recent := []uint64{}
		for _, r := range api {
			if time.Since(r.at) <= 2500*time.Millisecond {
				recent = append(recent, r.v)
			}
		}
		if n, err := strconv.ParseUint(shown, 10, 64); err != nil || !slices.Contains(recent, n) {
			return fmt.Errorf("page shows %q, API said %v in the last 2.5 s", shown, recent)
		}
		return nil
	})
	waitFor(t, 30*time.Second, "the hour chart has points", func() error {
		n, err := b.attr("#tp-chart-hour", "data-points")
		if err == nil && (n == "" || n == "0") {
			err = errors.New("no point yet")
		}
		return err
	})
	// The hour chart starts from the server's history, not empty: its first
	// point is the first minute the server has of voiceroom.
	waitFor(t, 30*time.Second, "the hour chart filled from the server's history", func() error {
		var hist struct {
			Points []struct {
				At string `json:"at"`
			} `json:"points"`
		}
		if err := getJSONInto(d.url+"/v1/tenants/voiceroom/history?since=1h", &hist); err != nil {
			return err
		}
		if len(hist.Points) == 0 {
			return errors.New("the server has no history of voiceroom")
		}
		at, err := time.Parse(time.RFC3339, hist.Points[0].At)
		if err != nil {
			return err
		}
		n, err := b.attr("#tp-chart-hour", "data-history-points")
		if err != nil {
			return err
		}
		first, err := b.attr("#tp-chart-hour", "data-first")
		if err == nil && (n == "" || n == "0" || first != strconv.FormatInt(at.UnixMilli(), 10)) {
			err = fmt.Errorf("chart: %q points from history, first at %q; the server's first minute %s (%d)", n, first, hist.Points[0].At, at.UnixMilli())
		}
		return err
	})
	b.do(30*time.Second, "the daily chart, the invoice and the advice", chromedp.WaitReady(chromedp.CSS("#tp-chart-days")),
		chromedp.WaitReady(chromedp.CSS("#tp-cost-total")), chromedp.WaitReady(chromedp.CSS("#tp-advice-move")))
	b.screenshot(shots, "tenant.png")

	// A tenant of the test's own, whose figure stands still: exactly the
	// API's. Then a plan change made with the CLI shows on its page.
	d.probeTenant(t, "dash-probe", "payg", 3)
	b.open("#/tenant/dash-probe", "tenant")
	waitFor(t, 30*time.Second, "dash-probe shows its 3 sessions", func() error {
		shown, err := b.attr("#tenant-concurrency", "data-value")
		if err == nil && shown != "3" {
			err = fmt.Errorf("page shows %q", shown)
		}
		return err
	})
	if out, err := runCLI("tenant", "set-plan", "--addr", d.http, "dash-probe", "scale"); err != nil {
		t.Fatalf("headroom tenant set-plan: %v: %s", err, out)
	}
	waitFor(t, 30*time.Second, "the plan change shows on the tenant page", func() error {
		plan, err := b.attr("#tenant-plan", "data-value")
		if err != nil {
			return err
		}
		hist, err := b.attr(`#tp-history-table tr[data-after="scale"]`, "data-kind")
		if err != nil {
			return err
		}
		if plan != "scale" || hist == "" {
			return fmt.Errorf("plan %q, history entry for scale %q", plan, hist)
		}
		return nil
	})
	b.screenshot(shots, "tenant-after-plan-change.png")

	// Moved down at once to a strict plan of ceiling 1 with its 3 sessions
	// open: the page says the pool is over, why, and that nothing is
	// admitted until closes bring it under.
	if out, err := runCLI("plan", "create", "--addr", d.http, "--fee", "1", "--ceiling", "1", "--mode", "strict", "dash-tiny"); err != nil {
		t.Fatalf("headroom plan create: %v: %s", err, out)
	}
	if out, err := runCLI("tenant", "set-plan", "--addr", d.http, "--at", "now", "dash-probe", "dash-tiny"); err != nil {
		t.Fatalf("headroom tenant set-plan: %v: %s", err, out)
	}
	waitFor(t, 30*time.Second, "the tenant page shows the pool over its ceiling", func() error {
		text, err := evalIn[string](b, `document.getElementById('tenant-over').hidden ? '' : document.getElementById('tenant-over').textContent`)
		if err == nil && !strings.Contains(text, "over by 2 (lowered)") {
			err = fmt.Errorf("the over note reads %q", text)
		}
		return err
	})
	b.screenshot(shots, "tenant-over-ceiling.png")

	// A tenant whose sessions carry users: its funnel shows 2 monthly and
	// 2 daily active users for its 3 sessions (one user has two).
	if code, body, err := call("PUT", d.url+"/v1/tenants/dash-users/plan", map[string]string{"plan": "payg"}); err != nil || code != 200 {
		t.Fatalf("putting dash-users on payg: %d %s %v", code, body, err)
	}
	for i, user := range []string{"ann", "ann", "ben"} {
		sess := fmt.Sprintf("dash-users-%d", i)
		waitFor(t, 30*time.Second, "agent admits "+sess, func() error {
			code, body, err := call("POST", "http://"+d.api+"/v1/sessions", map[string]string{"tenant": "dash-users", "class": "audio", "session": sess, "user": user})
			if err == nil && code != 201 && code != 200 {
				err = fmt.Errorf("%d %s", code, body)
			}
			return err
		})
	}
	b.open("#/tenant/dash-users", "tenant")
	waitFor(t, 30*time.Second, "the funnel shows 2 active users", func() error {
		mau, err := b.attr("#tenant-mau", "data-value")
		if err != nil {
			return err
		}
		dau, err := b.attr("#tenant-peak-dau", "data-value")
		if err == nil && (mau != "2" || dau != "2") {
			err = fmt.Errorf("MAU %q, peak DAU %q", mau, dau)
		}
		return err
	})
	b.screenshot(shots, "tenant-funnel.png")

	// The tenant list: every tenant, the busiest first.
	b.open("#/tenants?sort=concurrency", "tenants")
	waitFor(t, 30*time.Second, "the tenant list shows every tenant", func() error {
		n, err := b.attr("#tl-table", "data-rows")
		if err == nil && n != strconv.Itoa(len(demoScenarios)+2) { // and dash-probe, dash-users
			err = fmt.Errorf("%q rows", n)
		}
		return err
	})
	b.screenshot(shots, "tenants.png")

	// Paged by the server: two a page, by name; then searched.
	b.open("#/tenants?sort=tenant&limit=2", "tenants")
	firstRow := func(page, want string) func() error {
		return func() error {
			p, err := b.attr("#tl-page", "data-page")
			if err != nil {
				return err
			}
			first, err := b.attr("#tl-table tbody tr", "data-tenant")
			if err == nil && (p != page || first != want) {
				err = fmt.Errorf("page %q starts with %q, want page %s starting with %q", p, first, page, want)
			}
			return err
		}
	}
	waitFor(t, 30*time.Second, "first page of two", firstRow("1", "dash-probe"))
	b.do(10*time.Second, "next page", chromedp.Click(chromedp.ID("tl-next")))
	waitFor(t, 30*time.Second, "second page of two", firstRow("2", "livehost"))
	b.do(10*time.Second, "searching", chromedp.SendKeys(chromedp.ID("tl-search"), "voice"))
	waitFor(t, 30*time.Second, "search for voice", func() error {
		n, err := b.attr("#tl-table", "data-rows")
		if err != nil {
			return err
		}
		first, err := b.attr("#tl-table tbody tr", "data-tenant")
		if err == nil && (n != "1" || first != "voiceroom") {
			err = fmt.Errorf("%q rows, first %q", n, first)
		}
		return err
	})

	// The cluster: this server as leader, the dev agent reporting.
	b.open("#/cluster", "cluster")
	for _, sel := range []string{`#cl-servers tr[data-role="leader"][data-status="alive"]`, `#cl-agents tr[data-expired="false"]`} {
		b.do(30*time.Second, "cluster page shows "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
	}
	b.screenshot(shots, "cluster.png")

	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("the dashboard logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// BenchmarkDashboardPlanChange measures a plan change (PUT
// /v1/tenants/{id}/plan, at=now, as the CLI sends it) until the tenant page
// open in the browser shows the new plan: the page learns of it from the
// event stream and reads the tenant again. The page's own clock stamps the
// moment the figure changed, so polling adds nothing. Goal: p99 ≤ 2 s.
func BenchmarkDashboardPlanChange(b *testing.B) {
	chrome := chromiumPath(b)
	d := startDashStack(b)
	d.probeTenant(b, "dash-bench", "payg", 2)
	br := newBrowser(b, chrome)
	br.do(30*time.Second, "loading the tenant page", chromedp.Navigate(d.url+"/#/tenant/dash-bench"))
	br.waitPage("tenant")
	br.do(30*time.Second, "event stream connected", chromedp.WaitReady(chromedp.CSS(`#live-status[data-state="live"]`)))
	if _, err := evalIn[bool](br, `(() => {
		const el = document.getElementById('tenant-plan');
		window.benchShown = {plan: el.dataset.value, at: Date.now()};
		new MutationObserver(() => { window.benchShown = {plan: el.dataset.value, at: Date.now()}; })
			.observe(el, {attributes: true, attributeFilter: ['data-value']});
		return true;
	})()`); err != nil {
		b.Fatal(err)
	}
	type shown struct {
		Plan string `json:"plan"`
		At   int64  `json:"at"`
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		want := []string{"scale", "payg"}[i%2]
		t0 := time.Now()
		if code, body, err := call("PUT", d.url+"/v1/tenants/dash-bench/plan", map[string]string{"plan": want, "at": "now"}); err != nil || code != 200 {
			b.Fatalf("PUT plan %s: %d %s %v", want, code, body, err)
		}
		var s shown
		err := poll(30*time.Second, 5*time.Millisecond, func() error {
			var err error
			s, err = evalIn[shown](br, `window.benchShown`)
			if err == nil && s.Plan != want {
				err = fmt.Errorf("page shows %q", s.Plan)
			}
			return err
		})
		if err != nil {
			b.Fatalf("round %d: %s never shown: %v", i, want, err)
		}
		lat = append(lat, time.UnixMilli(s.At).Sub(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Milliseconds()) }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
}
