package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Invariant 4 of DESIGN.md, checked: concurrent clients put one tenant on
// plans now, schedule and cancel changes and read the tenant with
// ?consistent=true through every server, while servers are killed (-9) and
// stopped (SIGSTOP); the history, with every call's invocation and response
// time, is checked with porcupine against a sequential model of the tenant's
// plan and scheduled change. A call that got no definite answer (a timeout, a
// 5xx) may or may not have taken effect: it is kept with an open end.

// linOp is one call of the history.
type linOp struct {
	Kind string // "set", "schedule", "cancel", "read"
	Plan string // set, schedule
	At   string // schedule: RFC 3339
}

// linOut is a call's answer; Unknown when it got none that is definite.
type linOut struct {
	Unknown bool
	Refused bool   // the server was not reached (connection refused): no effect, no answer
	Code    int    // the HTTP status
	OK      bool   // set, schedule, cancel: applied (cancel: there was a change)
	Plan    string // read
	Sched   string // read: "plan@at" or ""
}

// linState is the model: the tenant's plan and scheduled change.
type linState struct{ Plan, Sched string }

var planModel = porcupine.Model{
	Init: func() any { return linState{Plan: "payg"} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(linState), input.(linOp), output.(linOut)
		next := st
		switch in.Kind {
		case "set":
			next = linState{Plan: in.Plan}
		case "schedule":
			next = linState{Plan: st.Plan, Sched: in.Plan + "@" + in.At}
		case "cancel":
			if out.Unknown {
				return true, linState{Plan: st.Plan}
			}
			if out.OK != (st.Sched != "") {
				return false, st
			}
			next = linState{Plan: st.Plan}
		case "read":
			if out.Unknown {
				return true, st
			}
			return out.Plan == st.Plan && out.Sched == st.Sched, st
		}
		if out.Unknown {
			return true, next
		}
		if !out.OK { // refused (4xx): no effect
			return true, st
		}
		return true, next
	},
	Equal: func(a, b any) bool { return a.(linState) == b.(linState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linOp), output.(linOut)
		res := fmt.Sprintf("%v", out.OK)
		if out.Unknown {
			res = "?"
		} else if in.Kind == "read" {
			res = out.Plan + " " + out.Sched
		}
		switch in.Kind {
		case "set":
			return fmt.Sprintf("set(%s) → %s", in.Plan, res)
		case "schedule":
			return fmt.Sprintf("schedule(%s@%s) → %s", in.Plan, in.At, res)
		case "cancel":
			return "cancel() → " + res
		}
		return "read() → " + res
	},
	DescribeState: func(s any) string { st := s.(linState); return st.Plan + " " + st.Sched },
}

// linCall runs one operation against server s.
func linCall(c *http.Client, s *hServer, tenant string, in linOp) linOut {
	var code int
	var body []byte
	var err error
	switch in.Kind {
	case "set":
		code, body, _, err = callWith(c, "PUT", s.url("/v1/tenants/"+tenant+"/plan"), map[string]string{"plan": in.Plan, "at": "now"})
	case "schedule":
		code, body, _, err = callWith(c, "PUT", s.url("/v1/tenants/"+tenant+"/plan"), map[string]string{"plan": in.Plan, "at": in.At})
	case "cancel":
		code, body, _, err = callWith(c, "DELETE", s.url("/v1/tenants/"+tenant+"/schedule"), nil)
	case "read":
		code, body, _, err = callWith(c, "GET", s.url("/v1/tenants/"+tenant+"?consistent=true"), nil)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return linOut{Refused: true}
	}
	// Answers that say the write never reached a leader: no effect.
	if (code == 503 && strings.Contains(string(body), "no leader within")) ||
		(code == 502 && strings.Contains(string(body), "connection refused")) {
		return linOut{Refused: true}
	}
	if err != nil || code >= 500 {
		return linOut{Unknown: true, Code: code}
	}
	switch in.Kind {
	case "read":
		if code != 200 {
			return linOut{Unknown: true}
		}
		var f struct {
			Plan      string `json:"plan"`
			Scheduled *struct {
				Plan string `json:"plan"`
				At   string `json:"at"`
			} `json:"scheduled"`
		}
		if json.Unmarshal(body, &f) != nil {
			return linOut{Unknown: true}
		}
		out := linOut{OK: true, Plan: f.Plan}
		if f.Scheduled != nil {
			at, err := time.Parse(time.RFC3339, f.Scheduled.At)
			if err != nil {
				return linOut{Unknown: true}
			}
			out.Sched = f.Scheduled.Plan + "@" + at.UTC().Format(time.RFC3339)
		}
		return out
	}
	return linOut{OK: code == 200, Code: code}
}

func TestLinearizablePlanChanges(t *testing.T) {
	minOps := 1000
	if v := os.Getenv("HEADROOM_LIN_OPS"); v != "" {
		fmt.Sscan(v, &minOps)
	}
	c := newCluster(t, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	const tenant = "lin-t"
	c.setPlans([]string{tenant}, "payg")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	var (
		mu       sync.Mutex
		history  []porcupine.Operation
		done     atomic.Bool
		n        atomic.Int64
		unknown  atomic.Int64
		refusals = map[string]int{}
	)
	begin := time.Now()
	stamp := func() int64 { return int64(time.Since(begin)) }
	planNames := []string{"payg", "starter", "growth", "scale"}
	const clients = 5
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(seed, uint64(cl)))
			hc := &http.Client{Timeout: 10 * time.Second}
			for !done.Load() {
				var in linOp
				switch r := rng.IntN(10); {
				case r < 3:
					in = linOp{Kind: "set", Plan: planNames[rng.IntN(len(planNames))]}
				case r < 5:
					in = linOp{Kind: "schedule", Plan: planNames[rng.IntN(len(planNames))],
						At: time.Date(2099, 1, 1, 0, rng.IntN(1000), 0, 0, time.UTC).Format(time.RFC3339)}
				case r < 6:
					in = linOp{Kind: "cancel"}
				default:
					in = linOp{Kind: "read"}
				}
				s := c.servers[rng.IntN(len(c.servers))]
				if !s.p.running() {
					continue
				}
				call := stamp()
				out := linCall(hc, s, tenant, in)
				ret := stamp()
				if out.Refused || (out.Unknown && in.Kind == "read") {
					continue // no effect, and nothing learnt
				}
				if !out.Unknown && !out.OK {
					mu.Lock()
					refusals[fmt.Sprintf("%s %d", in.Kind, out.Code)]++
					mu.Unlock()
				}
				if out.Unknown {
					mu.Lock()
					refusals[fmt.Sprintf("unknown %s %d", in.Kind, out.Code)]++
					mu.Unlock()
					unknown.Add(1)
					// It may take effect at any time after its call.
					ret = math.MaxInt64
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: cl, Input: in, Output: out, Call: call, Return: ret})
				mu.Unlock()
				n.Add(1)
				time.Sleep(time.Duration(10+rng.IntN(20)) * time.Millisecond) // a client's think time
			}
		}()
	}
	// The nemesis: kill -9 or stop a server (the leader half the time),
	// restart or resume it, until enough calls are done.
	rng := mrand.New(mrand.NewPCG(seed, 99))
	faults := map[string]int{}
	for n.Load() < int64(minOps) || faults["kill"] < 2 || faults["pause"] < 2 {
		var victim *hServer
		if lead, _, err := c.leader(c.servers); err == nil && rng.IntN(2) == 0 {
			victim = lead
		} else {
			victim = c.servers[rng.IntN(len(c.servers))]
		}
		d := time.Duration(200+rng.IntN(2500)) * time.Millisecond
		if rng.IntN(2) == 0 {
			faults["kill"]++
			c.tl.mark("kill -9 %s for %s (%d calls so far)", victim.name, d, n.Load())
			victim.p.kill()
			time.Sleep(d) // the fault is a length of time
			victim.p.restart()
		} else {
			faults["pause"]++
			c.tl.mark("SIGSTOP %s for %s (%d calls so far)", victim.name, d, n.Load())
			pause(t, victim.p, d)
		}
		c.waitLeader(60*time.Second, c.servers)
		time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond) // calls between faults
	}
	done.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	c.tl.mark("%d calls (%d writes without a definite answer; refusals %v) under %d kills and %d pauses", len(history), unknown.Load(), refusals, faults["kill"], faults["pause"])
	res, info := porcupine.CheckOperationsVerbose(planModel, history, 2*time.Minute)
	out := filepath.Join(os.TempDir(), fmt.Sprintf("headroom-linearizability-%d.html", seed))
	if res != porcupine.Ok {
		if dir := os.Getenv("HEADROOM_KEEP_LOGS"); dir != "" {
			out = filepath.Join(dir, filepath.Base(out))
		}
		if err := porcupine.VisualizePath(planModel, info, out); err != nil {
			t.Logf("writing the visualisation: %v", err)
		}
		t.Logf("the shortest illegal prefix ends:\n%s", illegalPrefix(history))
		t.Fatalf("history of %d calls: %s; porcupine's visualisation in %s", len(history), res, out)
	}
	c.tl.mark("porcupine: the history of %d calls is linearizable", len(history))
}

// illegalPrefix finds the shortest prefix (by invocation) of an illegal
// history that is illegal too, and describes its last calls and those
// overlapping them: where to look first.
func illegalPrefix(h []porcupine.Operation) string {
	h = append([]porcupine.Operation(nil), h...)
	sort.Slice(h, func(i, j int) bool { return h[i].Call < h[j].Call })
	lo, hi := 1, len(h) // h[:hi] is illegal
	for lo < hi {
		mid := (lo + hi) / 2
		if porcupine.CheckOperations(planModel, h[:mid]) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	last := h[hi-1]
	var b strings.Builder
	for _, op := range h[:hi] {
		if op.Return >= last.Call-int64(200*time.Millisecond) || op.Call >= last.Call-int64(200*time.Millisecond) {
			ret := "∞"
			if op.Return != math.MaxInt64 {
				ret = fmt.Sprintf("%.3f", float64(op.Return)/1e9)
			}
			fmt.Fprintf(&b, "  client %d [%.3f, %s] %s\n", op.ClientId, float64(op.Call)/1e9, ret, planModel.DescribeOperation(op.Input, op.Output))
		}
	}
	return b.String()
}
