package api

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

// The invoice export: every tenant's invoice of a period, line by line, as
// CSV or JSON, for finance. Each tenant's invoice is the one GET
// /v1/tenants/{id}/usage computes (gatherUsage, then tenantUsage.invoice),
// written as soon as it is computed: the answer streams, tenant by tenant in
// id order, whatever their number. Tenants that held no plan and had no
// usage in the period are left out; one with usage but no invoice (on no
// plan, say) gets a line of kind "error" saying why.
//
// A closed period's usage never changes (fsm/metering.go), nor do the plans its
// tenants held, so neither does its export. Invoices are billed from the
// day-by-day usage, which the state keeps for the current and the previous
// period only: an older period is refused (409) rather than billed without
// its usage.

// exportColumns is the CSV header row.
var exportColumns = []string{"period", "tenant", "line", "kind", "plan", "class", "from", "to", "quantity", "unit", "rate_micros", "amount_micros", "detail"}

// InvoiceExportJSON is one tenant of the JSON export.
type InvoiceExportJSON struct {
	Tenant  string         `json:"tenant"`
	Invoice *plans.Invoice `json:"invoice,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// InvoicesExportJSON is the body of GET /v1/export/invoices?format=json.
type InvoicesExportJSON struct {
	Period string `json:"period"`
	// Closed: the period is closed; its invoices never change.
	Closed   bool                `json:"closed"`
	Invoices []InvoiceExportJSON `json:"invoices"`
}

func (s *Server) handleExportInvoices(w http.ResponseWriter, r *http.Request) {
	p, ok := s.periodParam(w, r)
	if !ok {
		return
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "json"
	}
	if format != "csv" && format != "json" {
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("format=%q: want csv or json", format))
		return
	}
	var names []string
	var closed bool
	var now plans.Period
	s.fsm.Read(func(st fsm.View) {
		now = plans.PeriodOf(time.Unix(0, st.Time()))
		closed = st.PeriodClosed(p.String())
		names = make([]string, 0, st.NumTenants())
		for n := range st.Tenants() {
			names = append(names, n)
		}
	})
	switch {
	case p.String() < now.Prev().String():
		jsonhttp.Error(w, http.StatusConflict, fmt.Sprintf("the invoices of %s can no longer be computed: the day-by-day usage they are billed from is kept for the current and the previous period only (%s, %s)", p, now, now.Prev()))
		return
	case p.String() > now.String():
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("period %s has not begun (the current one is %s)", p, now))
		return
	}
	slices.Sort(names)
	h := w.Header()
	h.Set("X-Headroom-Period-Closed", strconv.FormatBool(closed))
	if format == "csv" {
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="invoices-%s.csv"`, p))
	} else {
		h.Set("Content-Type", "application/json")
	}
	rc := http.NewResponseController(w)
	cw := csv.NewWriter(w)
	if format == "csv" {
		cw.Write(exportColumns)
	} else {
		fmt.Fprintf(w, `{"period":%q,"closed":%t,"invoices":[`, p.String(), closed)
	}
	n := 0
	for _, name := range names {
		tu := s.gatherUsage(name, p)
		if !tu.Found {
			continue // deleted meanwhile
		}
		inv, err := tu.Invoice(p)
		if err != nil && len(tu.Slices) == 0 {
			continue // held no plan and used nothing in the period
		}
		if n%1000 == 0 {
			rc.SetWriteDeadline(time.Now().Add(30 * time.Second)) // the whole export may take longer than one
		}
		if format == "csv" {
			writeInvoiceCSV(cw, p.String(), name, inv, err)
			if n%256 == 255 {
				cw.Flush()
			}
		} else {
			j := InvoiceExportJSON{Tenant: name, Invoice: inv}
			if err != nil {
				j.Error = err.Error()
			}
			b, _ := json.Marshal(j)
			if n > 0 {
				w.Write([]byte{','})
			}
			w.Write(b)
		}
		n++
	}
	if format == "csv" {
		cw.Flush()
	} else {
		w.Write([]byte("]}\n"))
	}
}

// writeInvoiceCSV writes a tenant's invoice lines, or one line of kind
// "error" saying why it has none.
func writeInvoiceCSV(cw *csv.Writer, period, tenant string, inv *plans.Invoice, err error) {
	if err != nil {
		cw.Write([]string{period, tenant, "0", "error", "", "", "", "", "", "", "", "", err.Error()})
		return
	}
	for i, l := range inv.Lines {
		cw.Write([]string{period, tenant, strconv.Itoa(i + 1), string(l.Kind), l.Plan, l.Class,
			l.From.UTC().Format(time.RFC3339), l.To.UTC().Format(time.RFC3339),
			strconv.FormatUint(l.Quantity, 10), l.Unit, strconv.FormatInt(int64(l.Rate), 10), strconv.FormatInt(int64(l.Amount), 10), l.Detail})
	}
}
