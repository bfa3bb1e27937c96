package api

import (
	"container/heap"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

// GET /v1/tenants lists tenants, filtered, sorted and paged:
//
//	limit=N             a page of N tenants (1 to maxTenantPage); without it,
//	                    every tenant that matches, in one answer (as before)
//	cursor=C            the page after the one whose X-Next-Cursor was C
//	sort=tenant         by tenant id, ascending (the default)
//	sort=utilization    by concurrency / ceiling, highest first
//	sort=concurrency    by open sessions, highest first
//	plan=P              only tenants on plan P
//	min_utilization=F   only tenants with utilization ≥ F (0.8 = 80%)
//	q=S                 only tenants whose id contains S (ASCII case folded)
//
// Ties are broken by tenant id, ascending. The body is a JSON array; the
// header X-Next-Cursor carries the cursor of the next page and is absent on
// the last one; X-Total-Count is the number of tenants that match the
// filters, over all pages. A cursor is opaque: it holds the sort key of the
// last tenant of its page, so paging is stable while tenants come and go
// (a tenant whose figures change between two pages may be seen twice or
// not at all, as with any keyset paging). A cursor only fits the sort it
// was issued for.
//
// One pass over the tenants' index rows (fsm/tenant_index.go) under the read
// lock selects the page with a bounded heap (O(n log limit)); only the
// page's tenants are rendered.

// maxTenantPage bounds ?limit=.
const maxTenantPage = 1000

// tenantOrder is a ?sort= order of the tenant list.
type tenantOrder uint8

const (
	orderTenant tenantOrder = iota
	orderUtilization
	orderConcurrency
)

var tenantOrders = map[string]tenantOrder{"tenant": orderTenant, "utilization": orderUtilization, "concurrency": orderConcurrency}

func (o tenantOrder) String() string {
	switch o {
	case orderUtilization:
		return "utilization"
	case orderConcurrency:
		return "concurrency"
	}
	return "tenant"
}

// before reports whether a comes before b in order o.
func (o tenantOrder) before(a, b *fsm.TenantKey) bool {
	switch o {
	case orderUtilization:
		if a.Util != b.Util {
			return a.Util > b.Util
		}
	case orderConcurrency:
		if a.Conc != b.Conc {
			return a.Conc > b.Conc
		}
	}
	return a.Name < b.Name
}

// tenantQuery is a parsed GET /v1/tenants query.
type tenantQuery struct {
	order   tenantOrder
	limit   int            // 0: no paging
	after   *fsm.TenantKey // from the cursor
	plan    string
	minUtil float64 // 0: no filter
	q       string  // lower case
	// only, when set, restricts the list to that tenant (a caller scoped
	// to one tenant).
	only string
}

// parseTenantQuery reads the query of GET /v1/tenants; the error is the
// 400's message.
func parseTenantQuery(r *http.Request) (tenantQuery, error) {
	v := r.URL.Query()
	var q tenantQuery
	if s := v.Get("sort"); s != "" {
		o, ok := tenantOrders[s]
		if !ok {
			return q, fmt.Errorf("sort=%q: want tenant, utilization or concurrency", s)
		}
		q.order = o
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxTenantPage {
			return q, fmt.Errorf("limit=%q: want a whole number from 1 to %d", s, maxTenantPage)
		}
		q.limit = n
	}
	if s := v.Get("cursor"); s != "" {
		k, err := decodeTenantCursor(s, q.order)
		if err != nil {
			return q, fmt.Errorf("cursor=%q: %v", s, err)
		}
		q.after = &k
	}
	if s := v.Get("min_utilization"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return q, fmt.Errorf("min_utilization=%q: want a number of at least 0 (0.8 is 80%% of the ceiling)", s)
		}
		q.minUtil = f
	}
	q.plan = v.Get("plan")
	if s := v.Get("q"); s != "" {
		if len(s) > plans.MaxTenantIDLen {
			return q, fmt.Errorf("q: longer than a tenant id (%d bytes)", plans.MaxTenantIDLen)
		}
		q.q = strings.ToLower(s)
	}
	return q, nil
}

// encodeTenantCursor is the cursor after k in order o: the order's initial,
// the sort value and the tenant id, base64url.
func encodeTenantCursor(o tenantOrder, k *fsm.TenantKey) string {
	var val string
	switch o {
	case orderUtilization:
		val = strconv.FormatFloat(k.Util, 'g', -1, 64)
	case orderConcurrency:
		val = strconv.FormatUint(k.Conc, 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(o.String()[:1] + ":" + val + ":" + k.Name))
}

func decodeTenantCursor(s string, o tenantOrder) (fsm.TenantKey, error) {
	var k fsm.TenantKey
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("not a cursor this server issued")
	}
	parts := strings.SplitN(string(b), ":", 3)
	if len(parts) != 3 || plans.ValidateTenantID(parts[2]) != nil {
		return k, fmt.Errorf("not a cursor this server issued")
	}
	var which tenantOrder
	found := false
	for _, c := range []tenantOrder{orderTenant, orderUtilization, orderConcurrency} {
		if c.String()[:1] == parts[0] {
			which, found = c, true
		}
	}
	if !found {
		return k, fmt.Errorf("not a cursor this server issued")
	}
	if which != o {
		return k, fmt.Errorf("the cursor is for sort=%s, not sort=%s", which, o)
	}
	k.Name = parts[2]
	switch o {
	case orderUtilization:
		k.Util, err = strconv.ParseFloat(parts[1], 64)
		if err != nil || math.IsNaN(k.Util) || k.Util < 0 {
			return k, fmt.Errorf("not a cursor this server issued")
		}
	case orderConcurrency:
		k.Conc, err = strconv.ParseUint(parts[1], 10, 64)
	default:
		if parts[1] != "" {
			err = fmt.Errorf("value in a tenant cursor")
		}
	}
	if err != nil {
		return k, fmt.Errorf("not a cursor this server issued")
	}
	return k, nil
}

// containsFold reports whether s contains the lower-case substr, folding
// ASCII letters of s; it does not allocate.
func containsFold(s, substr string) bool {
	n := len(substr)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != substr[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// pageHeap keeps the best limit+1 keys seen; its root is the worst of them.
type pageHeap struct {
	o    tenantOrder
	keys []fsm.TenantKey
}

func (h *pageHeap) Len() int           { return len(h.keys) }
func (h *pageHeap) Less(i, j int) bool { return h.o.before(&h.keys[j], &h.keys[i]) }
func (h *pageHeap) Swap(i, j int)      { h.keys[i], h.keys[j] = h.keys[j], h.keys[i] }
func (h *pageHeap) Push(x any)         { h.keys = append(h.keys, x.(fsm.TenantKey)) }
func (h *pageHeap) Pop() any {
	k := h.keys[len(h.keys)-1]
	h.keys = h.keys[:len(h.keys)-1]
	return k
}

// tenantPage is one answer of the tenant list.
type tenantPage struct {
	tenants []fsm.TenantJSON
	next    string // cursor of the next page; "" on the last
	total   int    // tenants matching the filters, all pages
}

// listTenants selects and renders a page of the state's tenants, whose
// index rows are rows; under the state's read lock.
func listTenants(st fsm.View, rows []fsm.TenantRow, q tenantQuery) tenantPage {
	var page tenantPage
	var all []fsm.TenantKey   // without a limit
	h := pageHeap{o: q.order} // with one: the best limit+1 after the cursor
	consider := func(r *fsm.TenantRow) {
		if q.plan != "" && r.Plan != q.plan {
			return
		}
		if q.q != "" && !containsFold(r.Name, q.q) {
			return
		}
		k := r.Key()
		if q.minUtil > 0 && k.Util < q.minUtil {
			return
		}
		page.total++
		if q.after != nil && !q.order.before(q.after, &k) {
			return
		}
		switch {
		case q.limit == 0:
			all = append(all, k)
		case len(h.keys) <= q.limit:
			heap.Push(&h, k)
		case q.order.before(&k, &h.keys[0]):
			h.keys[0] = k
			heap.Fix(&h, 0)
		}
	}
	if q.only != "" {
		if t := st.Tenant(q.only); t != nil {
			r := fsm.TenantRowOf(st, t)
			consider(&r)
		}
	} else {
		for i := range rows {
			consider(&rows[i])
		}
	}
	keys := all
	if q.limit > 0 {
		keys = h.keys
	}
	slices.SortFunc(keys, func(a, b fsm.TenantKey) int {
		switch {
		case q.order.before(&a, &b):
			return -1
		case q.order.before(&b, &a):
			return 1
		}
		return 0
	})
	if q.limit > 0 && len(keys) > q.limit {
		keys = keys[:q.limit]
		page.next = encodeTenantCursor(q.order, &keys[len(keys)-1])
	}
	page.tenants = make([]fsm.TenantJSON, len(keys))
	for i := range keys {
		page.tenants[i] = fsm.TenantJSONOf(st, keys[i].T)
	}
	return page
}

func (s *Server) handleTenants(w http.ResponseWriter, r *http.Request) {
	q, err := parseTenantQuery(r)
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	q.only = tenantScope(r) // a tenant's token lists its tenant alone
	var page tenantPage
	s.fsm.Read(func(st fsm.View) {
		s.fsm.ScanTenants(st, func(rows []fsm.TenantRow) { page = listTenants(st, rows, q) })
	})
	if page.next != "" {
		w.Header().Set("X-Next-Cursor", page.next)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(page.total))
	jsonhttp.Write(w, http.StatusOK, page.tenants)
}
