package agent

// Prometheus metrics at GET /metrics on the local API. Everything is read
// from the agent when scraped (one lock, as Status takes it); the admission
// path only bumps plain counters under the lock it already holds.

import (
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// refusalReasons are the reasons a session is refused, in the order of
// counters.refused; "other" takes a reason this list lacks.
var refusalReasons = [...]string{
	ReasonUnknownTenant, ReasonSuspended, ReasonCeiling, ReasonClassCeiling,
	ReasonGrantTimeout, ReasonClusterUnreachable, ReasonClassUnsupported, "other",
}

func reasonIndex(reason string) int {
	for i, r := range refusalReasons[:len(refusalReasons)-1] {
		if r == reason {
			return i
		}
	}
	return len(refusalReasons) - 1
}

// counters are the agent's counts since it started; guarded by Agent.mu.
type counters struct {
	admitted      uint64
	refused       [len(refusalReasons)]uint64
	batchesCut    uint64 // delta batches cut
	batchesSent   uint64 // batches written on a stream, resends included
	batchesResent uint64 // batches written again (after a reconnect or a seq gap)
	connects      uint64 // streams welcomed by a server
	reconnects    uint64 // connection attempts after the first
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descInfo        = desc("headroom_agent_info", "The agent's id (always 1).", "agent")
	descSessions    = desc("headroom_agent_sessions_open", "Sessions open on this agent.")
	descTenants     = desc("headroom_agent_tenants_known", "Tenants whose plan this agent knows.")
	descConnected   = desc("headroom_agent_connected", "1 while a stream to the leader is up.")
	descUnacked     = desc("headroom_agent_unacked_batches", "Batches cut and not yet acknowledged by the cluster.")
	descLastAck     = desc("headroom_agent_last_ack_age_seconds", "Time since the last acknowledgement (-1: none since start).")
	descAdmitted    = desc("headroom_agent_admitted_total", "Sessions admitted.")
	descRefused     = desc("headroom_agent_refused_total", "Sessions refused, by reason.", "reason")
	descBatches     = desc("headroom_agent_batches_total", "Delta batches cut.")
	descSent        = desc("headroom_agent_batches_sent_total", "Batches written on a stream, resends included.")
	descResent      = desc("headroom_agent_batches_resent_total", "Batches written again after a reconnect or a sequence gap.")
	descConnects    = desc("headroom_agent_connects_total", "Streams a server welcomed.")
	descReconnects  = desc("headroom_agent_reconnects_total", "Connection attempts after the first (after a stream ended or a dial failed).")
	descGrantAsks   = desc("headroom_agent_grant_asks_total", "Asks for shares of strict ceilings sent.")
	descGrantAnswer = desc("headroom_agent_grant_answers_total", "Asks answered with a grant.")
	descGrantWait   = desc("headroom_agent_grant_pending", "1 while an ask awaits its grant.")
	descGrantRTT    = desc("headroom_agent_grant_round_trip_seconds", "Round trip of the last answered asks (up to 1,024): p50, p99, max.", "stat")
	// Per media server connector (connector.go).
	descConnOpen      = desc("headroom_agent_connector_sessions_open", "Sessions open that the connector opened.", "connector")
	descConnHooks     = desc("headroom_agent_connector_hooks_total", "Hooks the connector received.", "connector")
	descConnAdmitted  = desc("headroom_agent_connector_admitted_total", "Sessions the connector's hooks had admitted.", "connector")
	descConnRefused   = desc("headroom_agent_connector_refused_total", "Hooks refused, by reason (unmapped-tenant: no tenant could be derived).", "connector", "reason")
	descConnBad       = desc("headroom_agent_connector_bad_requests_total", "Hooks refused as malformed or unauthenticated.", "connector")
	descConnForced    = desc("headroom_agent_connector_forced_total", "Sessions counted without admission: they existed on the media server already.", "connector")
	descConnRecs      = desc("headroom_agent_connector_reconciles_total", "Reconciles of the connector's sessions, run or failed.", "connector")
	descConnRecErrors = desc("headroom_agent_connector_reconcile_errors_total", "Reconciles that could not run (the media server's list could not be had).", "connector")
	descConnRecClosed = desc("headroom_agent_connector_reconcile_closed_total", "Sessions closed by the connector's reconciles.", "connector")
	descConnHookTime  = desc("headroom_agent_connector_hook_seconds", "How long the connector's last hooks (up to 1,024) took to answer: p50, p99, max.", "connector", "stat")
	descConnRecLast   = desc("headroom_agent_connector_last_reconcile_timestamp_seconds", "Unix time of the connector's last reconcile (0: none yet).", "connector")
)

var agentDescs = []*prometheus.Desc{
	descInfo, descSessions, descTenants, descConnected, descUnacked, descLastAck, descAdmitted, descRefused,
	descBatches, descSent, descResent, descConnects, descReconnects, descGrantAsks, descGrantAnswer, descGrantWait, descGrantRTT,
	descConnOpen, descConnHooks, descConnAdmitted, descConnRefused, descConnBad, descConnForced, descConnRecs, descConnRecErrors,
	descConnRecClosed, descConnRecLast, descConnHookTime,
}

// collector reads the agent when scraped.
type collector struct{ a *Agent }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range agentDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	st := a.Status()
	a.mu.Lock()
	n := a.stats
	a.mu.Unlock()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	cnt := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	g(descInfo, 1, st.ID)
	g(descSessions, float64(st.OpenSessions))
	g(descTenants, float64(st.TenantsKnown))
	g(descConnected, boolFloat(st.Connected))
	g(descUnacked, float64(st.UnackedBatches))
	if st.LastAck.At != nil {
		g(descLastAck, time.Since(*st.LastAck.At).Seconds())
	} else {
		g(descLastAck, -1)
	}
	cnt(descAdmitted, n.admitted)
	for i, r := range refusalReasons {
		cnt(descRefused, n.refused[i], r)
	}
	cnt(descBatches, n.batchesCut)
	cnt(descSent, n.batchesSent)
	cnt(descResent, n.batchesResent)
	cnt(descConnects, n.connects)
	cnt(descReconnects, n.reconnects)
	gs := st.Grants
	cnt(descGrantAsks, gs.Asks)
	cnt(descGrantAnswer, gs.Answered)
	g(descGrantWait, boolFloat(gs.Pending))
	g(descGrantRTT, gs.RoundTripP50Ms/1e3, "p50")
	g(descGrantRTT, gs.RoundTripP99Ms/1e3, "p99")
	g(descGrantRTT, gs.RoundTripMaxMs/1e3, "max")
	for _, name := range connectorNames(st.Connectors) {
		cs := st.Connectors[name]
		g(descConnOpen, float64(cs.Open), name)
		cnt(descConnHooks, cs.Hooks, name)
		cnt(descConnAdmitted, cs.Admitted, name)
		for _, r := range connectorReasons(cs.Refused) {
			cnt(descConnRefused, cs.Refused[r], name, r)
		}
		cnt(descConnBad, cs.BadRequests, name)
		cnt(descConnForced, cs.Forced, name)
		cnt(descConnRecs, cs.Reconciles, name)
		cnt(descConnRecErrors, cs.ReconcileErrors, name)
		cnt(descConnRecClosed, cs.ReconcileClosed, name)
		last := 0.0
		if cs.LastReconcile != nil {
			last = float64(cs.LastReconcile.At.UnixNano()) / 1e9
		}
		g(descConnRecLast, last, name)
		g(descConnHookTime, cs.HookP50Ms/1e3, name, "p50")
		g(descConnHookTime, cs.HookP99Ms/1e3, name, "p99")
		g(descConnHookTime, cs.HookMaxMs/1e3, name, "max")
	}
}

// connectorReasons are the reasons a connector's refusals are shown by:
// every admission reason and unmapped-tenant (zero until it happens, so
// that a rate can be taken from the start), then any other seen, sorted.
func connectorReasons(seen map[string]uint64) []string {
	out := append([]string{ReasonUnmappedTenant}, refusalReasons[:len(refusalReasons)-1]...)
	var extra []string
	for r := range seen {
		if !slices.Contains(out, r) {
			extra = append(extra, r)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves the agent's metrics with the Go runtime's and the
// process's.
func (a *Agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 2, EnableOpenMetrics: true})
}
