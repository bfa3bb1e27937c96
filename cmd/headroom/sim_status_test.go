package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// fakeMediaAgent is an agent's local API as the simulator sees it: it admits
// every session, and it can lose the answers to opens it admitted and drop
// closes unanswered, as an agent restarting does.
type fakeMediaAgent struct {
	mu         sync.Mutex
	open       map[string][2]string // session -> tenant, class
	opens      int
	loseAnswer int // the next opens are admitted, then the connection is cut
	dropClose  int // the next closes are cut before they are done
}

func (f *fakeMediaAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cut := func() {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/reset":
		f.open = map[string][2]string{}
	case r.Method == "POST" && r.URL.Path == "/v1/sessions":
		var req struct{ Tenant, Class, Session string }
		json.NewDecoder(r.Body).Decode(&req)
		if _, ok := f.open[req.Session]; ok {
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"admitted":true}`)
			return
		}
		f.open[req.Session] = [2]string{req.Tenant, req.Class}
		f.opens++
		if f.loseAnswer > 0 {
			f.loseAnswer--
			cut()
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"admitted":true}`)
	case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/v1/sessions/"):
		if f.dropClose > 0 {
			f.dropClose--
			cut()
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/v1/sessions/")
		if _, ok := f.open[id]; !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		delete(f.open, id)
		io.WriteString(w, `{"duration_seconds":1}`)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// byTenantClass is what the fake agent holds, per tenant and class.
func (f *fakeMediaAgent) byTenantClass() map[string]map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[string]int{}
	for _, tc := range f.open {
		if out[tc[0]] == nil {
			out[tc[0]] = map[string]int{}
		}
		out[tc[0]][tc[1]]++
	}
	return out
}

// TestSimStatusCountsWhatTheAgentHolds runs the simulator against an agent
// that loses answers to opens and closes: once paused, the simulator's own
// counts (its status API) must be exactly what the agent holds, and it must
// open sessions again once resumed.
func TestSimStatusCountsWhatTheAgentHolds(t *testing.T) {
	fake := &fakeMediaAgent{open: map[string][2]string{}, loseAnswer: 5, dropClose: 5}
	agentSrv := httptest.NewServer(fake)
	defer agentSrv.Close()

	set := flag.NewFlagSet("sim", flag.ContinueOnError)
	for _, f := range simFlags() {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Parse([]string{"--scale", "0.05", "--session-scale", "1s", "--report", "0"}); err != nil {
		t.Fatal(err)
	}
	sim := newSim(cli.NewContext(newApp(), set, nil), strings.TrimPrefix(agentSrv.URL, "http://"), "")
	sim.out = io.Discard
	addr, stop, err := sim.serveStatus("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	status := func() simStatusJSON {
		t.Helper()
		code, body, err := call("GET", "http://"+addr+"/v1/status", nil)
		if err != nil || code != 200 {
			t.Fatalf("status: %d %s %v", code, body, err)
		}
		var st simStatusJSON
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor(t, 30*time.Second, "the agent losing every answer it was set to lose", func() error {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		if fake.loseAnswer > 0 || fake.dropClose > 0 || fake.opens < 50 {
			return fmt.Errorf("%d answers and %d closes still to lose, %d opens", fake.loseAnswer, fake.dropClose, fake.opens)
		}
		return nil
	})
	// Every lost answer to an open is a failed call; a cut close may not be
	// (net/http sends an idempotent request again once on a new connection).
	if st := status(); st.Failed < 5 {
		t.Errorf("the simulator saw %d failed calls, want at least the 5 opens whose answer was lost", st.Failed)
	}

	code, body, err := call("POST", "http://"+addr+"/v1/pause", nil)
	if err != nil || code != 200 {
		t.Fatalf("pause: %d %s %v", code, body, err)
	}
	st := status()
	if !st.Paused || st.InDoubt != 0 {
		t.Fatalf("after pause: paused %v, %d in doubt", st.Paused, st.InDoubt)
	}
	held := fake.byTenantClass()
	total := 0
	for _, tn := range st.Tenants {
		n := 0
		for class, k := range tn.ByClass {
			n += k
			if held[tn.Tenant][class] != k {
				t.Errorf("%s %s: the simulator counts %d, the agent holds %d", tn.Tenant, class, k, held[tn.Tenant][class])
			}
		}
		if n != tn.Open {
			t.Errorf("%s: open %d, by class %v", tn.Tenant, tn.Open, tn.ByClass)
		}
		for class, k := range held[tn.Tenant] {
			if tn.ByClass[class] != k {
				t.Errorf("%s %s: the agent holds %d, the simulator counts %d", tn.Tenant, class, k, tn.ByClass[class])
			}
		}
		total += n
	}
	if total != st.Open || total == 0 {
		t.Errorf("open %d, tenants sum to %d", st.Open, total)
	}

	fake.mu.Lock()
	before := fake.opens
	fake.mu.Unlock()
	if code, body, err := call("POST", "http://"+addr+"/v1/resume", nil); err != nil || code != 200 {
		t.Fatalf("resume: %d %s %v", code, body, err)
	}
	waitFor(t, 30*time.Second, "new opens after resume", func() error {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		if fake.opens == before {
			return fmt.Errorf("no open since the resume")
		}
		return nil
	})
	if st := status(); st.Paused {
		t.Errorf("still paused after resume")
	}
}
