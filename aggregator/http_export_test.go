package aggregator

import (
	"encoding/csv"
	"encoding/json"
	"github.com/headroom-rtc/headroom/aggregator/api"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/wire"
)

func getRaw(t *testing.T, s *Server, path string) (int, string, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String(), rec.Header().Get("X-Headroom-Period-Closed")
}

// TestInvoiceExport: every tenant's invoice of a closed period, as CSV with
// a header row and as JSON, with the same lines as its usage report; the
// export does not change with what happens after the period closed (usage
// of the next period, a late batch cut in it, a new tenant, a plan change);
// bad requests are refused.
func TestInvoiceExport(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 10, 8, 0, 0, 0, time.UTC)}
	s := newTestServer(t, clock)
	for tn, plan := range map[string]string{"app-a": "payg", "app-b": "starter", "app-c": "growth"} {
		rec := httptest.NewRecorder()
		s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/"+tn+"/plan", jsonBody(`{"plan":"`+plan+`"}`)))
		if rec.Code != 200 {
			t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
		}
	}
	hour := uint64(time.Hour / time.Microsecond)
	commitItems(t, s, fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1,
		wire.DeltaEntry{Tenant: "app-a", Class: "audio", SessionMicros: 200 * hour},
		wire.DeltaEntry{Tenant: "app-a", Class: "video-fhd", SessionMicros: 3 * hour},
		wire.DeltaEntry{Tenant: "app-b", Class: "video-hd", SessionMicros: 9000 * hour},
		wire.DeltaEntry{Tenant: "nobody", Class: "audio", SessionMicros: hour})) // seen in a batch, on no plan
	clock.Set(time.Date(2026, 12, 1, 1, 30, 0, 0, time.UTC)) // 2026-11 closes at 01:00
	commitItems(t, s, fsm.Batch("a1", 1, 2))

	code, csvA, closed := getRaw(t, s, "/v1/export/invoices?period=2026-11&format=csv")
	if code != 200 || closed != "true" {
		t.Fatalf("CSV export: %d, closed %q: %s", code, closed, csvA)
	}
	code, jsonA, _ := getRaw(t, s, "/v1/export/invoices?period=2026-11&format=json")
	if code != 200 {
		t.Fatalf("JSON export: %d %s", code, jsonA)
	}
	var ex api.InvoicesExportJSON
	if err := json.Unmarshal([]byte(jsonA), &ex); err != nil {
		t.Fatal(err)
	}
	if ex.Period != "2026-11" || !ex.Closed || len(ex.Invoices) != 4 {
		t.Fatalf("JSON export: %+v", ex)
	}
	rows, err := csv.NewReader(strings.NewReader(csvA)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := []string{"period", "tenant", "line", "kind", "plan", "class", "from", "to", "quantity", "unit", "rate_micros", "amount_micros", "detail"}
	if !reflect.DeepEqual(rows[0], header) {
		t.Fatalf("header row %v", rows[0])
	}
	// The same lines and amounts as each tenant's usage report.
	lines := 0
	for _, inv := range ex.Invoices {
		var u fsm.UsageReportJSON
		if code := get(t, s, "/v1/tenants/"+inv.Tenant+"/usage?period=2026-11", &u); code != 200 {
			t.Fatalf("usage of %s: %d", inv.Tenant, code)
		}
		if !reflect.DeepEqual(inv.Invoice, u.Invoice) || inv.Error != u.InvoiceError {
			t.Errorf("%s: exported %+v / %q, usage report %+v / %q", inv.Tenant, inv.Invoice, inv.Error, u.Invoice, u.InvoiceError)
		}
		if inv.Invoice != nil {
			for i, l := range inv.Invoice.Lines {
				lines++
				row := rows[lines]
				if row[1] != inv.Tenant || row[2] != itoa(i+1) || row[3] != string(l.Kind) || row[11] != itoa(int(l.Amount)) {
					t.Errorf("CSV row %d %v, want line %d of %s: %+v", lines, row, i+1, inv.Tenant, l)
				}
			}
		} else {
			lines++
			if row := rows[lines]; row[1] != inv.Tenant || row[3] != "error" || row[12] != inv.Error {
				t.Errorf("CSV row %d %v, want the error of %s", lines, row, inv.Tenant)
			}
		}
	}
	if lines != len(rows)-1 || ex.Invoices[3].Tenant != "nobody" || ex.Invoices[3].Error == "" {
		t.Fatalf("%d lines in JSON, %d CSV rows; invoices %+v", lines, len(rows)-1, ex.Invoices)
	}
	if ex.Invoices[0].Invoice.Total == 0 || ex.Invoices[1].Invoice.Total == 0 {
		t.Fatalf("no amounts billed: %+v", ex.Invoices)
	}

	// What happens after the close changes nothing of it.
	clock.Set(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	commitItems(t, s, fsm.Batch("a1", 1, 3, wire.DeltaEntry{Tenant: "app-a", Class: "audio", SessionMicros: 7 * hour},
		wire.DeltaEntry{Tenant: "app-new", Class: "audio", SessionMicros: hour}))
	late := fsm.Batch("a1", 1, 4, wire.DeltaEntry{Tenant: "app-b", Class: "video-hd", SessionMicros: 5 * hour})
	late.AgentTime = time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC).UnixMilli()
	commitItems(t, s, late)
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/app-a/plan", jsonBody(`{"plan":"starter","at":"now"}`)))
	if rec.Code != 200 {
		t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
	}
	if _, csvB, _ := getRaw(t, s, "/v1/export/invoices?period=2026-11&format=csv"); csvB != csvA {
		t.Fatalf("the closed period's CSV changed:\n%s\nthen\n%s", csvA, csvB)
	}
	if _, jsonB, _ := getRaw(t, s, "/v1/export/invoices?period=2026-11"); jsonB != jsonA {
		t.Fatalf("the closed period's JSON changed:\n%s\nthen\n%s", jsonA, jsonB)
	}
	if code, body, closed := getRaw(t, s, "/v1/export/invoices?period=2026-12&format=csv"); code != 200 || closed != "false" || !strings.Contains(body, "app-new") {
		t.Fatalf("the open period's export: %d closed %q\n%s", code, closed, body)
	}

	for path, want := range map[string]int{
		"/v1/export/invoices?period=2026-10": 409, // day buckets no longer kept
		"/v1/export/invoices?period=2027-01": 400,
		"/v1/export/invoices?period=11-2026": 400,
		"/v1/export/invoices?format=xml":     400,
	} {
		if code, body, _ := getRaw(t, s, path); code != want || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want %d with an error", path, code, body, want)
		}
	}
}
