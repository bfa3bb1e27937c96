package fsm

import (
	"sync"

	"github.com/headroom-rtc/headroom/plans"
)

// tenantIndex keeps, beside the state, one compact row per tenant with the
// figures the tenant list sorts and filters by, in a slice: a scan of
// 100,000 rows reads a few megabytes in order instead of chasing 100,000
// pointers to tenants spread over the heap (the difference between about
// 2 ms and about 20 ms).
//
// Apply only notes the tenants an entry changed (note, under the state's
// write lock: an append); a reader brings the rows up to date under the
// read lock before it scans them (refresh), so the rows always agree with
// the state the reader sees. Readers of the rows serialise on the index's
// own lock.
type tenantIndex struct {
	mu      sync.Mutex
	state   *State // the state the rows are of; another one means a restore
	rows    []TenantRow
	slot    map[string]int // tenant → its row
	pending []string       // tenants changed since the last refresh
	stale   bool           // too many pending: rebuild at the next refresh
}

// TenantRow is one tenant's figures in the index.
type TenantRow struct {
	Name    string
	Plan    string
	conc    uint64 // open sessions, all classes
	ceiling uint64 // the ceiling utilization is measured against; 0: none
	t       *Tenant
}

func (r *TenantRow) Key() TenantKey {
	return TenantKey{Name: r.Name, Conc: r.conc, Util: Utilization(r.conc, r.ceiling), T: r.t}
}

// note records tenants an entry changed; the state's write lock is held.
func (x *tenantIndex) note(names []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stale {
		return
	}
	if len(x.pending)+len(names) > 2*len(x.rows)+4096 {
		x.stale, x.pending = true, nil // cheaper to rebuild than to replay
		return
	}
	x.pending = append(x.pending, names...)
}

// refreshLocked brings the rows up to date with st; under st's read lock
// and x.mu.
func (x *tenantIndex) refreshLocked(st *State) {
	if st != x.state || x.stale {
		x.rebuildLocked(st)
		return
	}
	ceil := planCeilings{st: st}
	for _, name := range x.pending {
		i, had := x.slot[name]
		t := st.Tenants[name]
		switch {
		case t == nil && had: // deleted: the last row takes its place
			last := len(x.rows) - 1
			x.rows[i] = x.rows[last]
			x.slot[x.rows[i].Name] = i
			x.rows[last] = TenantRow{}
			x.rows = x.rows[:last]
			delete(x.slot, name)
		case t == nil:
		case had:
			x.rows[i] = rowOf(t, &ceil)
		default:
			x.slot[name] = len(x.rows)
			x.rows = append(x.rows, rowOf(t, &ceil))
		}
	}
	clear(x.pending)
	x.pending = x.pending[:0]
}

func (x *tenantIndex) rebuildLocked(st *State) {
	ceil := planCeilings{st: st}
	x.state, x.stale, x.pending = st, false, nil
	x.rows = make([]TenantRow, 0, len(st.Tenants))
	x.slot = make(map[string]int, len(st.Tenants))
	for name, t := range st.Tenants {
		x.slot[name] = len(x.rows)
		x.rows = append(x.rows, rowOf(t, &ceil))
	}
}

func rowOf(t *Tenant, ceil *planCeilings) TenantRow {
	return TenantRow{Name: t.Name, Plan: t.Plan, conc: t.Open.Total(), ceiling: ceil.of(t.Plan), t: t}
}

// scan runs fn with rows up to date with st; under st's read lock. fn must
// not keep the rows.
func (x *tenantIndex) scan(st *State, fn func(rows []TenantRow)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.refreshLocked(st)
	fn(x.rows)
}

// TenantKey is what the list sorts a tenant by.
type TenantKey struct {
	Name string
	Util float64
	Conc uint64
	T    *Tenant // valid under the read lock it was taken in only
}

// planCeilings caches the ceiling that utilization is measured against,
// per plan (0: none); the few plans most tenants share are looked up once.
type planCeilings struct {
	st    *State
	names []string
	ceils []uint64
}

func (p *planCeilings) of(name string) uint64 {
	for i, n := range p.names {
		if n == name {
			return p.ceils[i]
		}
	}
	c := CeilingOf(View{p.st}, name)
	if len(p.names) < 16 {
		p.names, p.ceils = append(p.names, name), append(p.ceils, c)
	}
	return c
}

// CeilingOf is the ceiling of plan name that utilization is measured
// against: 0 for none (no plan, or a meter plan).
func CeilingOf(v View, name string) uint64 {
	st := v.s
	p, ok := st.Plans[name]
	if !ok || p.Mode == plans.Meter {
		return 0
	}
	return p.Ceiling
}

// Utilization is concurrency / ceiling; 0 without a ceiling.
func Utilization(conc, ceiling uint64) float64 {
	if ceiling == 0 {
		return 0
	}
	return float64(conc) / float64(ceiling)
}

// TenantRowOf is t's row, as the index would hold it; under st's read lock.
func TenantRowOf(v View, t *Tenant) TenantRow { st := v.s; return rowOf(t, &planCeilings{st: st}) }

// ScanTenants calls fn with the tenant index's rows brought up to date with
// st, the state of a read in progress (FSM.read: the read lock is held); fn
// must not keep the rows. The rows hold the figures the tenant list sorts
// and filters by (aggregator/api/tenant_list.go).
func (f *FSM) ScanTenants(v View, fn func(rows []TenantRow)) { f.index.scan(v.s, fn) }
