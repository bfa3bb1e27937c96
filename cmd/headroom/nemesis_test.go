package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The nemesis: faults a fleet sees that are not a crash. A process stopped
// without dying (SIGSTOP, as a GC stall or a VM its host froze) and resumed
// (SIGCONT), an agent's wall clock jumped, a data directory made full. The
// tests here inject each on its own, with the grace and the lease made
// short so that pauses longer than them stay short; the campaign
// (chaos_test.go) mixes them all.

// pause stops p for d, then resumes it; the resume is also registered as a
// cleanup, so a test that fails in between leaves nothing stopped.
func pause(t testing.TB, p *proc, d time.Duration) {
	t.Helper()
	if err := p.signalNamed("STOP"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.signalNamed("CONT") })
	time.Sleep(d) // the fault itself is a length of time
	if err := p.signalNamed("CONT"); err != nil {
		t.Fatal(err)
	}
}

// nemesisFlags make the grace, lease and margin short, so pauses longer
// than each stay short.
var nemesisFlags = []string{"--agent-grace", "3s", "--grant-lease", "2s", "--grant-margin", "1s"}

// strictPlan creates a strict plan with the given ceiling through any
// server.
func (c *hCluster) strictPlan(name string, ceiling uint64) {
	c.t.Helper()
	body := map[string]any{"name": name, "fee_monthly_micros": ceiling * 1_000_000, "ceiling": ceiling, "mode": "strict"}
	waitFor(c.t, 30*time.Second, "plan "+name+" created", func() error {
		s := c.running()[0]
		code, b, _, err := callWith(httpcFor(s), "POST", s.url("/v1/plans"), body)
		if err != nil {
			return err
		}
		if code != 200 && code != 201 && code != 409 {
			return fmt.Errorf("POST /v1/plans: %d %s", code, bytes100(b))
		}
		return nil
	})
}

// admits waits until agent a admits a new session of tenant tn, and keeps it
// in tr; it returns how long that took.
func (c *hCluster) admits(a *hAgent, tn, id string, tr truth, limit time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	if err := a.open(context.Background(), limit, tn, "audio", id); err != nil {
		c.t.Fatalf("admission not back: %v", err)
	}
	tr[id] = [2]string{tn, "audio"}
	return time.Since(start)
}

// TestNemesisPauses stops the leader, a follower and an agent, each for
// less and for more than the election timeout (300 ms), the agent grace and
// the grant lease and its margin, while sessions of a soft and a strict
// tenant stay open: every pause ends with every server equal to the truth,
// admission back on every agent, and nothing counted twice.
func TestNemesisPauses(t *testing.T) {
	c := newCluster(t, 3, nil, nemesisFlags...)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	c.strictPlan("nm-strict", 40)
	tenants := []string{"nm-soft", "nm-strict"}
	c.setPlans(tenants[:1], "payg")
	c.setPlans(tenants[1:], "nm-strict")
	a1 := c.addAgent("nm-a1", nil, c.wires(c.servers))
	a2 := c.addAgent("nm-a2", nil, c.wires(c.servers))
	tr := truth{}
	n := 0
	openSome := func(k int) {
		for i := 0; i < k; i++ {
			n++
			for j, a := range []*hAgent{a1, a2} {
				tn := tenants[(n+j)%2]
				c.admits(a, tn, fmt.Sprintf("nm-%s-%d", a.name, n), tr, 60*time.Second)
			}
		}
	}
	openSome(5)
	c.waitAgentsSettled(30*time.Second, a1, a2)
	c.waitAgree(30*time.Second, "before the pauses", tr, tenants, c.servers)

	type step struct {
		what string
		d    time.Duration
		pick func() *proc
	}
	leader := func() *proc { s, _ := c.waitLeader(60*time.Second, c.servers); return s.p }
	follower := func() *proc {
		s, _ := c.waitLeader(60*time.Second, c.servers)
		for _, o := range c.servers {
			if o != s {
				return o.p
			}
		}
		return nil
	}
	steps := []step{
		{"leader, shorter than the election timeout", 150 * time.Millisecond, leader},
		{"leader, longer than the election timeout", 2 * time.Second, leader},
		{"leader, longer than the agent grace and the lease", 6 * time.Second, leader},
		{"follower, longer than the election timeout", 2 * time.Second, follower},
		{"follower, longer than the agent grace", 6 * time.Second, follower},
		{"agent, shorter than the lease", time.Second, func() *proc { return a1.p }},
		{"agent, longer than the lease and its margin", 4 * time.Second, func() *proc { return a1.p }},
		{"agent, longer than the grace", 6 * time.Second, func() *proc { return a2.p }},
	}
	for _, st := range steps {
		p := st.pick()
		c.tl.mark("SIGSTOP %s (%s) for %s", p.name, st.what, st.d)
		pause(t, p, st.d)
		resumed := time.Now()
		c.tl.mark("SIGCONT %s", p.name)
		// Admission back on both agents, for both tenants.
		n++
		for _, a := range []*hAgent{a1, a2} {
			for _, tn := range tenants {
				c.admits(a, tn, fmt.Sprintf("nm-%s-%s-%d", a.name, tn, n), tr, 60*time.Second)
			}
		}
		c.tl.mark("admission back on both agents %.1fs after the resume", time.Since(resumed).Seconds())
		c.waitAgentsSettled(60*time.Second, a1, a2)
		c.waitAgree(60*time.Second, "after the pause of the "+st.what, tr, tenants, c.servers)
	}
	c.tl.summary()
}

// TestNemesisForwardToPausedLeader: a write sent to a follower while the
// leader is stopped is forwarded to it, and must not hang for as long as the
// pause lasts: the follower answers within its hold time (a 5xx the client
// retries, or the new leader's 200) though the old leader stays stopped.
func TestNemesisForwardToPausedLeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	c.setPlans([]string{"fw-t"}, "payg")
	var fol *hServer
	for _, s := range c.servers {
		if s != lead {
			fol = s
			break
		}
	}
	if err := lead.p.signalNamed("STOP"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lead.p.signalNamed("CONT") })
	c.tl.mark("SIGSTOP the leader %s; a set-plan sent to %s at once", lead.name, fol.name)
	// A client far more patient than the hold time (7 s): the pause lasts
	// longer than it would wait.
	patient := &http.Client{Timeout: 60 * time.Second}
	start := time.Now()
	code, body, _, err := callWith(patient, "PUT", fol.url("/v1/tenants/fw-t/plan"), map[string]string{"plan": "starter", "at": "now"})
	took := time.Since(start)
	c.tl.mark("answer after %.1fs: %d %s %v", took.Seconds(), code, bytes100(body), err)
	if err != nil {
		t.Fatalf("set-plan through %s with the leader stopped: %v after %s", fol.name, err, took)
	}
	if took > 30*time.Second {
		t.Fatalf("set-plan through %s held %s with the leader stopped (hold time 7 s)", fol.name, took)
	}
	// The client retries and reaches the new leader.
	others := []*hServer{}
	for _, s := range c.servers {
		if s != lead {
			others = append(others, s)
		}
	}
	if err := c.setPlan(60*time.Second, "fw-t", "starter", others); err != nil {
		t.Fatal(err)
	}
	lead.p.signalNamed("CONT")
	c.waitLeader(60*time.Second, c.servers)
}

// tmpfsDir mounts a tmpfs of size bytes on a new directory (root only) and
// unmounts it when the test ends. Without root the test is skipped, except
// with CI=true, where it fails.
func tmpfsDir(t testing.TB, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("mounting a tmpfs needs root; CI runs as root")
		}
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fillDisk writes a file that takes what is left of dir's file system and
// returns a function that removes it.
func fillDisk(t testing.TB, dir string) func() {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	return func() { os.Remove(path) }
}

// logSays waits until p's log holds s.
func logSays(t testing.TB, p *proc, s string, limit time.Duration) {
	t.Helper()
	waitFor(t, limit, p.name+" says "+s, func() error {
		if !strings.Contains(p.logText(), s) {
			return errors.New("not yet")
		}
		return nil
	})
}

// usageSecs is tenant tn's usage in seconds, all classes, on server s.
func usageSecs(t testing.TB, s *hServer, tn string) float64 {
	t.Helper()
	var f tenantFig
	var err error
	waitFor(t, 30*time.Second, "the usage of "+tn, func() error {
		f, _, err = s.tenant(tn)
		return err
	})
	return f.seconds()
}

// TestNemesisAgentClock jumps an agent's wall clock forward and backward by
// minutes (a fake clock read through its config) while sessions are open,
// and once more across a crash of the agent: admission goes on, the agent
// says the clock jumped, and the usage metered follows real time — a jump
// bills no minute that did not pass, and none is lost.
func TestNemesisAgentClock(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tn := "ck-t"
	c.setPlans([]string{tn}, "payg")
	offFile := filepath.Join(t.TempDir(), "offset")
	if err := os.WriteFile(offFile, []byte("0s"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := c.addAgent("ck-a", nil, c.wires(c.servers), "--wall-clock-offset-file", offFile)
	tr := truth{}
	const n = 10
	began := time.Now()
	for i := 0; i < n; i++ {
		c.admits(a, tn, fmt.Sprintf("ck-%d", i), tr, 30*time.Second)
	}
	// Usage must stay within the real time n sessions have been open (and
	// a little more for one flush of each), whatever the clock says.
	check := func(when string) {
		t.Helper()
		c.waitAgentsSettled(30*time.Second, a)
		lead, _ := c.waitLeader(60*time.Second, c.servers)
		got := usageSecs(t, lead, tn)
		real := time.Since(began).Seconds() * n
		c.tl.mark("%s: %.1f s metered, %.1f s at most really open", when, got, real)
		if got > real+n*1 {
			t.Fatalf("%s: %.1f session-seconds metered, more than the %.1f that passed: the jump was billed", when, got, real)
		}
		if got < 0 {
			t.Fatalf("%s: negative usage %.1f", when, got)
		}
	}
	for _, jump := range []string{"10m", "-10m", "0s"} {
		if err := os.WriteFile(offFile, []byte(jump), 0o644); err != nil {
			t.Fatal(err)
		}
		c.tl.mark("the agent's wall clock set to the host's %s", jump)
		logSays(t, a.p, "the wall clock jumped", 30*time.Second)
		c.admits(a, tn, "ck-after-"+jump, tr, 30*time.Second)
		if err := a.close(context.Background(), 30*time.Second, "ck-after-"+jump); err != nil {
			t.Fatal(err)
		}
		delete(tr, "ck-after-"+jump)
		check("after a jump of " + jump)
		c.waitAgree(30*time.Second, "after a jump of "+jump, tr, []string{tn}, c.servers)
	}
	// A crash while the clock stands 10 minutes behind, restarted so: the
	// restored sessions are not billed backwards, nothing is lost.
	if err := os.WriteFile(offFile, []byte("-10m"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few flushes: the offset is read every 50 ms
	a.p.kill()
	a.p.restart()
	waitFor(t, 30*time.Second, "the agent back", func() error { _, err := a.status(); return err })
	c.tl.mark("kill -9 and restart of the agent with its clock 10 minutes behind")
	c.admits(a, tn, "ck-after-restart", tr, 30*time.Second)
	c.waitAgree(30*time.Second, "after the restart", tr, []string{tn}, c.servers)
	check("after the restart")

	// The documented cost: a restart across a forward jump judges the
	// downtime by the wall clock, so each restored session its media server
	// confirms is billed the jump too. Measured, and bounded by it.
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	before := usageSecs(t, lead, tn)
	a.p.kill()
	if err := os.WriteFile(offFile, []byte("0s"), 0o644); err != nil { // 10 minutes ahead of its start
		t.Fatal(err)
	}
	restarted := time.Now()
	a.p.restart()
	waitFor(t, 30*time.Second, "the agent back", func() error { _, err := a.status(); return err })
	var list []map[string]string
	for id, tc := range tr {
		list = append(list, map[string]string{"tenant": tc[0], "class": tc[1], "session": id})
	}
	if code, body, err := call("PUT", a.url("/v1/sessions"), map[string]any{"sessions": list}); err != nil || code != 200 {
		t.Fatalf("reconcile: %d %s %v", code, bytes100(body), err)
	}
	c.waitAgentsSettled(30*time.Second, a)
	c.waitAgree(30*time.Second, "after a restart across a forward jump", tr, []string{tn}, c.servers)
	extra := usageSecs(t, lead, tn) - before - time.Since(restarted).Seconds()*float64(len(tr))
	c.tl.mark("a restart across a forward jump of 10 min billed %.0f s more than passed for %d sessions (%.0f s each)", extra, len(tr), extra/float64(len(tr)))
	if extra > float64(len(tr))*(600+5) {
		t.Fatalf("a restart across a forward jump of 10 min billed %.0f s more than passed for %d sessions: more than the jump", extra, len(tr))
	}
}

// TestNemesisAgentDiskFull fills the file system of an agent's data
// directory (a small tmpfs): the agent says it cannot persist, keeps
// admitting, and once there is room again everything it admitted reaches the
// cluster, and survives a kill -9 after that.
func TestNemesisAgentDiskFull(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tn := "df-t"
	c.setPlans([]string{tn}, "payg")
	small := tmpfsDir(t, 8<<20)
	a := &hAgent{name: "df-a", client: fastc, api: freeAddr(t)}
	a.p = newProc(t, a.name, []string{binPath, "agent", "--id", a.name, "--data-dir", filepath.Join(small, "agent"),
		"--server", c.wires(c.servers), "--flush-interval", "100ms", "--log-level", "debug", "--api-addr", a.api}, nil)
	if err := a.p.spawn(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the agent API", func() error { _, err := a.status(); return err })
	tr := truth{}
	for i := 0; i < 5; i++ {
		c.admits(a, tn, fmt.Sprintf("df-before-%d", i), tr, 30*time.Second)
	}
	c.waitAgentsSettled(30*time.Second, a)
	c.waitAgree(30*time.Second, "before the disk fills", tr, []string{tn}, c.servers)

	free := fillDisk(t, small)
	c.tl.mark("the agent's file system is full")
	for i := 0; i < 20; i++ {
		c.admits(a, tn, fmt.Sprintf("df-full-%d", i), tr, 30*time.Second)
	}
	logSays(t, a.p, "cannot persist agent state", 30*time.Second)
	c.tl.mark("the agent admitted 20 sessions with its disk full, and says it cannot persist")
	free()
	c.tl.mark("room again")
	c.waitAgentsSettled(60*time.Second, a)
	c.waitAgree(60*time.Second, "once there is room again", tr, []string{tn}, c.servers)
	a.p.kill()
	a.p.restart()
	waitFor(t, 30*time.Second, "the agent back", func() error { _, err := a.status(); return err })
	c.waitAgentsSettled(60*time.Second, a)
	c.waitAgree(60*time.Second, "after a kill -9 once there was room", tr, []string{tn}, c.servers)
}

// TestNemesisFollowerDiskFull fills the file system of a follower's data
// directory: the cluster goes on committing with the other two, the full
// server says why it cannot, and once there is room it catches up.
func TestNemesisFollowerDiskFull(t *testing.T) {
	c := newCluster(t, 3, nil)
	small := tmpfsDir(t, 64<<20)
	// srv3's data directory on the small file system.
	s3 := c.servers[2]
	for i, a := range s3.p.argv {
		if a == "--data-dir" {
			s3.p.argv[i+1] = filepath.Join(small, s3.name)
		}
	}
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tenants := tenantNames("fd", 4)
	c.setPlans(tenants, "payg")
	a := c.addAgent("fd-a", nil, c.wires(c.servers))
	tr := truth{}
	for i := 0; i < 10; i++ {
		c.admits(a, tenants[i%4], fmt.Sprintf("fd-before-%d", i), tr, 30*time.Second)
	}
	c.waitAgree(30*time.Second, "before the disk fills", tr, tenants, c.servers)
	free := fillDisk(t, small)
	c.tl.mark("%s's file system is full", s3.name)
	// The Raft store reuses pages it has freed, so how much it takes before a
	// write needs a new page depends on how the entries were batched: admit in
	// rounds until srv3 has hit its full disk, within a bound.
	admitted, changes := 0, 0
	full := 0
	for round := 0; full == 0; round++ {
		if round == 40 {
			t.Fatalf("%s never hit its full disk after %d sessions and %d plan changes: the fault was not injected", s3.name, admitted, changes)
		}
		for i := 0; i < 50; i++ {
			c.admits(a, tenants[admitted%4], fmt.Sprintf("fd-full-%d", admitted), tr, 30*time.Second)
			admitted++
		}
		c.setPlans(tenants[:1], []string{"payg", "starter"}[round%2])
		changes++
		c.waitAgentsSettled(60*time.Second, a)
		// The leader sends to srv3 on its own time: give the write a moment
		// to be tried before the next round.
		poll(5*time.Second, 50*time.Millisecond, func() error {
			if full = strings.Count(s3.p.logText(), "no space left on device"); full == 0 {
				return errors.New("not yet")
			}
			return nil
		})
	}
	c.tl.mark("%d sessions admitted and %d plan changes committed with %s's disk full (running: %v); it logged \"no space left on device\" %d times",
		admitted, changes, s3.name, s3.p.running(), full)
	free()
	if !s3.p.running() {
		c.tl.mark("%s exited with its disk full (%v); restarted", s3.name, s3.p.exitErr())
		s3.p.restart()
	}
	c.waitAgree(90*time.Second, "once there is room again", tr, tenants, c.servers)
}
