package main

import (
	"context"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The randomized campaign (make chaos SEED=… DURATION=…): 3 servers and 4
// agents under session churn, while a seeded nemesis kills (-9) and stops
// (SIGSTOP) servers and agents, jumps agents' wall clocks, fills agents'
// disks and changes plans. The media-server side keeps its own truth (which
// session is open on which agent, and for how long); at the end every fault
// is healed, each agent is reconciled with its media server's list, and the
// campaign prints the faults by kind and checks: no session lost or doubled,
// usage within one flush interval per crash of the session's own agent,
// strict ceilings held but for the documented lease-lapse window (counted
// apart), all servers equal, and the time admission took to come back after
// each fault (p50/p99/max). Without HEADROOM_CHAOS_SEED it runs a short
// campaign with a fixed seed (the CI run).

type chaosSess struct {
	id, tn, cl string
	agent      int
	// The media server asked to open it at opened and had the agent's yes
	// at admitted; it asked to close it at closing and had the answer at
	// closed (zero: open). The agent counts it from a moment between the
	// first two to one between the last two.
	opened, admitted time.Time
	closeAt, closed  time.Time
	clockSlack       time.Duration // what restarts with a jumped clock may misjudge
	closing          bool
	crashes          int // crashes of its agent while it was open
}

func TestChaos(t *testing.T) {
	seed, dur, minFaults := uint64(16), 45*time.Second, 20
	if v := os.Getenv("HEADROOM_CHAOS_SEED"); v != "" {
		fmt.Sscan(v, &seed)
		dur, minFaults = 10*time.Minute, 100
	}
	if v := os.Getenv("HEADROOM_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HEADROOM_CHAOS_DURATION=%q: %v", v, err)
		}
		dur = d
	}
	if v := os.Getenv("HEADROOM_CHAOS_FAULTS"); v != "" {
		fmt.Sscan(v, &minFaults)
	}
	kinds := []string{"kill-server", "pause-server", "pause-leader", "kill-agent", "pause-agent", "clock-jump", "disk-full", "plan-change", "partition"}
	if v := os.Getenv("HEADROOM_CHAOS_KINDS"); v != "" {
		// A campaign of some kinds only, to tell which kind a finding
		// comes from.
		var only []string
		for _, k := range strings.Split(v, ",") {
			if !slices.Contains(kinds, k) {
				t.Fatalf("HEADROOM_CHAOS_KINDS: no fault kind %q (kinds: %s)", k, strings.Join(kinds, ","))
			}
			only = append(only, k)
		}
		kinds = only
	}
	t.Logf("chaos: seed %d, duration %s, at least %d faults of %s", seed, dur, minFaults, strings.Join(kinds, ","))
	rng := mrand.New(mrand.NewPCG(seed, 7))

	// The servers in network namespaces, so that one can be cut off.
	requireNetNS(t)
	lab := newNetLab(t, 3)
	c := newCluster(t, 3, lab, "--agent-grace", "4s", "--grant-lease", "2s", "--grant-margin", "1s")
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	const strictCeiling = 30
	c.strictPlan("chaos-strict", strictCeiling)
	soft := tenantNames("ch", 3)
	strict := "ch-strict"
	tenants := append(slices.Clone(soft), strict)
	c.setPlans(soft, "payg")
	// The probes of admission after each fault open sessions of their own
	// tenant, outside the truth.
	const probeTenant = "ch-probe"
	c.setPlans([]string{probeTenant}, "payg")
	c.setPlans([]string{strict}, "chaos-strict")

	// Agents: data directories on small file systems (to fill), wall
	// clocks behind offset files (to jump).
	const nAgents = 4
	type chaosAgent struct {
		*hAgent
		dir, offset string
		free        func()
		mu          sync.RWMutex  // read-held by a call of the media server, held by its reconcile
		offStart    time.Duration // its clock's offset at its last start
		offNow      time.Duration
	}
	var agents []*chaosAgent
	for i := 0; i < nAgents; i++ {
		small := tmpfsDir(t, 16<<20)
		off := filepath.Join(t.TempDir(), "offset")
		if err := os.WriteFile(off, []byte("0s"), 0o644); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("ch-a%d", i)
		a := &hAgent{name: name, client: fastc, api: freeAddr(t)}
		a.p = newProc(t, name, []string{binPath, "agent", "--id", name, "--data-dir", filepath.Join(small, "agent"),
			"--server", c.wires(c.servers), "--flush-interval", "100ms", "--log-level", "info", "--api-addr", a.api,
			"--wall-clock-offset-file", off}, nil)
		if err := a.p.spawn(); err != nil {
			t.Fatal(err)
		}
		c.agents = append(c.agents, a)
		agents = append(agents, &chaosAgent{hAgent: a, dir: small, offset: off})
	}
	for _, a := range agents {
		waitFor(t, 30*time.Second, a.name+" API up", func() error { _, err := a.status(); return err })
	}

	// The media servers' truth.
	var (
		mu                     sync.Mutex
		sessions               = map[string]*chaosSess{}
		strictMax              int
		overStrict, lapseOver  int
		lapsing                atomic.Int32 // agents faulted for longer than the lease and its margin
		opens, closes, refused atomic.Int64
	)
	openOnStrict := func() int {
		n := 0
		for _, s := range sessions {
			if s.tn == strict && s.closed.IsZero() && !s.closing {
				n++
			}
		}
		return n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var churn sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		churn.Add(1)
		go func() {
			defer churn.Done()
			r := mrand.New(mrand.NewPCG(seed, uint64(100+w)))
			var mine []string
			for k := 0; ctx.Err() == nil; k++ {
				if len(mine) > 0 && (len(mine) > 12 || r.IntN(10) < 4) {
					j := r.IntN(len(mine))
					id := mine[j]
					mu.Lock()
					s := sessions[id]
					mu.Unlock()
					a := agents[s.agent]
					a.mu.RLock()
					mu.Lock()
					s.closing = true
					mu.Unlock()
					start := time.Now()
					err := a.close(ctx, 2*time.Minute, id)
					a.mu.RUnlock()
					if err != nil {
						if ctx.Err() != nil {
							return
						}
						t.Errorf("chaos: %v", err)
						return
					}
					mu.Lock()
					s.closeAt, s.closed = start, time.Now()
					mu.Unlock()
					mine = slices.Delete(mine, j, j+1)
					closes.Add(1)
					continue
				}
				ai := r.IntN(nAgents)
				tn := tenants[r.IntN(len(tenants))]
				cl := sessionClasses[r.IntN(len(sessionClasses))]
				id := fmt.Sprintf("ch-%d-%d", w, k)
				start := time.Now()
				agents[ai].mu.RLock()
				code, _, _, err := callWith(agents[ai].client, "POST", agents[ai].url("/v1/sessions"), map[string]string{"tenant": tn, "class": cl, "session": id})
				if err != nil || code >= 500 {
					// The agent did not answer (stopped, killed): the media
					// server does not know whether it was admitted; it asks
					// again with the same id until it knows.
					for ctx.Err() == nil {
						time.Sleep(50 * time.Millisecond)
						code, _, _, err = callWith(agents[ai].client, "POST", agents[ai].url("/v1/sessions"), map[string]string{"tenant": tn, "class": cl, "session": id})
						if err == nil && code < 500 {
							break
						}
					}
				}
				if code != 200 && code != 201 {
					agents[ai].mu.RUnlock()
					refused.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				now := time.Now()
				mu.Lock()
				sessions[id] = &chaosSess{id: id, tn: tn, cl: cl, agent: ai, opened: start, admitted: now}
				if tn == strict {
					n := openOnStrict()
					strictMax = max(strictMax, n)
					if n > strictCeiling {
						if lapsing.Load() > 0 {
							lapseOver++
						} else {
							overStrict++
						}
					}
				}
				mu.Unlock()
				agents[ai].mu.RUnlock()
				mine = append(mine, id)
				opens.Add(1)
				time.Sleep(time.Duration(5+r.IntN(20)) * time.Millisecond)
			}
		}()
	}

	// reconcile gives agent ai its media server's list of live sessions.
	reconcile := func(ai int) {
		a := agents[ai]
		list := []map[string]string{}
		mu.Lock()
		for _, s := range sessions {
			if s.agent == ai && s.closed.IsZero() && !s.closing {
				// When it began, in the wall time the agent derives from its
				// start (a jump since does not move it: agent/wallclock.go).
				list = append(list, map[string]string{"tenant": s.tn, "class": s.cl, "session": s.id,
					"started_at": s.opened.Add(a.offStart).Format(time.RFC3339Nano)})
			}
		}
		mu.Unlock()
		waitFor(t, time.Minute, "reconcile of "+a.name, func() error {
			code, body, err := call("PUT", a.url("/v1/sessions"), map[string]any{"sessions": list})
			if err != nil || code != 200 {
				return fmt.Errorf("%d %s %v", code, bytes100(body), err)
			}
			c.tl.mark("reconcile of %s with %d sessions: %s", a.name, len(list), bytes100(body))
			return nil
		})
	}

	// The nemesis.
	faults := map[string]int{}
	var recovery []time.Duration
	probe := 0
	// admissionBack is how long until every agent admits (and closes) a
	// probe session after a fault healed.
	admissionBack := func() time.Duration {
		start := time.Now()
		for _, a := range agents {
			probe++
			id := fmt.Sprintf("ch-probe-%d", probe)
			if err := a.open(context.Background(), 2*time.Minute, probeTenant, "audio", id); err != nil {
				t.Fatalf("admission not back on %s: %v", a.name, err)
			}
			if err := a.close(context.Background(), 2*time.Minute, id); err != nil {
				t.Fatalf("probe close on %s: %v", a.name, err)
			}
		}
		return time.Since(start)
	}
	// crashAgent books a crash of agent ai against its open sessions and
	// those it closed within the last second (a close the crash lost is
	// taken back by the reconcile at the last persist), with the time its
	// restart may misjudge: its downtime when its wall clock jumped in
	// between, the jump itself.
	crashAgent := func(ai int, misjudged time.Duration) {
		mu.Lock()
		for _, s := range sessions {
			if s.agent == ai && (s.closed.IsZero() || time.Since(s.closed) < time.Second) {
				s.crashes++
				s.clockSlack += misjudged
			}
		}
		mu.Unlock()
	}
	const lapse = 3 * time.Second // lease and margin
	end := time.Now().Add(dur)
	total := 0
	for time.Now().Before(end) || total < minFaults {
		d := time.Duration(100+rng.IntN(3000)) * time.Millisecond
		if rng.IntN(8) == 0 {
			d = time.Duration(4000+rng.IntN(3000)) * time.Millisecond // past the grace and the lease
		}
		kind := kinds[rng.IntN(len(kinds))]
		faults[kind]++
		total++
		switch kind {
		case "kill-server", "pause-server", "pause-leader":
			s := c.servers[rng.IntN(len(c.servers))]
			if kind == "pause-leader" {
				if l, _, err := c.leader(c.servers); err == nil {
					s = l
				}
			}
			c.tl.mark("fault %d: %s %s for %s", total, kind, s.name, d)
			if kind == "kill-server" {
				s.p.kill()
				time.Sleep(d) // the fault is a length of time
				s.p.restart()
			} else {
				pause(t, s.p, d)
			}
		case "kill-agent", "pause-agent":
			ai := rng.IntN(nAgents)
			a := agents[ai]
			c.tl.mark("fault %d: %s %s for %s", total, kind, a.name, d)
			if d > lapse {
				lapsing.Add(1)
			}
			if kind == "kill-agent" {
				a.mu.Lock()
				// The clock the agent restarts with is the one it started
				// with: a restart across a jump misjudges the downtime by the
				// jump (README, What survives what; TestNemesisAgentClock),
				// which would drown the check of a flush interval per crash.
				crashAgent(ai, 0)
				a.p.kill()
				os.WriteFile(a.offset, []byte(a.offStart.String()), 0o644)
				a.offNow = a.offStart
				time.Sleep(d)
				a.p.restart()
				waitFor(t, time.Minute, a.name+" back", func() error { _, err := a.status(); return err })
				// Its media server reconciles, as after every restart.
				reconcile(ai)
				a.mu.Unlock()
			} else {
				pause(t, a.p, d)
			}
			if d > lapse {
				// The window stays open until the fleet heard the agent again.
				go func() { time.Sleep(10 * time.Second); lapsing.Add(-1) }()
			}
		case "partition":
			s := c.servers[rng.IntN(len(c.servers))]
			if l, _, err := c.leader(c.servers); err == nil && rng.IntN(2) == 0 {
				s = l
			}
			c.tl.mark("fault %d: partition: %s cut off from everything for %s", total, s.name, d)
			if err := s.ns.cut(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.ns.heal() })
			time.Sleep(d)
			if err := s.ns.heal(); err != nil {
				t.Fatal(err)
			}
		case "clock-jump":
			a := agents[rng.IntN(nAgents)]
			j := time.Duration(rng.IntN(41)-20) * time.Minute
			c.tl.mark("fault %d: wall clock of %s jumps to the host's %s", total, a.name, j)
			os.WriteFile(a.offset, []byte(j.String()), 0o644)
			a.offNow = j
		case "disk-full":
			a := agents[rng.IntN(nAgents)]
			c.tl.mark("fault %d: disk of %s full for %s", total, a.name, d)
			free := fillDisk(t, a.dir)
			time.Sleep(d)
			free()
		case "plan-change":
			tn := soft[1+rng.IntN(len(soft)-1)]
			p := []string{"payg", "scale", "growth"}[rng.IntN(3)]
			c.tl.mark("fault %d: %s to %s", total, tn, p)
			if err := c.setPlan(60*time.Second, tn, p, c.servers); err != nil {
				t.Fatal(err)
			}
		}
		c.waitLeader(2*time.Minute, c.servers)
		recovery = append(recovery, admissionBack())
	}
	cancel()
	churn.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Heal: clocks back, every agent reconciled with its media server's
	// truth.
	for i, a := range agents {
		os.WriteFile(a.offset, []byte("0s"), 0o644)
		reconcile(i)
	}
	tr := truth{}
	mu.Lock()
	for _, s := range sessions {
		if s.closed.IsZero() {
			tr[s.id] = [2]string{s.tn, s.cl}
		}
	}
	mu.Unlock()
	c.waitAgentsSettled(2*time.Minute, c.agents...)
	agreeErr := poll(2*time.Minute, 50*time.Millisecond, func() error { return c.agree(tr, tenants, c.servers) })
	sessionsOK := agreeErr == nil
	if !sessionsOK {
		// Go on to the report: usage and equality say more about it.
		t.Errorf("after the campaign and the reconciles, the servers and the truth differ: %v", agreeErr)
	} else {
		c.tl.mark("after the campaign and the reconciles: %d servers equal the truth (%d sessions open)", len(c.servers), len(tr))
	}

	// Close everything, then compare usage with the truth's durations.
	var wg sync.WaitGroup
	mu.Lock()
	open := []*chaosSess{}
	for _, s := range sessions {
		if s.closed.IsZero() {
			open = append(open, s)
		}
	}
	mu.Unlock()
	for _, s := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if err := agents[s.agent].close(context.Background(), time.Minute, s.id); err != nil {
				t.Error(err)
			}
			mu.Lock()
			s.closeAt, s.closed = start, time.Now()
			mu.Unlock()
		}()
	}
	wg.Wait()
	c.waitAgentsSettled(2*time.Minute, c.agents...)
	c.waitAgree(2*time.Minute, "everything closed", truth{}, tenants, c.servers)
	lead, _ := c.waitLeader(time.Minute, c.servers)
	usageOK := true
	var worst, clockTol float64
	var usageLines []string
	for _, tn := range tenants {
		// The agent may count a session from anywhere in its open call to
		// anywhere in its close call: usage lies between the sum of the
		// times from admitted to closeAt and that from opened to closed, less
		// what a crash of its own agent may lose (a flush interval and the
		// agent's persist lag) and what a restart across a clock jump may
		// misjudge either way.
		var low, high, crash, clock float64
		mu.Lock()
		for _, s := range sessions {
			if s.tn == tn {
				low += s.closeAt.Sub(s.admitted).Seconds()
				high += s.closed.Sub(s.opened).Seconds()
				crash += float64(s.crashes) * (0.1 + 0.5)
				clock += s.clockSlack.Seconds()
			}
		}
		mu.Unlock()
		clockTol += clock
		low, high = low-crash-clock, high+clock
		got := usageSecs(t, lead, tn)
		worst = max(worst, low-got, got-high)
		line := fmt.Sprintf("usage of %s: %.1f s metered, truth between %.1f s and %.1f s (crashes %.1f s, clock %.1f s)", tn, got, low, high, crash, clock)
		usageLines = append(usageLines, "  "+line)
		c.tl.mark("%s", line)
		if got < low-1 || got > high+1 {
			usageOK = false
			t.Errorf("usage of %s: %.1f s metered, truth between %.1f s and %.1f s", tn, got, low, high)
		}
	}
	// All servers equal: with the agents stopped, the same index and usage.
	for _, a := range agents {
		a.p.signalNamed("STOP")
	}
	equalErr := poll(time.Minute, 200*time.Millisecond, func() error { return sameUsage(c.servers, tenants) })
	for _, a := range agents {
		a.p.signalNamed("CONT")
	}
	if equalErr != nil {
		t.Errorf("servers differ: %v", equalErr)
	}

	sort.Slice(recovery, func(i, j int) bool { return recovery[i] < recovery[j] })
	pct := func(p float64) time.Duration {
		return recovery[min(len(recovery)-1, int(math.Ceil(p*float64(len(recovery))))-1)]
	}
	var byKind []string
	for k, n := range faults {
		byKind = append(byKind, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(byKind)
	pass := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "FAILED"
	}
	mu.Lock()
	report := []string{
		fmt.Sprintf("chaos seed %d, %s, %d faults: %s", seed, dur, total, strings.Join(byKind, ", ")),
		fmt.Sprintf("sessions: %d opened, %d closed, %d refusals retried", opens.Load(), closes.Load(), refused.Load()),
		fmt.Sprintf("no session lost or doubled (after reconcile): %s", pass(sessionsOK)),
		fmt.Sprintf("usage within one flush interval per crash of the session's own agent: %s (worst %.1f s beyond; %.0f s allowed apart for restarts after a clock jump)", pass(usageOK), max(worst, 0), clockTol),
		strings.Join(usageLines, "\n"),
		fmt.Sprintf("strict ceiling %d held: %s (%d admissions over it; %d in the lease-lapse window, counted apart; at most %d open)",
			strictCeiling, pass(overStrict == 0), overStrict, lapseOver, strictMax),
		fmt.Sprintf("all servers equal: %s", pass(equalErr == nil)),
		fmt.Sprintf("admission back after a fault: p50 %s, p99 %s, max %s", pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), recovery[len(recovery)-1].Round(time.Millisecond)),
	}
	mu.Unlock()
	if overStrict > 0 {
		t.Errorf("the strict ceiling was passed %d times outside the lease-lapse window", overStrict)
	}
	verdict := "PASS"
	if t.Failed() {
		verdict = "FAIL"
	}
	report = append(report, fmt.Sprintf("chaos %s: seed %d, %d faults (%d pauses), recovery p50 %s p99 %s max %s",
		verdict, seed, total, faults["pause-server"]+faults["pause-leader"]+faults["pause-agent"],
		pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), recovery[len(recovery)-1].Round(time.Millisecond)))
	text := strings.Join(report, "\n") + "\n"
	t.Log("\n" + text)
	// HEADROOM_CHAOS_REPORT=FILE: the report for make chaos to print.
	if f := os.Getenv("HEADROOM_CHAOS_REPORT"); f != "" {
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
