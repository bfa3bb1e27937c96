package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The media server tests run the real media servers of this machine
// (Debian's nginx with libnginx-mod-rtmp, ffmpeg as the clients); .ci/run
// installs them. Without them a test is skipped, except in CI (CI=true),
// where it fails.

// needTools skips (or, in CI, fails) the test when a program is missing.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (apt-get install nginx libnginx-mod-rtmp ffmpeg); in CI this fails", tool)
			}
			t.Skipf("%s is not installed (apt-get install nginx libnginx-mod-rtmp ffmpeg); skipped outside CI", tool)
		}
	}
}

const rtmpModule = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

// nginx is an nginx-rtmp instance under a temporary prefix, running
// deploy/nginx-rtmp/nginx.conf with the test's ports.
type nginx struct {
	t          testing.TB
	p          *proc
	rtmp, stat string // host:port
	orphans    []int  // workers of incarnations killed
}

// startNginx runs nginx-rtmp calling the agent at agentAPI, sending
// on_update every updateEvery, with its stat page on stat.
func startNginx(t testing.TB, agentAPI, updateEvery, stat string) *nginx {
	t.Helper()
	needTools(t, "nginx")
	if _, err := os.Stat(rtmpModule); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing (apt-get install libnginx-mod-rtmp); in CI this fails", rtmpModule)
		}
		t.Skipf("%s missing (apt-get install libnginx-mod-rtmp); skipped outside CI", rtmpModule)
	}
	conf, err := os.ReadFile("../../deploy/nginx-rtmp/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	n := &nginx{t: t, rtmp: freeAddr(t), stat: stat}
	text := string(conf)
	for _, r := range [][2]string{
		{"127.0.0.1:9380", agentAPI}, {"listen 127.0.0.1:1935", "listen " + n.rtmp},
		{"listen 127.0.0.1:8080", "listen " + n.stat}, {"notify_update_timeout 10s", "notify_update_timeout " + updateEvery},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("deploy/nginx-rtmp/nginx.conf lacks %q", r[0])
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	dir := t.TempDir()
	for _, d := range []string{"logs", "tmp"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	// Temp paths inside the prefix, so no system directory is needed.
	text = strings.Replace(text, "http {", "http {\n    client_body_temp_path tmp/cb; proxy_temp_path tmp/p; fastcgi_temp_path tmp/f; uwsgi_temp_path tmp/u; scgi_temp_path tmp/s;", 1)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// As root, user root keeps the worker able to write its prefix; the
	// error log goes to the prefix too (printed when the test fails).
	global := fmt.Sprintf("daemon off; pid %s/nginx.pid; error_log %s/logs/error.log info;", dir, dir)
	if os.Geteuid() == 0 {
		global += " user root;"
	}
	n.p = startArgv(t, "nginx", []string{"nginx", "-p", dir + "/", "-c", path, "-g", global}, nil)
	t.Cleanup(n.killWorkers)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
			t.Logf("--- nginx error.log (tail) ---\n%s", tail(string(b), 4000))
		}
	})
	n.waitUp()
	return n
}

func (n *nginx) waitUp() {
	waitFor(n.t, 20*time.Second, "nginx-rtmp's stat page", func() error {
		code, _, err := call("GET", "http://"+n.stat+"/stat", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("HTTP %d", code)
		}
		return err
	})
}

// workers are the master's children (nginx's worker processes).
func (n *nginx) workers() []int {
	cmd, _ := n.p.current()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	return childPIDs(cmd.Process.Pid)
}

// killWorkers kills what the master left: a worker outlives a master
// killed with -9 and keeps its listening sockets.
func (n *nginx) killWorkers() {
	for _, pid := range n.workers() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range n.orphans {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// crash kills the master and its workers with SIGKILL.
func (n *nginx) crash() {
	ws := n.workers()
	n.p.kill()
	for _, pid := range ws {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	waitFor(n.t, 10*time.Second, "nginx's workers gone", func() error {
		for _, pid := range ws {
			if syscall.Kill(pid, 0) == nil {
				if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(st), ") Z ") {
					return fmt.Errorf("worker %d alive", pid)
				}
			}
		}
		return nil
	})
	n.orphans = append(n.orphans, ws...)
}

// childPIDs lists the processes whose parent is pid (from /proc).
func childPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, p)
			}
		}
	}
	return out
}

// ffmpeg is one RTMP client; its own account of how long it streamed is
// the out_time of its -progress reports (every 250 ms, and a last one when
// it ends by itself).
type ffmpeg struct {
	p        *proc
	progress string
}

func startFFmpeg(t testing.TB, name string, args ...string) *ffmpeg {
	t.Helper()
	f := &ffmpeg{progress: filepath.Join(t.TempDir(), name+".progress")}
	argv := append([]string{"ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-progress", f.progress, "-stats_period", "0.25"}, args...)
	f.p = startArgv(t, name, argv, nil)
	return f
}

// publish streams a test pattern of size WxH at rate fps to url.
func publish(t testing.TB, name, size string, fps int, url string) *ffmpeg {
	return startFFmpeg(t, name, "-re", "-f", "lavfi", "-i", fmt.Sprintf("testsrc=size=%s:rate=%d", size, fps),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", strconv.Itoa(fps), "-f", "flv", url)
}

// play plays url for at most limit.
func play(t testing.TB, name, url string, limit time.Duration) *ffmpeg {
	return startFFmpeg(t, name, "-i", url, "-t", strconv.Itoa(int(limit.Seconds())), "-f", "null", "-")
}

// streamed is the out_time of the client's last progress report.
func (f *ffmpeg) streamed() time.Duration {
	b, _ := os.ReadFile(f.progress)
	var last time.Duration
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "out_time_us="); ok {
			if us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && us > 0 {
				last = time.Duration(us) * time.Microsecond
			}
		}
	}
	return last
}

// waitStreamed waits until the client has streamed at least d.
func (f *ffmpeg) waitStreamed(t *testing.T, d time.Duration) {
	t.Helper()
	waitFor(t, 30*time.Second+3*d, f.p.name+" streaming for "+d.String(), func() error {
		if !f.p.running() {
			return fmt.Errorf("%s exited: %v", f.p.name, f.p.exitErr())
		}
		if s := f.streamed(); s < d {
			return fmt.Errorf("streamed %v", s)
		}
		return nil
	})
}

// refused waits for a client that nginx must drop, and checks that it
// failed.
func (f *ffmpeg) refused(t *testing.T, what string) {
	t.Helper()
	if err := f.p.waitExit(30 * time.Second); err != nil {
		t.Fatalf("%s was not dropped by nginx: %v", what, err)
	}
	if f.p.exitErr() == nil {
		t.Fatalf("%s: ffmpeg exited 0, want an error", what)
	}
	if s := f.streamed(); s > 0 {
		t.Fatalf("%s streamed %v before it was dropped", what, s)
	}
}

func (s *stack) tenant(tn string) tenantFig {
	s.t.Helper()
	_, body, err := call("GET", "http://"+s.http+"/v1/tenants/"+tn, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	var f tenantFig
	json.Unmarshal(body, &f)
	return f
}

func (s *stack) waitOpen(tn string, n uint64, why string) {
	s.t.Helper()
	waitFor(s.t, 30*time.Second, why, func() error {
		if f := s.tenant(tn); f.Concurrency.Total != n {
			return fmt.Errorf("%s has %d open, want %d", tn, f.Concurrency.Total, n)
		}
		return nil
	})
}

// TestNginxRTMP: the agent as nginx-rtmp's hook server, against the real
// nginx and ffmpeg. acme is on a strict plan of ceiling 2: two publishers
// get in, the third and a player are dropped by nginx, a stream without a
// tenant too (nothing of it stored); a publisher killed with -9 ends its
// session (on_done); nginx killed with -9 and restarted ends the sessions
// it held (the stat reconcile, at their last sign of life); at the end the
// seconds metered per class equal the clients' own streamed time within a
// second each, and nothing is open.
func TestNginxRTMP(t *testing.T) {
	needTools(t, "nginx", "ffmpeg")
	tl := newTimeline(t)
	defer tl.summary()
	s := newStack(t)
	s.startAggregator()
	ngxStat := freeAddr(t) // chosen before nginx, since the agent reads it
	s.startAgent("--nginx-rtmp", "--nginx-rtmp-stat", "http://"+ngxStat+"/stat", "--nginx-rtmp-stat-interval", "500ms")
	if code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "duo", "fee_monthly_micros": 1_000_000, "ceiling": 2, "mode": "strict"}); err != nil || code != 201 {
		t.Fatalf("plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/acme/plan", map[string]string{"plan": "duo", "at": "now"}); err != nil || code/100 != 2 {
		t.Fatalf("set plan: %d %s %v", code, body, err)
	}
	ngx := startNginx(t, s.api, "1s", ngxStat)
	tl.mark("aggregator, agent and nginx up (rtmp %s, stat %s)", ngx.rtmp, ngx.stat)
	url := func(stream, query string) string { return "rtmp://" + ngx.rtmp + "/live/" + stream + query }

	// Two publishers: 160x120 (the default class, video-hd) and 1280x800
	// (1,024,000 px), which says so in its URL.
	pub1 := publish(t, "pub1", "160x120", 10, url("cam1", "?tenant=acme"))
	pub2 := publish(t, "pub2", "1280x800", 5, url("cam2", "?tenant=acme&class=video-fhd"))
	s.waitOpen("acme", 2, "two publishers admitted")
	tl.mark("two publishers admitted")
	publish(t, "pub3", "160x120", 10, url("cam3", "?tenant=acme")).refused(t, "a third publisher over a ceiling of 2")
	play(t, "play1", url("cam1", "?tenant=acme"), 20*time.Second).refused(t, "a player over a ceiling of 2")
	publish(t, "orphan", "160x120", 10, url("orphan", "")).refused(t, "a publisher without a tenant")
	tl.mark("third publisher, a player and a tenant-less publisher dropped by nginx")
	if code, body, _ := call("GET", "http://"+s.http+"/v1/tenants", nil); code != 200 || strings.Count(string(body), `"tenant":`) != 1 {
		t.Fatalf("the refused hooks stored a tenant: %s", body)
	}
	var st struct {
		Connectors map[string]struct {
			Refused  map[string]uint64 `json:"refused"`
			Admitted uint64            `json:"admitted"`
		} `json:"connectors"`
	}
	_, body, _ := call("GET", "http://"+s.api+"/v1/status", nil)
	json.Unmarshal(body, &st)
	if c := st.Connectors["nginx-rtmp"]; c.Admitted != 2 || c.Refused["unmapped-tenant"] != 1 || c.Refused["ceiling"]+c.Refused["grant-timeout"] != 2 {
		t.Fatalf("agent status: %s", body)
	}

	pub2.waitStreamed(t, 3*time.Second)
	pub2.p.kill()
	s.waitOpen("acme", 1, "a publisher killed with -9 closed (on_done)")
	tl.mark("pub2 killed -9 after streaming %v: closed", pub2.streamed())

	// pub4 claims audio but sends 160x120 video: the stat reconcile
	// classes it by what it sends.
	pub4 := publish(t, "pub4", "160x120", 10, url("cam4", "?tenant=acme&class=audio"))
	s.waitOpen("acme", 2, "a publisher admitted after a close")
	waitFor(t, 20*time.Second, "cam4 classed video-hd by the stat page", func() error {
		if f := s.tenant("acme"); f.Concurrency.ByClass["video-hd"] != 2 {
			return fmt.Errorf("by class %v", f.Concurrency.ByClass)
		}
		return nil
	})
	tl.mark("pub4 (audio in its URL) classed video-hd by its resolution")
	pub4.waitStreamed(t, 2*time.Second)

	ngx.crash()
	tl.mark("nginx killed -9 (master and worker)")
	for _, p := range []*ffmpeg{pub1, pub4} {
		if err := p.p.waitExit(30 * time.Second); err != nil {
			t.Fatalf("%s outlived nginx: %v", p.p.name, err)
		}
	}
	ngx.p.restart()
	ngx.waitUp()
	s.waitOpen("acme", 0, "the sessions of the killed nginx closed")
	tl.mark("nginx restarted; its earlier sessions closed")

	pub5 := publish(t, "pub5", "160x120", 10, url("cam5", "?tenant=acme"))
	s.waitOpen("acme", 1, "a publisher after nginx's restart")
	play5 := play(t, "play5", url("cam5", "?tenant=acme"), 60*time.Second)
	s.waitOpen("acme", 2, "its player admitted")
	play5.waitStreamed(t, 2*time.Second)
	play5.p.kill()
	pub5.p.kill()
	s.waitOpen("acme", 0, "all clients gone")
	tl.mark("pub5 and its player killed -9: nothing open")

	// Seconds per class, once the agent has shipped everything.
	waitFor(t, 20*time.Second, "agent's batches acknowledged", func() error {
		var st struct {
			Unacked int `json:"unacked_batches"`
		}
		_, body, _ := call("GET", "http://"+s.api+"/v1/status", nil)
		json.Unmarshal(body, &st)
		if st.Unacked != 0 {
			return fmt.Errorf("%d unacked", st.Unacked)
		}
		return nil
	})
	// Each client's streamed time belongs to the class of its resolution;
	// pub4's first moments (until the next stat read, 500 ms) went to the
	// audio its URL claimed. Allowed: 1 s per client that had the class.
	truth := map[string][]*ffmpeg{"video-hd": {pub1, pub4, pub5, play5}, "video-fhd": {pub2}, "audio": nil}
	had := map[string]int{"video-hd": 4, "video-fhd": 1, "audio": 1}
	f := s.tenant("acme")
	for class, clients := range truth {
		var lived time.Duration
		for _, c := range clients {
			lived += c.streamed()
		}
		got := f.Usage.SecondsByClass[class]
		tl.mark("%s: %.2f s metered, the clients streamed %.2f s", class, got, lived.Seconds())
		if d := math.Abs(got - lived.Seconds()); d > float64(had[class]) {
			t.Errorf("%s: metered %.2f s, the clients streamed %.2f s (off by %.2f s; allowed 1 s per client)", class, got, lived.Seconds(), d)
		}
	}
	for class, v := range f.Usage.SecondsByClass {
		if _, ok := truth[class]; !ok && v != 0 {
			t.Errorf("%s metered %.2f s, no client of it", class, v)
		}
	}
}
