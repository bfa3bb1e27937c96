package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// Paths at which the aggregator mounts StatsHandler and RemovePeerHandler;
// servers call each other there.
const (
	StatsPath      = "/v1/raft/stats"
	RemovePeerPath = "/v1/raft/remove-peer"
)

// RaftStats is one server's view of Raft, as served by StatsHandler.
type RaftStats struct {
	ID           string `json:"id"`
	State        string `json:"state"` // Follower, Candidate, Leader, Shutdown
	LeaderID     string `json:"leader_id"`
	Term         uint64 `json:"term"`
	LastLogIndex uint64 `json:"last_log_index"` // last index in the log or the latest snapshot
	LastLogTerm  uint64 `json:"last_log_term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// LastContactMs is the time since the leader last contacted this
	// server, in milliseconds: 0 on the leader, -1 if never.
	LastContactMs float64 `json:"last_contact_ms"`
}

// Stats returns this server's Raft stats. It does not block on the
// network.
func (n *Node) Stats() RaftStats {
	s := n.Raft.Stats()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(s[k], 10, 64); return v }
	_, leader := n.Raft.LeaderWithID()
	st := RaftStats{
		ID: string(n.id), State: s["state"], LeaderID: string(leader),
		Term: u("term"), LastLogIndex: n.Raft.LastIndex(), LastLogTerm: u("last_log_term"),
		CommitIndex: u("commit_index"), AppliedIndex: u("applied_index"),
	}
	switch last := n.Raft.LastContact(); {
	case n.Raft.State() == raft.Leader:
		st.LastContactMs = 0
	case last.IsZero():
		st.LastContactMs = -1
	default:
		st.LastContactMs = float64(time.Since(last).Microseconds()) / 1000
	}
	return st
}

// hasState reports whether the server holds any Raft state (it was
// bootstrapped or has heard from a cluster).
func (s RaftStats) hasState() bool { return s.Term > 0 || s.LastLogIndex > 0 }

func (s RaftStats) autopilot() *autopilot.ServerStats {
	lc := time.Duration(s.LastContactMs * float64(time.Millisecond))
	if s.LastContactMs < 0 {
		lc = -1
	}
	return &autopilot.ServerStats{LastContact: lc, LastTerm: s.LastLogTerm, LastIndex: s.LastLogIndex}
}

// StatsHandler serves this server's RaftStats as JSON on GET; the
// aggregator mounts it at StatsPath. The leader's autopilot reads it from
// every server to judge their health, and a server about to bootstrap a
// new cluster reads it to check that none of its peers is in one already.
func (n *Node) StatsHandler() http.Handler {
	return n.serversOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
			return
		}
		writeJSON(w, http.StatusOK, n.Stats())
	}))
}

// fetchStats reads the RaftStats of the server whose HTTP API is at
// httpAddr.
func (n *Node) fetchStats(ctx context.Context, httpAddr string) (RaftStats, error) {
	var st RaftStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.scheme+"://"+httpAddr+StatsPath, nil)
	if err != nil {
		return st, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s%s: %s", httpAddr, StatsPath, resp.Status)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%s%s: %w", httpAddr, StatsPath, err)
	}
	return st, nil
}

type errorBody struct {
	Error    string `json:"error"`
	LeaderID string `json:"leader_id,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
