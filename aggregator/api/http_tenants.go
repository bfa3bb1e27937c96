package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

// operator names who made a change, from the request.
func operator(r *http.Request) string {
	o := r.Header.Get("X-Headroom-Operator")
	if len(o) > 256 {
		o = ""
	}
	if tk := requestToken(r); tk != nil {
		// With ACLs the token's accessor is who did it (never the secret);
		// the header, if any, is only a label beside it.
		if o != "" {
			return "token:" + tk.Accessor + " (" + o + ")"
		}
		return "token:" + tk.Accessor
	}
	if o != "" {
		return o
	}
	return r.RemoteAddr
}

// commit proposes a command on the leader and answers the error of one
// that failed: 400 for a command the state machine refused, 503 when
// leadership was lost, 500 otherwise. It returns nil then.
func (s *Server) commit(w http.ResponseWriter, kind fsm.CmdKind, c fsm.Command) (*fsm.ApplyResult, uint64) {
	data, err := fsm.EncodeCmd(kind, c)
	if err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err.Error())
		return nil, 0
	}
	f := s.node.Raft.Apply(data, 10*time.Second)
	if err := f.Error(); err != nil {
		code := http.StatusInternalServerError
		if isNotLeader(err) {
			code = http.StatusServiceUnavailable
		}
		jsonhttp.Error(w, code, fmt.Sprintf("not committed: %v", err))
		return nil, 0
	}
	res, _ := f.Response().(*fsm.ApplyResult)
	if res == nil {
		res = &fsm.ApplyResult{}
	}
	if res.Err != nil {
		code := http.StatusInternalServerError
		if errors.Is(res.Err, fsm.ErrRefused) {
			code = http.StatusBadRequest
		}
		jsonhttp.Error(w, code, res.Err.Error())
		return nil, 0
	}
	w.Header().Set("X-Headroom-Index", strconv.FormatUint(f.Index(), 10))
	return res, f.Index()
}

// resolveAt turns a request's "at" into an effective time: 0 for now.
// Empty means the default: an upgrade (higher monthly fee) now, a downgrade
// at the period's end.
func resolveAt(at string, now time.Time, from, to *plans.Plan) (int64, error) {
	switch at {
	case "":
		if from == nil || plans.DefaultEffective(*from, *to) == plans.Now {
			return 0, nil
		}
		fallthrough
	case string(plans.PeriodEnd):
		return plans.PeriodOf(now).End().UnixNano(), nil
	case string(plans.Now):
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return 0, fmt.Errorf(`at %q: want "now", "period-end" or an RFC 3339 time`, at)
	}
	if !t.After(now) {
		return 0, nil
	}
	return t.UnixNano(), nil
}

func (s *Server) handleSetPlan(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := plans.ValidateTenantID(id); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	var body struct {
		Plan string `json:"plan"`
		At   string `json:"at"`
	}
	if !jsonhttp.Decode(w, r, maxBody, &body) {
		return
	}
	var from, to *plans.Plan
	s.fsm.Read(func(st fsm.View) {
		if p, ok := st.Plan(body.Plan); ok {
			to = &p
		}
		if t := st.Tenant(id); t != nil {
			if p, ok := st.Plan(t.Plan); ok {
				from = &p
			}
		}
	})
	if to == nil {
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("unknown plan %q", body.Plan))
		return
	}
	stamp := s.stamp()
	at, err := resolveAt(body.At, time.Unix(0, stamp), from, to)
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, index := s.commit(w, fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: stamp, Tenant: id, Plan: body.Plan, At: at, Operator: operator(r)}); index == 0 {
		return
	}
	s.writeTenant(w, id)
}

func (s *Server) writeTenant(w http.ResponseWriter, id string) {
	var out fsm.TenantJSON
	found := false
	s.fsm.Read(func(st fsm.View) {
		if t := st.Tenant(id); t != nil {
			out, found = fsm.TenantJSONOf(st, t), true
		}
	})
	if !found {
		jsonhttp.Write(w, http.StatusOK, map[string]string{"deleted": id})
		return
	}
	jsonhttp.Write(w, http.StatusOK, out)
}

func (s *Server) handleSchedule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	out := []*fsm.ScheduledJSON{}
	found := false
	s.fsm.Read(func(st fsm.View) {
		found = st.Tenant(id) != nil
		if sc := st.Scheduled(id); sc != nil {
			out = append(out, fsm.ScheduledJSONOf(sc))
		}
	})
	if !found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", id))
		return
	}
	jsonhttp.Write(w, http.StatusOK, out)
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var sid uint64
	if v := r.URL.Query().Get("id"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("id=%q: want a scheduled change's id", v))
			return
		}
		sid = n
	}
	if _, index := s.commit(w, fsm.CmdCancel, &fsm.CancelCmd{Time: s.stamp(), Tenant: id, ID: sid, Operator: operator(r)}); index != 0 {
		s.writeTenant(w, id)
	}
}

func (s *Server) handleTenantOp(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if _, index := s.commit(w, fsm.CmdTenantOp, &fsm.TenantOpCmd{Time: s.stamp(), Tenant: id, Op: op, Operator: operator(r)}); index != 0 {
			s.writeTenant(w, id)
		}
	}
}

// AuditJSON is one element of GET /v1/audit.
type AuditJSON struct {
	Index    uint64 `json:"index"`
	Time     string `json:"time"`
	Tenant   string `json:"tenant,omitempty"`
	Kind     string `json:"kind"`
	Operator string `json:"operator,omitempty"`
	Before   string `json:"before,omitempty"`
	After    string `json:"after,omitempty"`
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tenant := q.Get("tenant")
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > fsm.MaxAudit {
			jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want 1 to %d", v, fsm.MaxAudit))
			return
		}
		limit = n
	}
	out := []AuditJSON{}
	s.fsm.Read(func(st fsm.View) {
		for i := len(st.Audit()) - 1; i >= 0 && len(out) < limit; i-- { // newest first
			e := st.Audit()[i]
			if tenant != "" && e.Tenant != tenant {
				continue
			}
			out = append(out, AuditJSON{Index: e.Index, Time: time.Unix(0, e.Time).UTC().Format(time.RFC3339Nano), Tenant: e.Tenant,
				Kind: e.Kind, Operator: e.Operator, Before: e.Before, After: e.After})
		}
	})
	jsonhttp.Write(w, http.StatusOK, out)
}

func (s *Server) handlePlan(w http.ResponseWriter, r *http.Request) {
	var p plans.Plan
	var ok bool
	s.fsm.Read(func(st fsm.View) { p, ok = st.Plan(r.PathValue("name")) })
	if !ok {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no plan %q", r.PathValue("name")))
		return
	}
	jsonhttp.Write(w, http.StatusOK, p)
}

func (s *Server) handlePutPlan(create bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p plans.Plan
		if !jsonhttp.Decode(w, r, maxBody, &p) {
			return
		}
		if name := r.PathValue("name"); !create && p.Name != name {
			if p.Name != "" {
				jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("plan name %q in the body differs from %q in the path", p.Name, name))
				return
			}
			p.Name = name
		}
		if err := p.Validate(); err != nil {
			jsonhttp.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		if _, index := s.commit(w, fsm.CmdPutPlan, &fsm.PutPlanCmd{Time: s.stamp(), Plan: p, Create: create, Operator: operator(r)}); index != 0 {
			code := http.StatusOK
			if create {
				code = http.StatusCreated
			}
			jsonhttp.Write(w, code, p)
		}
	}
}

func (s *Server) handleDeletePlan(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, index := s.commit(w, fsm.CmdDeletePlan, &fsm.DeletePlanCmd{Time: s.stamp(), Name: name, Operator: operator(r)}); index != 0 {
		jsonhttp.Write(w, http.StatusOK, map[string]string{"deleted": name})
	}
}
