package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// tenantListFixture is a state machine with tenants on several plans and
// open sessions, and a server around it that answers the tenant list.
//
//	tenant   plan     ceiling  open  utilization
//	acme     starter  100      90    0.9
//	Beta     starter  100      90    0.9   (ties acme; upper case id)
//	gamma    growth   1000     900   0.9   (ties on utilization, not concurrency)
//	delta    growth   1000     50    0.05
//	eps      payg     1000     0     0
//	free     (none)   0        30    0     (no plan: no ceiling)
//	meter1   meterp   0        40    0     (meter plan: no ceiling)
func tenantListFixture(t *testing.T) (*Server, *fsm.Harness) {
	h := fsm.NewHarness(t)
	if r := h.Apply(fsm.CmdPutPlan, &fsm.PutPlanCmd{Time: t0.UnixNano(), Create: true,
		Plan: plans.Plan{Name: "meterp", Billing: plans.PayAsYouGo, Mode: plans.Meter}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for tenant, plan := range map[string]string{"acme": "starter", "Beta": "starter", "gamma": "growth", "delta": "growth", "eps": "payg", "meter1": "meterp"} {
		if r := h.Apply(fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: t0.UnixNano(), Tenant: tenant, Plan: plan}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	h.Items(t0, "", fsm.Full("a1", 1, 0,
		wire.CountEntry{Tenant: "acme", Class: "audio", Open: 60}, wire.CountEntry{Tenant: "acme", Class: "video-hd", Open: 30},
		wire.CountEntry{Tenant: "Beta", Class: "audio", Open: 90},
		wire.CountEntry{Tenant: "gamma", Class: "audio", Open: 900},
		wire.CountEntry{Tenant: "delta", Class: "ai", Open: 50},
		wire.CountEntry{Tenant: "free", Class: "audio", Open: 30},
		wire.CountEntry{Tenant: "meter1", Class: "audio", Open: 40},
	))
	return &Server{fsm: h.F}, h
}

// listPage asks the tenant list and returns the code, the tenants' ids, the
// next cursor and the error message of a 4xx.
func listPage(t *testing.T, s *Server, query string) (code int, ids []string, next, errMsg string, body []fsm.TenantJSON) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.handleTenants(rec, httptest.NewRequest("GET", "/v1/tenants?"+query, nil))
	if rec.Code != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
			t.Fatalf("%s: %d with body %q: want {\"error\":...}", query, rec.Code, rec.Body)
		}
		return rec.Code, nil, "", e.Error, nil
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if body == nil {
		t.Fatalf("%s: body %q, want a JSON array", query, rec.Body)
	}
	for _, tj := range body {
		ids = append(ids, tj.Tenant)
	}
	return rec.Code, ids, rec.Header().Get("X-Next-Cursor"), "", body
}

// allPages follows X-Next-Cursor from the first page to the last.
func allPages(t *testing.T, s *Server, query string) (ids []string, pages int) {
	t.Helper()
	cursor := ""
	for {
		q := query
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		code, page, next, msg, _ := listPage(t, s, q)
		if code != 200 {
			t.Fatalf("%s: %d %s", q, code, msg)
		}
		ids = append(ids, page...)
		pages++
		if next == "" {
			return ids, pages
		}
		if len(page) == 0 {
			t.Fatalf("%s: an empty page with a next cursor", q)
		}
		if pages > 100 {
			t.Fatalf("%s: paging does not end", query)
		}
		cursor = next
	}
}

func TestTenantListSortFilterPage(t *testing.T) {
	s, _ := tenantListFixture(t)
	byName := []string{"Beta", "acme", "delta", "eps", "free", "gamma", "meter1"}
	cases := []struct {
		query string
		want  []string
	}{
		{"", byName},
		{"sort=tenant", byName},
		{"sort=utilization", []string{"Beta", "acme", "gamma", "delta", "eps", "free", "meter1"}},
		{"sort=concurrency", []string{"gamma", "Beta", "acme", "delta", "meter1", "free", "eps"}},
		{"plan=starter", []string{"Beta", "acme"}},
		{"plan=nosuchplan", []string{}},
		{"min_utilization=0.9&sort=utilization", []string{"Beta", "acme", "gamma"}},
		{"min_utilization=0.05", []string{"Beta", "acme", "delta", "gamma"}},
		{"min_utilization=0.91", []string{}},
		{"min_utilization=0", byName},
		{"q=ET", []string{"Beta", "meter1"}},
		{"q=a&plan=growth&sort=concurrency", []string{"gamma", "delta"}},
		{"q=zzz", []string{}},
		{"sort=utilization&limit=1000", []string{"Beta", "acme", "gamma", "delta", "eps", "free", "meter1"}},
	}
	for _, c := range cases {
		code, ids, next, msg, _ := listPage(t, s, c.query)
		if code != 200 {
			t.Errorf("%q: %d %s", c.query, code, msg)
			continue
		}
		if !slices.Equal(ids, c.want) && !(len(ids) == 0 && len(c.want) == 0) {
			t.Errorf("%q: %v, want %v", c.query, ids, c.want)
		}
		if next != "" {
			t.Errorf("%q: X-Next-Cursor %q on a single page", c.query, next)
		}
	}
	// Every page size gives the same list, page after page, for every sort.
	for _, sort := range []string{"tenant", "utilization", "concurrency"} {
		_, want, _, _, _ := listPage(t, s, "sort="+sort)
		for limit := 1; limit <= len(want)+1; limit++ {
			got, pages := allPages(t, s, fmt.Sprintf("sort=%s&limit=%d", sort, limit))
			if !slices.Equal(got, want) {
				t.Errorf("sort=%s limit=%d: %v, want %v", sort, limit, got, want)
			}
			if wantPages := max(1, (len(want)+limit-1)/limit); pages != wantPages {
				t.Errorf("sort=%s limit=%d: %d pages, want %d (no cursor on the last)", sort, limit, pages, wantPages)
			}
		}
	}
	// The figures of a page; utilization 0 without a ceiling.
	_, _, _, _, body := listPage(t, s, "sort=utilization&limit=3")
	if got := body[2]; got.Tenant != "gamma" || got.Utilization != 0.9 || got.Concurrency.Total != 900 || got.Ceiling != 1000 || got.Plan != "growth" {
		t.Errorf("gamma: %+v", got)
	}
	_, _, _, _, body = listPage(t, s, "q=free")
	if body[0].Utilization != 0 || body[0].Ceiling != 0 || body[0].Concurrency.Total != 30 {
		t.Errorf("free: %+v", body[0])
	}
	// The total matching the filters comes with every page.
	rec := httptest.NewRecorder()
	s.handleTenants(rec, httptest.NewRequest("GET", "/v1/tenants?plan=starter&limit=1", nil))
	if n := rec.Header().Get("X-Total-Count"); n != "2" {
		t.Errorf("X-Total-Count %q, want 2", n)
	}
}

func TestTenantListBadQueries(t *testing.T) {
	s, _ := tenantListFixture(t)
	_, _, tenantCursor, _, _ := listPage(t, s, "sort=tenant&limit=1")
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	bad := []struct{ query, mention string }{
		{"limit=banana", "limit"},
		{"limit=0", "limit"},
		{"limit=-1", "limit"},
		{"limit=1001", "1000"},
		{"limit=1.5", "limit"},
		{"sort=size", "sort"},
		{"sort=Tenant", "sort"},
		{"cursor=%25%25%25", "cursor"},
		{"cursor=" + enc("x:1:acme"), "cursor"},
		{"cursor=" + enc("u:abc:acme"), "cursor"},
		{"cursor=" + enc("u:NaN:acme"), "cursor"},
		{"cursor=" + enc("c:-1:acme"), "cursor"},
		{"cursor=" + enc("t:1:acme"), "cursor"},
		{"cursor=" + enc("t::bad id"), "cursor"},
		{"cursor=" + enc("nonsense"), "cursor"},
		{"sort=utilization&cursor=" + url.QueryEscape(tenantCursor), "sort=tenant"},
		{"min_utilization=high", "min_utilization"},
		{"min_utilization=NaN", "min_utilization"},
		{"min_utilization=Inf", "min_utilization"},
		{"min_utilization=-0.5", "min_utilization"},
		{"q=" + strings.Repeat("x", plans.MaxTenantIDLen+1), "q"},
	}
	for _, c := range bad {
		code, _, _, msg, _ := listPage(t, s, c.query)
		if code != http.StatusBadRequest || !strings.Contains(msg, c.mention) {
			t.Errorf("%q: %d %q, want 400 mentioning %q", c.query, code, msg, c.mention)
		}
	}
	// A cursor past the last tenant is an empty last page, not an error.
	code, ids, next, _, _ := listPage(t, s, "limit=5&cursor="+enc("t::zzz"))
	if code != 200 || len(ids) != 0 || next != "" {
		t.Errorf("cursor past the end: %d %v %q", code, ids, next)
	}
}

// TestTenantListPagingMatchesSort pages random tenant sets, with many ties,
// and checks the pages against a plain sort of the filtered tenants.
func TestTenantListPagingMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ceilings := map[string]uint64{"p10": 10, "p20": 20, "m": 0}
	for round := range 30 {
		st := fsm.NewState([]plans.Plan{{Name: "p10", Ceiling: 10, Mode: plans.Soft}, {Name: "p20", Ceiling: 20, Mode: plans.Strict}, {Name: "m", Mode: plans.Meter}})
		n := rng.IntN(60)
		planNames := []string{"p10", "p20", "m", ""}
		for i := range n {
			name := fmt.Sprintf("t%02d", rng.IntN(100))
			if i%7 == 0 {
				name = strings.ToUpper(name)
			}
			tn := &fsm.Tenant{Name: name, Plan: planNames[rng.IntN(len(planNames))]}
			tn.Open[rng.IntN(fsm.NumClasses)] = uint64(rng.IntN(25))
			st.Tenants[name] = tn
		}
		for _, sort := range []tenantOrder{orderTenant, orderUtilization, orderConcurrency} {
			for _, minUtil := range []float64{0, 0.5} {
				var want []fsm.TenantKey
				for _, tn := range st.Tenants {
					k := fsm.TenantKey{Name: tn.Name, Conc: tn.Open.Total()}
					k.Util = fsm.Utilization(k.Conc, ceilings[tn.Plan])
					if k.Util >= minUtil {
						want = append(want, k)
					}
				}
				slices.SortFunc(want, func(a, b fsm.TenantKey) int {
					if sort.before(&a, &b) {
						return -1
					}
					return 1
				})
				limit := 1 + rng.IntN(8)
				q := tenantQuery{order: sort, limit: limit, minUtil: minUtil}
				var got []string
				for pages := 0; ; pages++ {
					var page tenantPage
					fsm.TestingScan(fsm.ViewOf(st), func(rows []fsm.TenantRow) { page = listTenants(fsm.ViewOf(st), rows, q) })
					if page.total != len(want) {
						t.Fatalf("round %d: total %d, want %d", round, page.total, len(want))
					}
					for _, tj := range page.tenants {
						got = append(got, tj.Tenant)
					}
					if page.next == "" {
						break
					}
					k, err := decodeTenantCursor(page.next, sort)
					if err != nil || pages > 100 {
						t.Fatalf("round %d: cursor %q: %v", round, page.next, err)
					}
					q.after = &k
				}
				var wantIDs []string
				for _, k := range want {
					wantIDs = append(wantIDs, k.Name)
				}
				if !slices.Equal(got, wantIDs) {
					t.Fatalf("round %d sort=%s limit=%d min=%v:\n got %v\nwant %v", round, sort, limit, minUtil, got, wantIDs)
				}
			}
		}
	}
}
