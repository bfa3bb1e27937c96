package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Strict ceilings through a crash: one aggregator and two agents as
// processes, a strict tenant, and agents killed with -9 and restarted on
// their data directories while their media servers (the test) keep every
// session. The test is the media servers: it keeps the truth of what is
// open and checks that no admission takes the fleet over the ceiling.

// strictFleet is an aggregator and its agents.
type strictFleet struct {
	*stack
	t *testing.T
}

func newStrictFleet(t *testing.T, aggFlags ...string) *strictFleet {
	f := &strictFleet{stack: newStack(t), t: t}
	f.startAggregator(aggFlags...)
	return f
}

func (f *strictFleet) addAgent(name string) *fleetAgent {
	a := f.startFleetAgent(name)
	f.waitAgent(a)
	return a
}

// waitAgent waits until the agent's stream to the leader is up.
func (f *strictFleet) waitAgent(a *fleetAgent) {
	waitFor(f.t, 30*time.Second, "agent "+a.name+" connected", func() error {
		_, body, err := call("GET", "http://"+a.api+"/v1/status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Connected bool `json:"connected"`
		}
		json.Unmarshal(body, &st)
		if !st.Connected {
			return fmt.Errorf("not connected: %s", body)
		}
		return nil
	})
}

// waitTight waits until the agent holds back in some strict pool (it heard
// of a lowered ceiling, or of bookings over it).
func (f *strictFleet) waitTight(a *fleetAgent) {
	waitFor(f.t, 10*time.Second, "agent "+a.name+" holding back", func() error {
		_, body, err := call("GET", "http://"+a.api+"/v1/status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Grants struct {
				TightPools int `json:"tight_pools"`
			} `json:"grants"`
		}
		json.Unmarshal(body, &st)
		if st.Grants.TightPools == 0 {
			return fmt.Errorf("no tight pool: %s", body)
		}
		return nil
	})
}

// restart kills the agent with -9 and starts it again on its data directory.
func (f *strictFleet) restart(a *fleetAgent) {
	a.proc.kill()
	a.proc.restart()
	f.waitAgent(a)
}

func (f *strictFleet) plan(name string, ceiling uint64) {
	code, body, err := call("POST", "http://"+f.http+"/v1/plans", map[string]any{
		"name": name, "fee_monthly_micros": ceiling * 1_000_000, "ceiling": ceiling, "mode": "strict"})
	if err != nil || code != 201 {
		f.t.Fatalf("create plan %s: %d %s %v", name, code, body, err)
	}
}

func (f *strictFleet) setPlan(tenant, plan string) {
	code, body, err := call("PUT", "http://"+f.http+"/v1/tenants/"+tenant+"/plan", map[string]string{"plan": plan, "at": "now"})
	if err != nil || code != 200 {
		f.t.Fatalf("set plan %s %s: %d %s %v", tenant, plan, code, body, err)
	}
}

// admit asks the agent to open a session: true if admitted.
func admit(a *fleetAgent, tenant, id string) (bool, error) {
	code, body, err := call("POST", "http://"+a.api+"/v1/sessions", map[string]string{"tenant": tenant, "class": "audio", "session": id})
	switch {
	case err != nil:
		return false, err
	case code == 201 || code == 200:
		return true, nil
	case code == 429:
		return false, nil
	}
	return false, fmt.Errorf("open %s on %s: %d %s", id, a.name, code, body)
}

func (f *strictFleet) mustAdmit(a *fleetAgent, tenant, id string) {
	waitFor(f.t, 15*time.Second, "admit "+id+" on "+a.name, func() error {
		ok, err := admit(a, tenant, id)
		if err == nil && !ok {
			err = fmt.Errorf("refused")
		}
		return err
	})
}

func (f *strictFleet) closeOn(a *fleetAgent, id string) {
	if code, body, err := call("DELETE", "http://"+a.api+"/v1/sessions/"+id, nil); err != nil || code != 200 {
		f.t.Fatalf("close %s on %s: %d %s %v", id, a.name, code, body, err)
	}
}

// reconcile sends the agent its media server's full list.
func (f *strictFleet) reconcile(a *fleetAgent, tenant string, ids []string) (opened, overCeiling int) {
	var list []map[string]string
	for _, id := range ids {
		list = append(list, map[string]string{"tenant": tenant, "class": "audio", "session": id})
	}
	code, body, err := call("PUT", "http://"+a.api+"/v1/sessions", map[string]any{"sessions": list})
	if err != nil || code != 200 {
		f.t.Fatalf("reconcile %s: %d %s %v", a.name, code, body, err)
	}
	var res struct {
		Opened            []string `json:"opened"`
		OpenedOverCeiling int      `json:"opened_over_ceiling"`
	}
	json.Unmarshal(body, &res)
	return len(res.Opened), res.OpenedOverCeiling
}

// strictPool is a tenant's total pool as GET /v1/tenants/{id} shows it.
type strictPool struct {
	Concurrency struct {
		Total uint64 `json:"total"`
	} `json:"concurrency"`
	Grants []struct {
		Pool      string `json:"pool"`
		Ceiling   uint64 `json:"ceiling"`
		Booked    uint64 `json:"booked"`
		Over      uint64 `json:"over"`
		OverCause string `json:"over_cause"`
	} `json:"grants"`
	AdmittedOver uint64 `json:"admitted_over_ceiling"`
}

func (f *strictFleet) tenant(id string) strictPool {
	f.t.Helper()
	var p strictPool
	code, body, err := call("GET", "http://"+f.http+"/v1/tenants/"+id, nil)
	if err != nil || code != 200 {
		f.t.Fatalf("tenant %s: %d %s %v", id, code, body, err)
	}
	if err := json.Unmarshal(body, &p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *strictFleet) waitTotal(tenant string, n uint64) {
	waitFor(f.t, 20*time.Second, fmt.Sprintf("%s at %d open", tenant, n), func() error {
		if got := f.tenant(tenant).Concurrency.Total; got != n {
			return fmt.Errorf("%d open", got)
		}
		return nil
	})
}

// tryAdmissions makes n attempts, alternating between the agents, spaced
// by gap; it returns the ids admitted.
func tryAdmissions(t *testing.T, agents []*fleetAgent, tenant, prefix string, n int, gap time.Duration) []string {
	t.Helper()
	var got []string
	for i := 0; i < n; i++ {
		a := agents[i%len(agents)]
		id := fmt.Sprintf("%s-%d", prefix, i)
		ok, err := admit(a, tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, id)
		}
		time.Sleep(gap) // attempts spread over time: a refusal is a fact at each moment
	}
	return got
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// TestStrictCeilingDowngradeThenRestart: 15 + 15 sessions under a ceiling
// of 40, moved down to 10 at once; agent A is killed with its 15 open,
// restarted on its data directory and reconciled; B's 15 end. The fleet
// still has A's 15 open: nothing is admitted anywhere until A is under 10,
// and then exactly up to the ceiling.
func TestStrictCeilingDowngradeThenRestart(t *testing.T) {
	f := newStrictFleet(t)
	f.plan("big", 40)
	f.plan("small", 10)
	f.setPlan("t", "big")
	a, b := f.addAgent("a"), f.addAgent("b")
	for _, id := range ids("a", 0, 15) {
		f.mustAdmit(a, "t", id)
	}
	for _, id := range ids("b", 0, 15) {
		f.mustAdmit(b, "t", id)
	}
	f.waitTotal("t", 30)
	f.setPlan("t", "small")
	waitFor(t, 10*time.Second, "the pool over its lowered ceiling", func() error {
		if p := f.tenant("t"); len(p.Grants) == 0 || p.Grants[0].Over == 0 || p.Grants[0].OverCause != "lowered" {
			return fmt.Errorf("pool %+v", p.Grants)
		}
		return nil
	})
	f.waitTight(a) // told of the lowered ceiling (pushed within 100 ms)
	f.waitTight(b)
	if got := tryAdmissions(t, []*fleetAgent{a, b}, "t", "down", 6, 50*time.Millisecond); len(got) > 0 {
		t.Fatalf("admitted %v with 30 open under a lowered ceiling of 10", got)
	}

	f.restart(a) // kill -9, its media server keeps its 15
	if opened, _ := f.reconcile(a, "t", ids("a", 0, 15)); opened != 0 {
		t.Errorf("the reconcile after the restart opened %d: the restored sessions should all be there", opened)
	}
	for _, id := range ids("b", 0, 15) {
		f.closeOn(b, id)
	}
	f.waitTotal("t", 15)
	// Over a lease and more (the old fault showed within 12 s).
	if got := tryAdmissions(t, []*fleetAgent{a, b}, "t", "late", 60, 200*time.Millisecond); len(got) > 0 {
		t.Fatalf("with A's 15 open under a ceiling of 10 after its restart, the fleet admitted %v", got)
	}
	if p := f.tenant("t"); p.Grants[0].Booked < 15 || p.Grants[0].Over < 5 {
		t.Errorf("pool after the restart: %+v, want at least A's 15 booked and 5 over", p.Grants[0])
	}

	// A's sessions end down to 6: room for 4, and no more.
	for _, id := range ids("a", 0, 9) {
		f.closeOn(a, id)
	}
	f.waitTotal("t", 6)
	var room []string
	waitFor(t, 20*time.Second, "4 admitted at 6 of 10", func() error {
		room = append(room, tryAdmissions(t, []*fleetAgent{a, b}, "t", fmt.Sprintf("room%d", len(room)), 2, 50*time.Millisecond)...)
		if len(room) < 4 {
			return fmt.Errorf("%d admitted", len(room))
		}
		return nil
	})
	if more := tryAdmissions(t, []*fleetAgent{a, b}, "t", "beyond", 6, 50*time.Millisecond); len(room)+len(more) != 4 {
		t.Fatalf("at 6 of 10 the fleet admitted %d (%v then %v), want exactly 4", len(room)+len(more), room, more)
	}
	f.waitTotal("t", 10)
	if p := f.tenant("t"); p.AdmittedOver != 0 || p.Grants[0].Over != 0 {
		t.Errorf("at the end: %d admitted over the ceiling, pool %+v", p.AdmittedOver, p.Grants[0])
	}
}

// TestStrictCeilingReturnAfterLapsedLease: C holds 8 of a ceiling of 10 and
// dies; once its lease and the margin are over D may take C's room (the
// availability choice). C comes back and is reconciled: the fleet is over
// its ceiling, cause "returned", and nothing is admitted until closes bring
// it back under, though D's media server ends half of what it took.
func TestStrictCeilingReturnAfterLapsedLease(t *testing.T) {
	// A short lease, and a grace after which a silent agent's sessions leave the
	// global figure that agents estimate the fleet by.
	f := newStrictFleet(t, "--grant-lease", "2s", "--grant-margin", "1s", "--agent-grace", "4s")
	tl := newTimeline(t)
	f.plan("small", 10)
	f.setPlan("u", "small")
	c, d := f.addAgent("c"), f.addAgent("d")
	for _, id := range ids("c", 0, 8) {
		f.mustAdmit(c, "u", id)
	}
	for _, id := range ids("d", 0, 2) {
		f.mustAdmit(d, "u", id)
	}
	c.proc.kill() // its media server keeps its 8
	tl.mark("C killed")
	var took []string
	waitFor(t, 30*time.Second, "D taking C's room after C's lease lapsed", func() error {
		took = append(took, tryAdmissions(t, []*fleetAgent{d}, "u", fmt.Sprintf("dx%d", len(took)), 4, 50*time.Millisecond)...)
		if len(took) < 8 {
			return fmt.Errorf("D took %d", len(took))
		}
		return nil
	})
	tl.mark("D took %d", len(took))
	c.proc.restart()
	f.waitAgent(c)
	tl.mark("C back")
	f.reconcile(c, "u", ids("c", 0, 8))
	f.waitTotal("u", 18)
	tl.mark("18 open")
	waitFor(t, 10*time.Second, "the pool over its ceiling, put down to C's return", func() error {
		if p := f.tenant("u"); p.Grants[0].Over != 8 || p.Grants[0].OverCause != "returned" {
			return fmt.Errorf("pool %+v", p.Grants[0])
		}
		return nil
	})
	for _, id := range took[:4] {
		f.closeOn(d, id)
	}
	f.waitTotal("u", 14)
	if got := tryAdmissions(t, []*fleetAgent{c, d}, "u", "late", 30, 100*time.Millisecond); len(got) > 0 {
		t.Fatalf("with 14 open under a ceiling of 10 after C came back, the fleet admitted %v", got)
	}
	if p := f.tenant("u"); p.AdmittedOver != 0 {
		t.Errorf("%d sessions admitted over the ceiling", p.AdmittedOver)
	}
}

// TestStrictCeilingRestartUnderContention: two agents ask for more all the
// time (sessions admitted and closed by several clients each) under a
// ceiling of 20; agent A is killed with -9 with its sessions open and
// restarted, and its media server reconciles them. The sessions really open
// never exceed the ceiling at any moment (counted by the test: a session
// counts from before its close is sent to after its admission is
// answered, so the test's count is never above the real one).
func TestStrictCeilingRestartUnderContention(t *testing.T) {
	const ceiling = 20
	f := newStrictFleet(t)
	f.plan("twenty", ceiling)
	f.setPlan("t", "twenty")
	a, b := f.addAgent("a"), f.addAgent("b")

	var (
		mu       sync.Mutex
		open     = map[string]string{} // session → agent
		peak     int
		over     atomic.Int64
		attempts atomic.Int64
		admitted atomic.Int64
		seq      atomic.Int64
		paused   atomic.Bool // A's clients wait while A restarts
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	worker := func(ag *fleetAgent, seed uint64) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 7))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ag == a && paused.Load() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if rng.IntN(3) == 0 { // close one of this agent's sessions
				var id string
				mu.Lock()
				for s, on := range open {
					if on == ag.name {
						id = s
						break
					}
				}
				if id != "" {
					delete(open, id) // before the close is sent
				}
				mu.Unlock()
				if id != "" {
					call("DELETE", "http://"+ag.api+"/v1/sessions/"+id, nil)
				}
				continue
			}
			id := fmt.Sprintf("%s-%d", ag.name, seq.Add(1))
			attempts.Add(1)
			ok, err := admit(ag, "t", id)
			if err != nil || !ok {
				continue
			}
			admitted.Add(1)
			mu.Lock()
			open[id] = ag.name
			if len(open) > ceiling {
				over.Add(1)
			}
			peak = max(peak, len(open))
			mu.Unlock()
		}
	}
	for i := range 3 {
		wg.Add(2)
		go worker(a, uint64(i))
		go worker(b, uint64(i+10))
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitFor(t, 30*time.Second, "the fleet at its ceiling", func() error {
		mu.Lock()
		defer mu.Unlock()
		if peak < ceiling {
			return fmt.Errorf("peak %d", peak)
		}
		return nil
	})
	for round := range 2 {
		// A's clients stop, so that everything A admitted is persisted
		// (a crash inside a flush interval loses up to that interval:
		// the documented window, not this test's case); B goes on.
		paused.Store(true)
		time.Sleep(300 * time.Millisecond)
		f.restart(a)
		mu.Lock()
		var mine []string
		for id, on := range open {
			if on == "a" {
				mine = append(mine, id)
			}
		}
		mu.Unlock()
		sort.Strings(mine)
		if opened, _ := f.reconcile(a, "t", mine); opened != 0 {
			t.Errorf("round %d: the reconcile after A's restart opened %d of its %d sessions: they should have been restored", round, opened, len(mine))
		}
		paused.Store(false)
		time.Sleep(2 * time.Second) // contention across the restart
	}
	close(stop)
	wg.Wait()
	if n := over.Load(); n > 0 {
		t.Fatalf("%d admissions took the fleet over its ceiling of %d (peak %d, %d admitted of %d attempts)", n, ceiling, peak, admitted.Load(), attempts.Load())
	}
	mu.Lock()
	n := uint64(len(open))
	mu.Unlock()
	f.waitTotal("t", n)
	if p := f.tenant("t"); p.AdmittedOver != 0 {
		t.Errorf("the cluster counted %d admitted over the ceiling", p.AdmittedOver)
	}
	t.Logf("%d admitted of %d attempts, peak %d of %d", admitted.Load(), attempts.Load(), peak, ceiling)
}
