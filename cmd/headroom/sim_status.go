package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

// The simulator's status API (--status-addr): what the stand-in media
// server itself holds open, the figure every aggregator must agree with once
// traffic stops, and a switch that stops and restarts its traffic.

// simStatusJSON is the body of GET /v1/status on the simulator.
type simStatusJSON struct {
	Agent   string          `json:"agent"`
	Paused  bool            `json:"paused"`
	Open    int             `json:"open"`
	InDoubt int             `json:"in_doubt"`     // opens whose answer was lost, being asked again
	Failed  int             `json:"failed_calls"` // calls to the agent that got no answer
	Tenants []simTenantJSON `json:"tenants"`
}

type simTenantJSON struct {
	Tenant  string         `json:"tenant"`
	Plan    string         `json:"plan"`
	Open    int            `json:"open"`
	ByClass map[string]int `json:"by_class"`
	Refused int            `json:"refused"`
}

func (s *simulator) status() simStatusJSON {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := simStatusJSON{Agent: s.agent, Paused: s.paused, InDoubt: s.inDoubt, Failed: s.failed, Tenants: []simTenantJSON{}}
	for i, sc := range s.scen {
		byClass := make(map[string]int, len(s.classCounts[i]))
		for c, n := range s.classCounts[i] {
			byClass[c] = n
		}
		st.Open += s.counts[i]
		st.Tenants = append(st.Tenants, simTenantJSON{Tenant: sc.Tenant, Plan: sc.Plan, Open: s.counts[i], ByClass: byClass, Refused: s.refused[i]})
	}
	return st
}

// pausing tells the run loop whether to skip this tick. Asked to pause, the
// loop opens and closes nothing more, settles the opens still in doubt, and
// counts as paused once none is left, so that its counts are then exactly
// the sessions the agent holds for it.
func (s *simulator) pausing(ctx context.Context) bool {
	s.mu.Lock()
	want := s.wantPause
	if !want {
		s.paused = false
	}
	s.mu.Unlock()
	if !want {
		return false
	}
	if len(s.doubtful) > 0 {
		s.settleDoubtful(ctx, time.Now())
	}
	s.mu.Lock()
	s.paused = len(s.doubtful) == 0
	s.mu.Unlock()
	return true
}

// serveStatus starts the status API on addr and returns the address it
// listens on and a function that stops it.
//
//	GET  /v1/status  simStatusJSON
//	POST /v1/pause   stop opening and closing sessions; answers once paused
//	                 (200), or 503 if opens are still in doubt after 10 s
//	POST /v1/resume  start again
//	GET  /healthz    200 while the simulator runs
func (s *simulator) serveStatus(addr string) (string, func(), error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		jsonhttp.Write(w, http.StatusOK, s.status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		jsonhttp.Write(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("POST /v1/pause", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.wantPause = true
		s.mu.Unlock()
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			st := s.status()
			if st.Paused {
				jsonhttp.Write(w, http.StatusOK, st)
				return
			}
			if time.Now().After(deadline) {
				jsonhttp.Error(w, http.StatusServiceUnavailable, fmt.Sprintf("pausing: %d opens still in doubt (is the agent at %s up?)", st.InDoubt, s.agent))
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
	mux.HandleFunc("POST /v1/resume", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.wantPause = false
		s.mu.Unlock()
		jsonhttp.Write(w, http.StatusOK, map[string]bool{"paused": false})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--status-addr: %w", err)
	}
	srv := &http.Server{Handler: jsonhttp.Errors(mux), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(s.out, "sim: status API: %v\n", err)
		}
	}()
	fmt.Fprintf(s.out, "sim: status API on http://%s/v1/status\n", ln.Addr())
	return ln.Addr().String(), func() { srv.Close() }, nil
}
