package api

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/aggregator/web"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

const maxBody = 64 << 10

func (s *Server) Handler() http.Handler {
	mux := s.mux()
	return s.instrument(mux, s.aclGate(mux, jsonhttp.Errors(mux)))
}

// mux registers every route of the API.
func (s *Server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET /v1/tenants", s.consistentRead(s.handleTenants))
	mux.HandleFunc("GET /v1/tenants/{id}", s.consistentRead(s.handleTenant))
	mux.HandleFunc("PUT /v1/tenants/{id}/plan", s.leaderOnly(s.handleSetPlan))
	mux.HandleFunc("GET /v1/tenants/{id}/usage", s.consistentRead(s.handleUsage))
	mux.HandleFunc("GET /v1/tenants/{id}/advice", s.consistentRead(s.handleAdvice))
	mux.HandleFunc("GET /v1/tenants/{id}/history", s.consistentRead(s.handleHistory))
	mux.HandleFunc("GET /v1/tenants/{id}/schedule", s.consistentRead(s.handleSchedule))
	mux.HandleFunc("DELETE /v1/tenants/{id}/schedule", s.leaderOnly(s.handleCancel))
	mux.HandleFunc("POST /v1/tenants/{id}/suspend", s.leaderOnly(s.handleTenantOp("suspend")))
	mux.HandleFunc("POST /v1/tenants/{id}/resume", s.leaderOnly(s.handleTenantOp("resume")))
	mux.HandleFunc("DELETE /v1/tenants/{id}", s.leaderOnly(s.handleTenantOp("delete")))
	mux.HandleFunc("GET /v1/audit", s.consistentRead(s.handleAudit))
	mux.HandleFunc("GET /v1/plans", s.consistentRead(s.handlePlans))
	mux.HandleFunc("GET /v1/plans/{name}", s.consistentRead(s.handlePlan))
	mux.HandleFunc("POST /v1/plans", s.leaderOnly(s.handlePutPlan(true)))
	mux.HandleFunc("PUT /v1/plans/{name}", s.leaderOnly(s.handlePutPlan(false)))
	mux.HandleFunc("DELETE /v1/plans/{name}", s.leaderOnly(s.handleDeletePlan))
	mux.HandleFunc("GET /v1/agents", s.consistentRead(s.handleAgents))
	mux.HandleFunc("GET /v1/export/invoices", s.consistentRead(s.handleExportInvoices))
	mux.HandleFunc("GET /v1/openapi.json", handleOpenAPI)
	mux.Handle("GET /v1/events", s.events)
	mux.Handle("GET /metrics", s.metrics.handler())
	s.opsRoutes(mux)
	web.Routes(mux)
	s.aclRoutes(mux)
	return mux
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if ok, why := s.Ready(); !ok {
		jsonhttp.Error(w, http.StatusServiceUnavailable, why)
		return
	}
	jsonhttp.Write(w, http.StatusOK, map[string]string{"status": "ok"})
}

// StatusJSON is the body of GET /v1/status.
type StatusJSON struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	LeaderID     string `json:"leader_id"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastSnapshotIndex is the index of this server's latest snapshot.
	LastSnapshotIndex uint64   `json:"last_snapshot_index"`
	Voters            []string `json:"voters"`
	HTTPAddr          string   `json:"http_addr"`
	WireAddr          string   `json:"wire_addr"`
	RaftAddr          string   `json:"raft_addr"`
	Agents            int      `json:"agents_connected"`
	// Insecure lists what the server exposes unprotected beyond its own
	// machine, e.g. "http plaintext on 0.0.0.0:9370" (empty when nothing).
	Insecure []string `json:"insecure"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	rf := s.node.Raft
	leader, leaderID := rf.LeaderWithID()
	st := StatusJSON{
		ID: s.node.ID(), State: raftState(rf.State()), Leader: string(leader), LeaderID: string(leaderID),
		AppliedIndex: s.fsm.AppliedIndex(), CommitIndex: rf.CommitIndex(), LastIndex: rf.LastIndex(),
		HTTPAddr: s.HTTPAddr(), WireAddr: s.WireAddr(), RaftAddr: s.RaftAddr(), Voters: []string{},
		Insecure: s.Insecure(),
	}
	stats := rf.Stats()
	st.Term, _ = strconv.ParseUint(stats["term"], 10, 64)
	st.LastSnapshotIndex, _ = strconv.ParseUint(stats["last_snapshot_index"], 10, 64)
	if f := rf.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				st.Voters = append(st.Voters, string(srv.ID))
			}
		}
	}
	st.Agents = s.st.Agents()
	jsonhttp.Write(w, http.StatusOK, st)
}

// raftState names a Raft state in lower case.
func raftState(st raft.RaftState) string {
	switch st {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

func (s *Server) handleTenant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	period := r.URL.Query().Get("period")
	if period == "" {
		period = plans.PeriodOf(s.cfg.Now()).String()
	} else if _, err := plans.ParsePeriod(period); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	var (
		out   fsm.TenantJSON
		found bool
	)
	s.fsm.Read(func(st fsm.View) {
		t := st.Tenant(id)
		if t == nil {
			return
		}
		found = true
		out = fsm.TenantJSONOf(st, t)
		out.Usage = fsm.TenantUsageJSONOf(st, t, period)
		out.Grants = fsm.GrantsJSONOf(st, t, s.cfg.Now().UnixNano(), int64(s.cfg.GrantMargin))
		out.AdmittedOverCeiling = t.AdmittedOver
	})
	if !found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", id))
		return
	}
	jsonhttp.Write(w, http.StatusOK, out)
}

func sortPlans(ps []plans.Plan) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}

func (s *Server) handlePlans(w http.ResponseWriter, r *http.Request) {
	var out []plans.Plan
	s.fsm.Read(func(st fsm.View) {
		for _, p := range st.Plans() {
			out = append(out, p)
		}
	})
	sortPlans(out)
	jsonhttp.Write(w, http.StatusOK, out)
}

// AgentJSON is one element of GET /v1/agents.
type AgentJSON struct {
	ID       string `json:"id"`
	Epoch    uint64 `json:"epoch"`
	LastSeq  uint64 `json:"last_seq"`
	Region   string `json:"region,omitempty"`
	LastSeen string `json:"last_seen"`
	Tenants  int    `json:"tenants"`
	Sessions uint64 `json:"sessions"`
	Expired  bool   `json:"expired"`
	// UnackedBatches is, for an agent streaming to this server (the
	// leader), the batches it sent that the cluster has not acknowledged
	// yet; absent for the others.
	UnackedBatches *uint64 `json:"unacked_batches,omitempty"`
}

func (s *Server) handleAgents(w http.ResponseWriter, r *http.Request) {
	var out []AgentJSON
	s.fsm.Read(func(st fsm.View) {
		out = make([]AgentJSON, 0, st.NumAgents())
		for _, a := range st.Agents() {
			j := AgentJSON{ID: a.ID, Epoch: a.Epoch, LastSeq: a.LastSeq, Region: a.Region,
				LastSeen: time.Unix(0, a.LastSeen).UTC().Format(time.RFC3339Nano), Tenants: len(a.Counts), Expired: a.Expired}
			for _, c := range a.Counts {
				j.Sessions += c.Total()
			}
			out = append(out, j)
		}
	})
	for i := range out {
		if n, ok := s.st.Unacked(out[i].ID); ok {
			out[i].UnackedBatches = &n
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	jsonhttp.Write(w, http.StatusOK, out)
}
