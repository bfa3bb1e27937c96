package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

// forwardedHeader marks a request one server forwarded to the leader, so
// it is never forwarded again (a leader that lost its role in between
// answers 503 instead of starting a loop).
const forwardedHeader = "X-Headroom-Forwarded"

// DefaultHoldTime is how long a write waits for a leader before 503.
const DefaultHoldTime = 7 * time.Second

// setReadHeaders tells a reader how fresh a local answer is.
func (s *Server) setReadHeaders(w http.ResponseWriter) {
	w.Header().Set("X-Headroom-Index", strconv.FormatUint(s.fsm.AppliedIndex(), 10))
	leader := s.advertised.HTTP
	if s.node.Raft.State() != raft.Leader {
		leader = ""
		if m, ok := s.node.LeaderMeta(); ok {
			leader = m.HTTP
		}
	}
	w.Header().Set("X-Headroom-Leader", leader)
}

// leaderOnly runs h on the leader. On a follower it forwards the request to
// the leader; while there is no leader it waits, with backoff, up to the
// hold time, then answers 503.
func (s *Server) leaderOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.hold)
		defer cancel()
		wait := 20 * time.Millisecond
		for {
			if s.node.Raft.State() == raft.Leader {
				h(w, r)
				return
			}
			if r.Header.Get(forwardedHeader) == "" {
				if m, ok := s.node.LeaderMeta(); ok && m.HTTP != "" {
					// Bounded by the hold time: a leader that is stopped
					// (SIGSTOP, a frozen VM) accepts the connection and never
					// answers, and must not hold the caller for as long.
					s.proxyTo(m.HTTP, w, r.WithContext(ctx))
					return
				}
			}
			select {
			case <-ctx.Done():
				jsonhttp.Error(w, http.StatusServiceUnavailable, fmt.Sprintf("no leader within %s; try again", s.hold))
				return
			case <-time.After(wait):
				wait = min(wait*2, 500*time.Millisecond)
			}
		}
	}
}

// consistentRead answers h locally, unless the request asks for
// ?consistent=true: then only a leader that has confirmed its leadership
// and applied everything committed before it (a barrier, once per term)
// answers; a follower forwards the request to the leader.
func (s *Server) consistentRead(h http.HandlerFunc) http.HandlerFunc {
	local := func(w http.ResponseWriter, r *http.Request) {
		s.setReadHeaders(w)
		h(w, r)
	}
	leader := s.leaderOnly(func(w http.ResponseWriter, r *http.Request) {
		if err := s.confirmLeadership(); err != nil {
			jsonhttp.Error(w, http.StatusServiceUnavailable, "leadership not confirmed: "+err.Error())
			return
		}
		local(w, r)
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("consistent"); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("consistent=%q: want true or false", v))
				return
			}
			if on {
				leader(w, r)
				return
			}
		}
		local(w, r)
	}
}

// barrier remembers the term in which this leader last ran a barrier.
type barrier struct {
	mu   sync.Mutex
	term uint64
}

func (b *barrier) done(term uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.term == term
}

func (b *barrier) set(term uint64) {
	b.mu.Lock()
	b.term = term
	b.mu.Unlock()
}

// confirmLeadership verifies that this server is still the leader and that
// it has applied everything committed before its term (its barrier).
func (s *Server) confirmLeadership() error {
	if err := s.node.Raft.VerifyLeader().Error(); err != nil {
		return err
	}
	if term := s.term(); !s.bar.done(term) {
		if err := s.node.Raft.Barrier(5 * time.Second).Error(); err != nil {
			return err
		}
		s.bar.set(term)
	}
	return nil
}

func (s *Server) proxyTo(leaderHTTP string, w http.ResponseWriter, r *http.Request) {
	target := &url.URL{Scheme: s.sec.scheme, Host: leaderHTTP}
	p := &httputil.ReverseProxy{
		Transport: s.sec.proxy,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(forwardedHeader, s.node.ID())
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil && !errors.Is(context.Cause(r.Context()), context.Canceled) {
				jsonhttp.Error(w, http.StatusServiceUnavailable, fmt.Sprintf(
					"the leader at %s did not answer within %s (stopped or overloaded): a write may or may not have been applied; read it back, then try again", leaderHTTP, s.hold))
				return
			}
			jsonhttp.Error(w, http.StatusBadGateway, fmt.Sprintf("forwarding to the leader at %s: %v", leaderHTTP, err))
		},
	}
	p.ServeHTTP(w, r)
}

// isNotLeader reports a Raft error that means "not the leader (any more)".
func isNotLeader(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress)
}
