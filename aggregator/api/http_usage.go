package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

// periodParam reads ?period= (default: the current one).
func (s *Server) periodParam(w http.ResponseWriter, r *http.Request) (plans.Period, bool) {
	v := r.URL.Query().Get("period")
	if v == "" {
		return plans.PeriodOf(s.cfg.Now()), true
	}
	p, err := plans.ParsePeriod(v)
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return p, false
	}
	return p, true
}

// handleUsage answers a tenant's usage of a period with its daily figures
// and the invoice under the plans held, line by line.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	p, ok := s.periodParam(w, r)
	if !ok {
		return
	}
	tu := s.gatherUsage(r.PathValue("id"), p)
	if !tu.Found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", r.PathValue("id")))
		return
	}
	rep := tu.Report
	if inv, err := tu.Invoice(p); err != nil {
		rep.InvoiceError = err.Error()
	} else {
		rep.Invoice = inv
	}
	jsonhttp.Write(w, http.StatusOK, rep)
}

// handleAdvice judges a tenant's plan against every plan of the catalogue.
func (s *Server) handleAdvice(w http.ResponseWriter, r *http.Request) {
	p, ok := s.periodParam(w, r)
	if !ok {
		return
	}
	var headroom uint64
	if v := r.URL.Query().Get("headroom"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 1 || n > 1000 {
			jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("headroom=%q: want a percentage from 1 to 1000", v))
			return
		}
		headroom = n
	}
	tu := s.gatherUsage(r.PathValue("id"), p)
	if !tu.Found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", r.PathValue("id")))
		return
	}
	if tu.Current.Name == "" {
		jsonhttp.Error(w, http.StatusConflict, fmt.Sprintf("tenant %q is on no plan", r.PathValue("id")))
		return
	}
	var catalogue []plans.Plan
	s.fsm.Read(func(st fsm.View) {
		for _, pl := range st.Plans() {
			catalogue = append(catalogue, pl)
		}
	})
	sortPlans(catalogue)
	asOf := s.cfg.Now()
	if asOf.After(p.End()) {
		asOf = p.End()
	}
	adv := plans.Advise(plans.AdviceInput{Current: tu.Current, Period: p, AsOf: asOf, Days: tu.Days, HeadroomPct: uint32(headroom),
		ObservedFrom: tu.ObservedFrom, Previous: tu.Previous, MAU: tu.Report.MAU, PeakDAU: tu.Report.PeakDAU}, catalogue)
	jsonhttp.Write(w, http.StatusOK, adv)
}

// gatherUsage gathers tenant id's usage of period p under the read lock.
func (s *Server) gatherUsage(id string, p plans.Period) fsm.TenantUsage {
	var tu fsm.TenantUsage
	s.fsm.Read(func(st fsm.View) { tu = fsm.GatherUsage(st, id, p) })
	return tu
}
