package aggregator

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

// DayJSON is one day of a tenant's usage.
type DayJSON struct {
	Date           string             `json:"date"`
	Peak           uint64             `json:"peak"`
	SecondsByClass map[string]float64 `json:"seconds_by_class"`
	Refused        uint64             `json:"refused"`
}

// UsageReportJSON is the body of GET /v1/tenants/{id}/usage.
type UsageReportJSON struct {
	Tenant string `json:"tenant"`
	UsageJSON
	Days         []DayJSON      `json:"days"`
	Invoice      *plans.Invoice `json:"invoice,omitempty"`
	InvoiceError string         `json:"invoice_error,omitempty"`
}

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

// tenantUsage gathers what billing and advice need of one tenant and
// period, under the read lock: the plans held, the usage in time order and
// the days.
type tenantUsage struct {
	found   bool
	current plans.Plan
	held    []plans.Holding
	slices  []plans.UsageSlice
	days    []plans.DayUsage
	report  UsageReportJSON
	heldErr error
}

func (s *Server) gatherUsage(id string, p plans.Period) tenantUsage {
	var tu tenantUsage
	s.fsm.read(func(st *State) {
		t := st.Tenants[id]
		if t == nil {
			return
		}
		tu.found = true
		tu.current = st.Plans[t.Plan]
		tu.report = UsageReportJSON{Tenant: id, UsageJSON: *usageJSON(t, p.String()), Days: []DayJSON{}}
		tu.held, tu.heldErr = holdings(st, t, p)
		u := t.Usage[p.String()]
		if u == nil {
			return
		}
		var micros []classCounts // per day
		for _, b := range u.Buckets {
			at := time.Unix(0, b.From).UTC()
			day := int(at.Sub(p.Start()) / (24 * time.Hour))
			for len(tu.days) <= day {
				tu.days = append(tu.days, plans.DayUsage{})
				micros = append(micros, classCounts{})
			}
			d := &tu.days[day]
			d.Peak = max(d.Peak, b.Peak)
			d.Refused += b.Refused
			for c, m := range b.Micros {
				micros[day][c] += m
				if m > 0 {
					tu.slices = append(tu.slices, plans.UsageSlice{At: at, Class: plans.Class(c + 1), Micros: m})
				}
			}
		}
		for i := range tu.days {
			d := &tu.days[i]
			dj := DayJSON{Date: p.Start().AddDate(0, 0, i).Format("2006-01-02"), Peak: d.Peak, Refused: d.Refused, SecondsByClass: map[string]float64{}}
			for c, m := range micros[i] {
				d.Minutes[c] = m / 60_000_000
				dj.SecondsByClass[plans.Class(c+1).String()] = float64(m) / 1e6
			}
			tu.report.Days = append(tu.report.Days, dj)
		}
	})
	return tu
}

// holdings lists the plans a tenant held over the period, from its plan
// history (a tenant without history held its current plan all along).
func holdings(st *State, t *Tenant, p plans.Period) ([]plans.Holding, error) {
	start, end := p.Start(), p.End()
	var out []plans.Holding
	add := func(name string, from, to time.Time) error {
		if !from.Before(to) {
			return nil
		}
		pl, ok := st.Plans[name]
		if !ok {
			return fmt.Errorf("plan %q held from %s is no longer in the catalogue", name, from.Format(time.RFC3339))
		}
		out = append(out, plans.Holding{Plan: pl, From: from, To: to})
		return nil
	}
	if len(t.History) == 0 {
		if t.Plan == "" {
			return nil, fmt.Errorf("tenant %q is on no plan", t.Name)
		}
		return out, add(t.Plan, start, end)
	}
	for i, h := range t.History {
		from := time.Unix(0, h.From).UTC()
		to := end
		if i+1 < len(t.History) {
			to = time.Unix(0, t.History[i+1].From).UTC()
		}
		if err := add(h.Plan, maxTime(from, start), minTime(to, end)); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tenant %q held no plan in %s", t.Name, p)
	}
	return out, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// handleUsage answers a tenant's usage of a period with its daily figures
// and the invoice under the plans held, line by line.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	p, ok := s.periodParam(w, r)
	if !ok {
		return
	}
	tu := s.gatherUsage(r.PathValue("id"), p)
	if !tu.found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", r.PathValue("id")))
		return
	}
	rep := tu.report
	if tu.heldErr != nil {
		rep.InvoiceError = tu.heldErr.Error()
	} else if inv, err := plans.Bill(p, tu.held, tu.slices); err != nil {
		rep.InvoiceError = err.Error()
	} else {
		rep.Invoice = &inv
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
	if !tu.found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", r.PathValue("id")))
		return
	}
	if tu.current.Name == "" {
		jsonhttp.Error(w, http.StatusConflict, fmt.Sprintf("tenant %q is on no plan", r.PathValue("id")))
		return
	}
	var catalogue []plans.Plan
	s.fsm.read(func(st *State) {
		for _, pl := range st.Plans {
			catalogue = append(catalogue, pl)
		}
	})
	sortPlans(catalogue)
	asOf := s.cfg.Now()
	if asOf.After(p.End()) {
		asOf = p.End()
	}
	adv := plans.Advise(plans.AdviceInput{Current: tu.current, Period: p, AsOf: asOf, Days: tu.days, HeadroomPct: uint32(headroom)}, catalogue)
	jsonhttp.Write(w, http.StatusOK, adv)
}
