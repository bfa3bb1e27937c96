package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fleetAgent is one of several agents beside one aggregator.
type fleetAgent struct {
	name string
	api  string
	proc *proc
}

// startFleet starts n agents against the stack's aggregator.
func (s *stack) startFleet(n int) []*fleetAgent {
	s.t.Helper()
	var out []*fleetAgent
	for i := 0; i < n; i++ {
		out = append(out, s.startFleetAgent(fmt.Sprintf("agent-%d", i)))
	}
	for _, fa := range out {
		waitFor(s.t, 30*time.Second, "agent API up", func() error {
			_, body, err := call("GET", "http://"+fa.api+"/v1/status", nil)
			if err == nil && !json.Valid(body) {
				err = fmt.Errorf("status %s", body)
			}
			return err
		})
	}
	return out
}

// startFleetAgent starts one agent named name (its id and data directory)
// without waiting for it.
func (s *stack) startFleetAgent(name string) *fleetAgent {
	fa := &fleetAgent{name: name, api: freeAddr(s.t)}
	fa.proc = start(s.t, name, "agent", "--data-dir", filepath.Join(s.dir, name),
		"--api-addr", fa.api, "--server", s.wire, "--id", name, "--log-level", "debug")
	return fa
}

// ownSessions is what an agent itself says it holds open of a tenant.
func ownSessions(t testing.TB, api, tenant string) int {
	t.Helper()
	code, body, err := call("GET", "http://"+api+"/v1/sessions?tenant="+tenant, nil)
	if err != nil || code != 200 {
		t.Fatalf("list sessions at %s: %d %s %v", api, code, body, err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("list sessions at %s: %v: %s", api, err, body)
	}
	return len(list)
}

// TestEndToEndStrictCeiling: a tenant on starter (100, strict) and five
// agents each trying to hold 100 sessions. The agents between them never
// admit more than 100 (counted from their own answers and session lists,
// not from the aggregator); the rest are refused with ceiling once the
// fleet is full (grant-timeout answers, which say the ceiling still had
// room somewhere, are retried as a client would). Moved to growth while
// running, every agent admits again.
func TestEndToEndStrictCeiling(t *testing.T) {
	s := newStack(t)
	s.startAggregator()
	fleet := s.startFleet(5)
	if out, err := runCLI("tenant", "set-plan", "--addr", s.http, "acme", "starter"); err != nil {
		t.Fatalf("set-plan starter: %v: %s", err, out)
	}
	// Every agent must know the plan before the rush.
	for _, fa := range fleet {
		waitFor(t, 20*time.Second, "agent knows acme", func() error {
			code, body, err := call("POST", "http://"+fa.api+"/v1/sessions", map[string]string{"tenant": "acme", "class": "audio", "session": "probe-" + fa.api})
			if err != nil {
				return err
			}
			if code == 201 {
				call("DELETE", "http://"+fa.api+"/v1/sessions/probe-"+fa.api, nil)
				return nil
			}
			return fmt.Errorf("probe: %d %s", code, body)
		})
	}

	var admitted atomic.Int64
	rush := func(tag string, perAgent int) (ceilingRefusals int64) {
		var wg sync.WaitGroup
		var refusedCeiling atomic.Int64
		errs := make(chan error, len(fleet)*perAgent)
		for ai, fa := range fleet {
			for w := 0; w < 4; w++ { // four callers per agent
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < perAgent; i += 4 {
						id := fmt.Sprintf("%s-%d-%d", tag, ai, i)
						deadline := time.Now().Add(30 * time.Second)
						for {
							code, body, err := call("POST", "http://"+fa.api+"/v1/sessions", map[string]string{"tenant": "acme", "class": "audio", "session": id})
							if err != nil {
								errs <- err
								return
							}
							var r struct{ Reason string }
							json.Unmarshal(body, &r)
							switch {
							case code == 201:
								admitted.Add(1)
							case code == 429 && r.Reason == "ceiling":
								refusedCeiling.Add(1)
							case code == 429 && r.Reason == "grant-timeout" && time.Now().Before(deadline):
								time.Sleep(10 * time.Millisecond)
								continue
							default:
								errs <- fmt.Errorf("open %s: %d %s", id, code, body)
								return
							}
							break
						}
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return refusedCeiling.Load()
	}

	refused := rush("a", 100)
	own := 0
	for _, fa := range fleet {
		own += ownSessions(t, fa.api, "acme")
	}
	t.Logf("starter: %d admitted, %d refused with ceiling; the agents' own lists hold %d", admitted.Load(), refused, own)
	if admitted.Load() != 100 || own != 100 {
		t.Fatalf("a strict ceiling of 100 across 5 agents: %d admitted, %d held by the agents; want exactly 100", admitted.Load(), own)
	}
	if refused != 400 {
		t.Fatalf("%d refused with ceiling, want the other 400", refused)
	}
	// The leader's view: the shares leased cover the 100 open, no more.
	out, err := runCLI("tenant", "show", "--addr", s.http, "-o", "json", "acme")
	if err != nil {
		t.Fatalf("tenant show: %v: %s", err, out)
	}
	var shown struct {
		Grants []struct {
			Pool            string
			Ceiling, Leased uint64
			Agents          map[string]uint64
		}
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil || len(shown.Grants) != 1 {
		t.Fatalf("tenant show -o json: %v: %s", err, out)
	}
	if g := shown.Grants[0]; g.Pool != "total" || g.Ceiling != 100 || g.Leased != 100 || len(g.Agents) == 0 {
		t.Fatalf("grants of acme: %+v; want the 100 of the total pool leased", g)
	}

	// Upgrade while the sessions run: every agent admits again.
	if out, err := runCLI("tenant", "set-plan", "--addr", s.http, "acme", "growth"); err != nil {
		t.Fatalf("set-plan growth: %v: %s", err, out)
	}
	for ai, fa := range fleet {
		n := 0
		waitFor(t, 20*time.Second, fmt.Sprintf("agent %d admits after the upgrade", ai), func() error {
			n++
			id := fmt.Sprintf("up-%d-%d", ai, n)
			code, body, err := call("POST", "http://"+fa.api+"/v1/sessions", map[string]string{"tenant": "acme", "class": "audio", "session": id})
			if err != nil {
				return err
			}
			if code != 201 {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
	}
	// And the new ceiling holds too: 1000 in all.
	admitted.Store(0)
	refused = rush("b", 250)
	own = 0
	for _, fa := range fleet {
		own += ownSessions(t, fa.api, "acme")
	}
	t.Logf("growth: %d more admitted, %d refused with ceiling; the agents hold %d", admitted.Load(), refused, own)
	if own != 1000 {
		t.Fatalf("growth (1000, strict): the agents hold %d sessions, want exactly 1000", own)
	}
}
