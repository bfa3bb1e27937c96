package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The process tests (e2e_test.go, cluster_test.go) build the binary once and
// run aggregators and agents as separate processes on loopback ports picked
// at run time, or inside network namespaces the test made (netns_test.go).
// This file holds what they share: building, starting, killing and
// restarting processes, polling with deadlines, HTTP calls, and the truth a
// test keeps of which sessions are open.

var binPath string

func TestMain(m *testing.M) {
	// The test binary doubles as the forwarder it runs inside a network
	// namespace (see netns_test.go); in that role it never runs tests.
	if runNSForwarder() {
		return
	}
	dir, err := os.MkdirTemp("", "headroom-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "headroom")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building headroom: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		// The kernel may hand a port it just released out again: never
		// give the same one twice in this run (two servers picked the
		// same port once, and one of them could not start).
		handedMu.Lock()
		dup := handed[addr]
		handed[addr] = true
		handedMu.Unlock()
		if !dup {
			return addr
		}
	}
	t.Fatal("no free port found that was not handed out already")
	return ""
}

var (
	handedMu sync.Mutex
	handed   = map[string]bool{}
)

// proc is one process of a test, started (and restarted) with the same
// command line; every incarnation's output is appended to one log file,
// whose tail is printed when the test fails.
type proc struct {
	t    testing.TB
	name string
	argv []string // program and arguments
	env  []string // added to the test's environment
	log  string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current incarnation has exited
	starts   int
	lastExit error
}

// start runs the headroom binary with args.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startArgv(t, name, append([]string{binPath}, args...), nil)
}

// startArgv runs argv (program first) with env added to the environment.
func startArgv(t testing.TB, name string, argv, env []string) *proc {
	t.Helper()
	p := newProc(t, name, argv, env)
	if err := p.spawn(); err != nil {
		t.Fatal(err)
	}
	return p
}

// newProc prepares a process without starting it; it is killed, and its log
// printed on failure, when the test ends.
func newProc(t testing.TB, name string, argv, env []string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, argv: argv, env: env, log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log (tail) ---\n%s", name, tail(quiet(p.logText()), 8000))
			// HEADROOM_KEEP_LOGS=DIR keeps the whole logs of a failed test.
			if dir := os.Getenv("HEADROOM_KEEP_LOGS"); dir != "" {
				dst := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"), name+".log")
				if os.MkdirAll(filepath.Dir(dst), 0o755) == nil {
					if b, err := os.ReadFile(p.log); err == nil && os.WriteFile(dst, b, 0o644) == nil {
						t.Logf("--- %s log kept in %s", name, dst)
					}
				}
			}
		}
	})
	return p
}

// noise are log lines that repeat many times a second while a peer is down
// and would push everything else out of the tail printed on failure.
var noise = []string{"failed to heartbeat to", "failed to contact", "no raft stats from server", "will not remove server node"}

// quiet leaves the noise out of a log, saying how much it left out.
func quiet(log string) string {
	var b strings.Builder
	dropped := 0
	for _, line := range strings.SplitAfter(log, "\n") {
		if slices.ContainsFunc(noise, func(n string) bool { return strings.Contains(line, n) }) {
			dropped++
			continue
		}
		if dropped > 0 {
			fmt.Fprintf(&b, "        (%d lines of peer-down noise left out)\n", dropped)
			dropped = 0
		}
		b.WriteString(line)
	}
	if dropped > 0 {
		fmt.Fprintf(&b, "        (%d lines of peer-down noise left out)\n", dropped)
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < 200 {
			s = s[i+1:]
		}
	}
	return s
}

// spawn starts a new incarnation with the same command line; the previous
// one must have exited.
func (p *proc) spawn() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: still running", p.name)
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "=== %s start #%d at %s: %s\n", p.name, p.starts, time.Now().Format("15:04:05.000"), strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "=== %s exited at %s: %v\n", p.name, time.Now().Format("15:04:05.000"), err)
		f.Close()
		p.mu.Lock()
		p.lastExit = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// restart starts the process again with the same command line.
func (p *proc) restart() {
	p.t.Helper()
	if err := p.spawn(); err != nil {
		p.t.Error(err)
	}
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// kill sends SIGKILL and waits for the process to be gone; a no-op when it
// is not running.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	if _, done := p.current(); done != nil {
		<-done
	}
}

func (p *proc) signal(sig os.Signal) {
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	default:
		cmd.Process.Signal(sig)
	}
}

// signalNamed sends a signal by name (STOP, CONT) with kill(1), which every Unix
// has: package syscall names SIGSTOP and SIGCONT on Unix only.
func (p *proc) signalNamed(sig string) error {
	cmd, done := p.current()
	if cmd == nil {
		return fmt.Errorf("%s never started", p.name)
	}
	select {
	case <-done:
		return fmt.Errorf("%s is not running", p.name)
	default:
	}
	if out, err := exec.Command("kill", "-"+sig, fmt.Sprint(cmd.Process.Pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("kill -%s %s: %v: %s", sig, p.name, err, out)
	}
	return nil
}

// running reports whether the current incarnation is alive.
func (p *proc) running() bool {
	_, done := p.current()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// waitExit waits up to limit for the current incarnation to exit.
func (p *proc) waitExit(limit time.Duration) error {
	_, done := p.current()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("%s still running after %s", p.name, limit)
	}
}

// startCount is how many times the process was started.
func (p *proc) startCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// exitErr is how the last incarnation ended (nil: exit status 0).
func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastExit
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() error) {
	t.Helper()
	if err := poll(limit, 50*time.Millisecond, cond); err != nil {
		t.Fatalf("%s: not within %s: %v", what, limit, err)
	}
}

// poll calls cond every interval until it returns nil (poll returns nil) or
// limit has passed (poll returns cond's last error).
func poll(limit, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

var httpc = &http.Client{Timeout: 10 * time.Second}

func call(method, url string, body any) (int, []byte, error) {
	code, data, _, err := callWith(httpc, method, url, body)
	return code, data, err
}

// callWith makes one HTTP call with client c; body is a string sent as is
// or a value sent as JSON.
func callWith(c *http.Client, method, url string, body any) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			j, _ := json.Marshal(b)
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header, err
}

type tenantFig struct {
	Tenant      string `json:"tenant"`
	Plan        string `json:"plan"`
	Concurrency struct {
		Total   uint64            `json:"total"`
		ByClass map[string]uint64 `json:"by_class"`
	} `json:"concurrency"`
	Usage *struct {
		SecondsByClass map[string]float64 `json:"seconds_by_class"`
		PCU            uint64             `json:"pcu"`
	} `json:"usage"`
}

// seconds is the tenant's usage, all classes together.
func (f *tenantFig) seconds() float64 {
	var s float64
	if f.Usage != nil {
		for _, v := range f.Usage.SecondsByClass {
			s += v
		}
	}
	return s
}

// truth is what is really open: session id → tenant/class.
type truth map[string][2]string

func (tr truth) counts() map[string]uint64 {
	m := map[string]uint64{}
	for _, tc := range tr {
		m[tc[0]]++
	}
	return m
}

// byClass counts what is open per tenant and class.
func (tr truth) byClass() map[string]map[string]uint64 {
	m := map[string]map[string]uint64{}
	for _, tc := range tr {
		if m[tc[0]] == nil {
			m[tc[0]] = map[string]uint64{}
		}
		m[tc[0]][tc[1]]++
	}
	return m
}

func (tr truth) clone() truth {
	c := make(truth, len(tr))
	for k, v := range tr {
		c[k] = v
	}
	return c
}

func noBackwards(t testing.TB, before, after map[string]float64, when string) {
	t.Helper()
	for tn, b := range before {
		if after[tn] < b-1e-6 { // sums of floats over classes: allow rounding
			t.Fatalf("%s: usage of %s went backwards: %.3f s then %.3f s", when, tn, b, after[tn])
		}
	}
}

// timeline records what a test did, for its log: every mark is printed at
// once with the time since the test began.
type timeline struct {
	t     testing.TB
	begin time.Time
	mu    sync.Mutex
	lines []string
}

func newTimeline(t testing.TB) *timeline { return &timeline{t: t, begin: time.Now()} }

func (tl *timeline) mark(format string, args ...any) {
	line := fmt.Sprintf("[%7.3fs] ", time.Since(tl.begin).Seconds()) + fmt.Sprintf(format, args...)
	tl.mu.Lock()
	tl.lines = append(tl.lines, line)
	tl.mu.Unlock()
	tl.t.Log(line)
}

// since is the time since the test began, as marks show it.
func (tl *timeline) since() string { return fmt.Sprintf("%.3fs", time.Since(tl.begin).Seconds()) }

// summary prints the whole timeline again, in one block.
func (tl *timeline) summary() {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.t.Logf("timeline:\n  %s", strings.Join(tl.lines, "\n  "))
}
