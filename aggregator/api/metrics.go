package api

// Prometheus metrics, served at GET /metrics on the HTTP port. Figures of
// the replicated state (tenants, usage, agents) and of Raft are read when
// scraped (stateCollector), never updated per applied entry; only latencies
// (HTTP, apply, commit) are observed as they happen. Every server serves
// its own view: followers' figures trail the leader's by what they have not
// applied yet.
//
// Label cardinality: tenants are labelled one by one up to
// Config.MetricsMaxTenants, the busiest by open sessions (ties by tenant
// id); the others are summed under tenant="_other". Which tenants are
// labelled can change from one scrape to the next as their load changes.

import (
	"container/heap"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/plans"
)

// DefaultMetricsMaxTenants is how many tenants get their own label in
// /metrics unless Config.MetricsMaxTenants says otherwise.
const DefaultMetricsMaxTenants = 1000

// MaxMetricsMaxTenants bounds Config.MetricsMaxTenants.
const MaxMetricsMaxTenants = 1_000_000

// otherTenant is the label the tenants beyond the cap are summed under.
const otherTenant = "_other"

// serverMetrics are one server's metrics.
type serverMetrics struct {
	reg      *prometheus.Registry
	http     *prometheus.HistogramVec
	fsmApply prometheus.Histogram
	commit   prometheus.Histogram
	grouped  prometheus.Histogram
	state    *stateCollector
}

func newServerMetrics(s *Server, maxTenants int) *serverMetrics {
	m := &serverMetrics{
		reg: prometheus.NewRegistry(),
		http: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "headroom_http_request_duration_seconds",
			Help:    "Time to answer an HTTP API request, by route pattern, method and status code (event streams excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "code"}),
		fsmApply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "headroom_raft_fsm_apply_seconds",
			Help:    "Time the state machine took to apply one log entry (decoding included).",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 9),
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "headroom_raft_apply_seconds",
			Help:    "On the leader: time from proposing a log entry of agent messages to its result (replicated, committed, applied).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		grouped: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "headroom_raft_entry_agent_messages",
			Help:    "On the leader: agent messages (batches, full states) grouped into one log entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	m.state = &stateCollector{s: s, maxTenants: maxTenants}
	m.reg.MustRegister(m.http, m.fsmApply, m.commit, m.grouped, m.state,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in the Prometheus text (or OpenMetrics)
// format; a request scoped to one tenant (its ACL token) gets that
// tenant's series alone.
func (m *serverMetrics) handler() http.Handler {
	opts := promhttp.HandlerOpts{MaxRequestsInFlight: 4, EnableOpenMetrics: true}
	all := promhttp.HandlerFor(m.reg, opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scope := tenantScope(r)
		if scope == "" {
			all.ServeHTTP(w, r)
			return
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(&stateCollector{s: m.state.s, only: scope})
		promhttp.HandlerFor(reg, opts).ServeHTTP(w, r)
	})
}

// apiHandler is the HTTP API: the mux behind its wrappers, timed by route.
type apiHandler struct {
	mux  *http.ServeMux
	next http.Handler
	dur  *prometheus.HistogramVec // nil: not timed
}

// instrument times the requests next serves by mux's route patterns.
func (s *Server) instrument(mux *http.ServeMux, next http.Handler) *apiHandler {
	h := &apiHandler{mux: mux, next: next}
	if s.metrics != nil {
		h.dur = s.metrics.http
	}
	return h
}

func (h *apiHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.dur == nil {
		h.next.ServeHTTP(w, r)
		return
	}
	_, route := h.mux.Handler(r)
	if route == "GET /v1/events" {
		h.next.ServeHTTP(w, r) // a stream lasts as long as its client
		return
	}
	if route == "" {
		route = "unmatched"
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	h.next.ServeHTTP(sw, r)
	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	h.dur.WithLabelValues(route, r.Method, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes and
// deadlines of proxied answers).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes on (the reverse proxy to the leader flushes).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

var statusNames = [fsm.StatusInvalid + 1]string{"error", "applied", "duplicate", "gap", "need_full", "old_epoch", "invalid"}

// className is the name of each class index; classesByName the indexes
// in the order of their names.
var (
	className     [fsm.NumClasses]string
	classesByName [fsm.NumClasses]int
)

func init() {
	for i := range className {
		className[i] = plans.Class(i + 1).String()
		classesByName[i] = i
	}
	slices.SortFunc(classesByName[:], func(a, b int) int { return strings.Compare(className[a], className[b]) })
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descTenants            = desc("headroom_tenants", "Tenants known to the state machine.")
	descTenantConcurrency  = desc("headroom_tenant_concurrency", "Open sessions of a tenant (fleet-wide) by class; tenants beyond --metrics-max-tenants are summed under tenant=\"_other\".", "tenant", "class")
	descTenantCeiling      = desc("headroom_tenant_ceiling", "Ceiling of the tenant's plan (0: none); summed under tenant=\"_other\".", "tenant")
	descTenantClassCeiling = desc("headroom_tenant_class_ceiling", "Ceiling of one class of the tenant's plan, for plans that set one.", "tenant", "class")
	descOtherTenants       = desc("headroom_metrics_other_tenants", "Tenants summed under tenant=\"_other\" (over --metrics-max-tenants).")
	descConcurrency        = desc("headroom_concurrency", "Open sessions of every tenant together, by class.", "class")
	descUsageSeconds       = desc("headroom_usage_session_seconds_total", "Session time metered, by class, over every period the state keeps (a deleted tenant's leaves it).", "class")
	descUsageUnitMinutes   = desc("headroom_usage_unit_minutes_total", "Unit-minutes metered (minutes × class weight), over every period the state keeps.")
	descRefused            = desc("headroom_refused_sessions_total", "Session admissions agents refused, by class, over every period the state keeps.", "class")
	descPlans              = desc("headroom_plans", "Plans in the catalogue.")
	descAgents             = desc("headroom_agents", "Agents the state machine knows, expired (silent past the grace) or not.", "expired")
	descRaftState          = desc("headroom_raft_state", "1 for this server's Raft state.", "state")
	descRaftTerm           = desc("headroom_raft_term", "Current Raft term.")
	descRaftCommit         = desc("headroom_raft_commit_index", "Raft commit index known to this server.")
	descRaftApplied        = desc("headroom_raft_applied_index", "Index of the last entry the state machine applied.")
	descRaftLast           = desc("headroom_raft_last_index", "Last index in this server's log.")
	descRaftSnapshot       = desc("headroom_raft_last_snapshot_index", "Index of this server's latest snapshot.")
	descRaftLastContact    = desc("headroom_raft_last_contact_seconds", "Time since the leader last contacted this follower (0 on the leader, -1 never).")
	descRaftVoters         = desc("headroom_raft_voters", "Voters in the Raft configuration.")
	descMembers            = desc("headroom_cluster_members", "Servers known to gossip, by status.", "status")
	descStreamAgents       = desc("headroom_stream_agents_connected", "Agent streams open on this server (the leader takes them).")
	descStreamAccepted     = desc("headroom_stream_connections_total", "Agent streams welcomed by this server.")
	descStreamMessages     = desc("headroom_stream_messages_total", "Agent messages proposed by this server, by kind (delta, full) and outcome (a resent batch counts as duplicate).", "kind", "result")
	descAlerts             = desc("headroom_alerts_total", "Alerts by stage: detected (every server), sent, failed, dropped (the leader).", "stage")
	descEventClients       = desc("headroom_events_clients", "Clients of GET /v1/events connected.")
	descEventStreams       = desc("headroom_events_streams_total", "Event streams opened.")
	descEventDropped       = desc("headroom_events_dropped_clients_total", "Event stream clients dropped for not reading fast enough.")
	descEventPublished     = desc("headroom_events_published_total", "Events published, by event name.", "event")
	descPoolsOver          = desc("headroom_strict_pools_over", "Pools of strict plans whose bookings (shares and the sessions agents have open) stand over their ceiling, by cause: lowered, restart, returned.", "cause")
	descAdmittedOver       = desc("headroom_strict_admitted_over_ceiling_total", "Sessions agents admitted into a strict pool while it stood over its ceiling, over every tenant the state holds (should stay 0).")
	descTenantMAU          = desc("headroom_tenant_mau", "Monthly active users of a tenant: its distinct users of the current period (the --metrics-max-tenants busiest tenants).", "tenant")
	descTenantDAU          = desc("headroom_tenant_dau", "Daily active users of a tenant: its distinct users of the current UTC day (by the state's clock).", "tenant")
)

var stateDescs = []*prometheus.Desc{
	descTenants, descTenantConcurrency, descTenantCeiling, descTenantClassCeiling, descOtherTenants, descConcurrency,
	descUsageSeconds, descUsageUnitMinutes, descRefused, descPlans, descAgents,
	descRaftState, descRaftTerm, descRaftCommit, descRaftApplied, descRaftLast, descRaftSnapshot, descRaftLastContact, descRaftVoters,
	descMembers, descStreamAgents, descStreamAccepted, descStreamMessages, descAlerts,
	descEventClients, descEventStreams, descEventDropped, descEventPublished,
	descPoolsOver, descAdmittedOver, descTenantMAU, descTenantDAU,
}

// stateCollector reads the state machine, Raft and the server's counters
// when scraped.
type stateCollector struct {
	s          *Server
	maxTenants int
	// only, when set, limits the collector to that tenant's series.
	only string
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range stateDescs {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if c.only != "" {
		s.fsm.Read(func(st fsm.View) {
			if t := st.Tenant(c.only); t != nil {
				collectTenant(ch, st, t)
			}
		})
		return
	}
	c.s.fsm.Read(func(st fsm.View) { c.collectState(ch, st) })
	if s.node != nil {
		c.collectRaft(ch)
	}
	if s.st != nil {
		gauge(ch, descStreamAgents, float64(s.st.Agents()))
		accepted, messages := s.st.Traffic()
		counter(ch, descStreamAccepted, float64(accepted))
		for k, kind := range []string{"delta", "full"} {
			for st := range statusNames {
				if v := messages[k][st]; v > 0 || fsm.ItemStatus(st) == fsm.StatusApplied {
					counter(ch, descStreamMessages, float64(v), kind, statusNames[st])
				}
			}
		}
	}
	if s.alerts != nil {
		as := s.alerts.snapshot()
		counter(ch, descAlerts, float64(as.Detected), "detected")
		counter(ch, descAlerts, float64(as.Sent), "sent")
		counter(ch, descAlerts, float64(as.Failed), "failed")
		counter(ch, descAlerts, float64(as.Dropped), "dropped")
	}
	if h := s.events; h != nil {
		gauge(ch, descEventClients, float64(h.clients()))
		counter(ch, descEventStreams, float64(h.stats.opened.Load()))
		counter(ch, descEventDropped, float64(h.stats.dropped.Load()))
		for i, name := range eventNames {
			counter(ch, descEventPublished, float64(h.stats.published[i].Load()), name)
		}
	}
}

// collectState reports the state machine's figures; under the read lock.
func (c *stateCollector) collectState(ch chan<- prometheus.Metric, st fsm.View) {
	gauge(ch, descTenants, float64(st.NumTenants()))
	gauge(ch, descPlans, float64(st.NumPlans()))
	var agents [2]int
	for _, a := range st.Agents() {
		if a.Expired {
			agents[1]++
		} else {
			agents[0]++
		}
	}
	gauge(ch, descAgents, float64(agents[0]), "false")
	gauge(ch, descAgents, float64(agents[1]), "true")

	var open, micros, refused fsm.ClassCounts
	var unitMins float64
	var admittedOver uint64
	poolsOver := map[string]int{fsm.OverLowered: 0, fsm.OverRestart: 0, fsm.OverReturned: 0}
	for _, t := range st.Tenants() {
		for i, v := range t.Open {
			open[i] += v
		}
		admittedOver += t.AdmittedOver
		for _, o := range t.Over {
			poolsOver[o.Cause]++
		}
		for _, u := range t.Usage {
			for i := range fsm.NumClasses {
				micros[i] += u.Micros[i]
				refused[i] += u.Refused[i]
			}
			unitMins += fsm.UnitMinutes(u)
		}
	}
	for i, name := range className {
		gauge(ch, descConcurrency, float64(open[i]), name)
		counter(ch, descUsageSeconds, float64(micros[i])/1e6, name)
		counter(ch, descRefused, float64(refused[i]), name)
	}
	counter(ch, descUsageUnitMinutes, unitMins)
	counter(ch, descAdmittedOver, float64(admittedOver))
	for _, cause := range []string{fsm.OverLowered, fsm.OverRestart, fsm.OverReturned} {
		gauge(ch, descPoolsOver, float64(poolsOver[cause]), cause)
	}

	// The busiest maxTenants tenants by their own label, the rest summed.
	keys := make([]fsm.TenantKey, 0, min(st.NumTenants(), c.maxTenants))
	if st.NumTenants() <= c.maxTenants {
		for _, t := range st.Tenants() {
			keys = append(keys, fsm.TenantKey{Name: t.Name, T: t})
		}
	} else {
		h := pageHeap{o: orderConcurrency, keys: keys}
		for _, t := range st.Tenants() {
			k := fsm.TenantKey{Name: t.Name, Conc: t.Open.Total(), T: t}
			switch {
			case len(h.keys) < c.maxTenants:
				heap.Push(&h, k)
			case h.o.before(&k, &h.keys[0]):
				h.keys[0] = k
				heap.Fix(&h, 0)
			}
		}
		keys = h.keys
	}
	// Emitted in the order the registry sorts them in (label values, by
	// label name: class before tenant), which makes its sort linear.
	slices.SortFunc(keys, func(a, b fsm.TenantKey) int { return strings.Compare(a.Name, b.Name) })
	otherOpen := open
	var ceilings, otherCeiling uint64
	for i := range keys {
		t := keys[i].T
		p, _ := st.Plan(t.Plan)
		ceilings += p.Ceiling
		gauge(ch, descTenantCeiling, float64(p.Ceiling), t.Name)
		for _, cl := range p.ClassCeilings {
			gauge(ch, descTenantClassCeiling, float64(cl.Ceiling), t.Name, cl.Class)
		}
		for j := range otherOpen {
			otherOpen[j] -= t.Open[j]
		}
	}
	others := st.NumTenants() - len(keys)
	for _, j := range classesByName {
		if others > 0 {
			gauge(ch, descTenantConcurrency, float64(otherOpen[j]), otherTenant, className[j])
		}
		for i := range keys {
			gauge(ch, descTenantConcurrency, float64(keys[i].T.Open[j]), keys[i].Name, className[j])
		}
	}
	gauge(ch, descOtherTenants, float64(others))
	for i := range keys {
		collectUsers(ch, st, keys[i].T)
	}
	if others > 0 {
		for _, t := range st.Tenants() {
			p, _ := st.Plan(t.Plan)
			otherCeiling += p.Ceiling
		}
		gauge(ch, descTenantCeiling, float64(otherCeiling-ceilings), otherTenant)
	}
}

// collectTenant reports one tenant's concurrency and ceilings.
func collectTenant(ch chan<- prometheus.Metric, st fsm.View, t *fsm.Tenant) {
	p, _ := st.Plan(t.Plan)
	gauge(ch, descTenantCeiling, float64(p.Ceiling), t.Name)
	for j, name := range className {
		gauge(ch, descTenantConcurrency, float64(t.Open[j]), t.Name, name)
	}
	for _, cl := range p.ClassCeilings {
		gauge(ch, descTenantClassCeiling, float64(cl.Ceiling), t.Name, cl.Class)
	}
	collectUsers(ch, st, t)
}

// collectUsers reports a tenant's active users of the state's current
// period and day.
func collectUsers(ch chan<- prometheus.Metric, st fsm.View, t *fsm.Tenant) {
	today := fsm.DayOf(st.Time())
	var mau uint64
	if u := t.Usage[fsm.PeriodOfDay(today)]; u != nil {
		mau = u.MAU
	}
	gauge(ch, descTenantMAU, float64(mau), t.Name)
	gauge(ch, descTenantDAU, float64(t.DAU(today)), t.Name)
}

func (c *stateCollector) collectRaft(ch chan<- prometheus.Metric) {
	s := c.s
	rf := s.node.Raft
	state := rf.State()
	for _, st := range []raft.RaftState{raft.Leader, raft.Follower, raft.Candidate, raft.Shutdown} {
		v := 0.0
		if st == state {
			v = 1
		}
		gauge(ch, descRaftState, v, raftState(st))
	}
	stats := rf.Stats()
	snap, _ := strconv.ParseUint(stats["last_snapshot_index"], 10, 64)
	gauge(ch, descRaftTerm, float64(rf.CurrentTerm()))
	gauge(ch, descRaftCommit, float64(rf.CommitIndex()))
	gauge(ch, descRaftApplied, float64(s.fsm.AppliedIndex()))
	gauge(ch, descRaftLast, float64(rf.LastIndex()))
	gauge(ch, descRaftSnapshot, float64(snap))
	switch last := rf.LastContact(); {
	case state == raft.Leader:
		gauge(ch, descRaftLastContact, 0)
	case last.IsZero():
		gauge(ch, descRaftLastContact, -1)
	default:
		gauge(ch, descRaftLastContact, time.Since(last).Seconds())
	}
	voters := 0
	if f := rf.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				voters++
			}
		}
	}
	gauge(ch, descRaftVoters, float64(voters))
	members := map[cluster.Status]int{}
	for _, m := range s.node.Members() {
		members[m.Status]++
	}
	for status, n := range members {
		gauge(ch, descMembers, float64(n), string(status))
	}
}
