package api

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/cluster"
	"github.com/prometheus/client_golang/prometheus"
)

// apiConfig configures the HTTP API. Fields are required unless marked
// optional.
type Config struct {
	Log hclog.Logger
	FSM *fsm.FSM
	// Now is the clock reads use for the current period and alerts,
	// events and the export for their times.
	Now func() time.Time
	// ACL requires a token on every request but health, the one-time
	// bootstrap and the dashboard's static files (acl.go).
	ACL bool
	// TLS is the servers' TLS (Optional: plaintext).
	TLS *cluster.TLS
	// DataDir is the server's data directory (snapshot restores stage
	// there).
	DataDir string
	// GrantMargin is the grant margin (the tenant read shows live shares).
	GrantMargin time.Duration
	// HoldTime is how long a write waits for a leader before 503.
	HoldTime time.Duration
	// MetricsMaxTenants and HistoryMaxTenants bound /metrics' tenant
	// labels and the tenants whose history is kept.
	MetricsMaxTenants, HistoryMaxTenants int
	// AlertWebhook receives the alerts (Optional: logged only);
	// AlertThresholds are the percentages they fire at (Optional).
	AlertWebhook    string
	AlertThresholds []uint32
	// Export configures the usage export (Optional: Export.URL "" is off).
	Export ExportConfig
}

// ExportConfig configures the usage export (export_send.go).
type ExportConfig struct {
	URL, Token string
	Window     time.Duration
	Batch      int
	Source     string
	// Backoff is the first retry's delay.
	Backoff time.Duration
}

// streamsView is what the API reads of the agent stream server.
type streamsView interface {
	// Agents is the number of agent streams open on this server.
	Agents() int
	// Unacked is how many messages of agent's stream are received and not
	// yet answered; false when the agent has no stream here.
	Unacked(agent string) (uint64, bool)
	// Traffic is the streams welcomed and the agent messages by kind and
	// outcome.
	Traffic() (accepted uint64, messages [2][fsm.StatusInvalid + 1]uint64)
}

// Server is the HTTP side of a server: the handlers, the ACL gate,
// events, alerts, metrics, history and the usage export.
type Server struct {
	cfg        Config
	log        hclog.Logger
	fsm        fsm.Reader
	node       *cluster.Node
	stamp      func() int64 // the time of a new log entry
	st         streamsView
	alerts     *alerter
	export     *exporter // nil without Config.ExportURL
	history    *history
	authFails  *FailLimiter // failed authentications per address
	events     *eventHub
	metrics    *serverMetrics
	hold       time.Duration
	bar        barrier
	advertised cluster.Meta
	sec        security // TLS, and what is exposed unprotected (security.go)

	httpAddr, wireAddr string // bound

	left     chan struct{}
	leftOnce sync.Once
}

// newAPIServer returns the API before Raft opens: its metrics, events and
// history, on the state machine's hooks from the first entry Raft applies.
// attach completes it once Raft is open.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.Log, fsm: cfg.FSM, hold: cfg.HoldTime, left: make(chan struct{}), history: newHistory(cfg.HistoryMaxTenants)}
	s.metrics = newServerMetrics(s, cfg.MetricsMaxTenants)
	s.events = newEventHub(s.fsm, s.log.Named("events"), cfg.Now, s.leaderEvent)
	cfg.FSM.OnAudit = s.events.audit
	cfg.FSM.TimeApply = func() func() {
		start := time.Now()
		return func() { s.metrics.fsmApply.Observe(time.Since(start).Seconds()) }
	}
	s.authFails = newFailLimiter(cfg.Now)
	return s
}

// apiAttachment is what the API needs once Raft is open.
type Attachment struct {
	Node       *cluster.Node
	Advertised cluster.Meta
	// HTTPAddr and WireAddr are the bound addresses.
	HTTPAddr, WireAddr string
	Streams            streamsView
	// Stamp is the time for a new log entry (the entry clock shared with
	// the stream server).
	Stamp func() int64
}

// Attach completes the API once Raft is open: security, alerts, the export.
func (s *Server) Attach(a Attachment) {
	s.node, s.advertised, s.httpAddr, s.wireAddr, s.st, s.stamp = a.Node, a.Advertised, a.HTTPAddr, a.WireAddr, a.Streams, a.Stamp
	s.initSecurity()
	s.alerts = newAlerter(s.fsm, s.log.Named("alerts"), s.cfg.AlertThresholds, s.cfg.AlertWebhook, alertQueueSize,
		func() bool { ok, _ := s.Ready(); return ok && s.node.Raft.State() == raft.Leader }, s.cfg.Now)
	s.alerts.onAlert = s.events.alert
	if s.cfg.Export.URL != "" {
		s.export = newExporter(s)
		s.metrics.reg.MustRegister(s.export)
	}
}

// Run delivers alerts, paces the event streams and runs the export until
// ctx ends; it returns once they have stopped.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.alerts.run(ctx) }()
	go func() { defer wg.Done(); s.events.runTickers(ctx) }()
	if s.export != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.export.run(ctx) }()
	}
	wg.Wait()
}

// TenantsChanged tells alerts, events and history of the tenants an entry
// changed; the FSM's OnChange hook calls it. It does not block.
func (s *Server) TenantsChanged(names []string) {
	s.alerts.changed(names)
	s.events.tenantsChanged(names)
	s.history.changed(s.fsm, names)
}

// HTTPAddr and WireAddr are the bound addresses; RaftAddr the advertised
// Raft address.
func (s *Server) HTTPAddr() string { return s.httpAddr }
func (s *Server) WireAddr() string { return s.wireAddr }
func (s *Server) RaftAddr() string { return s.node.Addr() }

// Done is closed once the server has left the cluster (POST /v1/leave).
func (s *Server) Done() <-chan struct{} { return s.left }

// EnsureBarrier runs a barrier once per term on a new leader, so it serves
// reads and agent streams only once it has applied everything committed
// before it. ok is false on a follower and while the barrier fails; fresh
// is true on the call that completed the term's barrier.
func (s *Server) EnsureBarrier() (ok, fresh bool) {
	if s.node.Raft.State() != raft.Leader {
		return false, false
	}
	if term := s.term(); !s.bar.done(term) {
		if err := s.node.Raft.Barrier(5 * time.Second).Error(); err != nil {
			s.log.Debug("leader barrier", "error", err)
			return false, false
		}
		s.bar.set(term)
		return true, true
	}
	return true, false
}

// leaderEvent is the leader as this server sees it, for leader events.
func (s *Server) leaderEvent() LeaderEventJSON {
	_, id := s.node.Raft.LeaderWithID()
	l := LeaderEventJSON{Leader: string(id), Term: s.node.Raft.CurrentTerm()}
	if id == "" {
		return l
	}
	if s.node.Raft.State() == raft.Leader {
		l.Address = s.advertised.HTTP
	} else if m, ok := s.node.LeaderMeta(); ok {
		l.Address = m.HTTP
	}
	return l
}

// Ready reports whether the server can answer reads and take writes: it
// knows a leader, its state machine has applied everything committed that
// it knows of, and, on a leader, a barrier in its term has made sure of
// everything committed before it became leader.
func (s *Server) Ready() (bool, string) {
	if ok, why := s.node.Ready(); !ok {
		return false, why
	}
	if s.node.Raft.State() == raft.Leader && !s.bar.done(s.term()) {
		return false, "new leader still applying what was committed before it"
	}
	return true, ""
}

func (s *Server) term() uint64 {
	t, _ := strconv.ParseUint(s.node.Raft.Stats()["term"], 10, 64)
	return t
}

// OpenSnapshot takes a Raft snapshot of this server's state and returns the
// header of its snapshot file and the state to follow it, for the caller to
// close.
func (s *Server) OpenSnapshot() (*fsm.SnapshotHeader, io.ReadCloser, error) {
	f := s.node.Raft.Snapshot()
	if err := f.Error(); err != nil {
		return nil, nil, fmt.Errorf("take a snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open the snapshot: %w", err)
	}
	return &fsm.SnapshotHeader{
		Index: meta.Index, Term: meta.Term, Time: s.cfg.Now().UTC().Truncate(time.Second), Server: s.node.ID(),
		Size: meta.Size, Configuration: fsm.SnapshotServers(meta.Configuration),
	}, rc, nil
}

// AuthFails is the API's limiter of failed authentications, for the stream
// server to share.
func (s *Server) AuthFails() *FailLimiter { return s.authFails }

// ObserveCommit and ObserveGrouped record, for /metrics, how long an entry
// of agent messages took from proposal to result and how many it held.
func (s *Server) ObserveCommit(d time.Duration) { s.metrics.commit.Observe(d.Seconds()) }
func (s *Server) ObserveGrouped(n int)          { s.metrics.grouped.Observe(float64(n)) }

// Register adds collectors to /metrics (the server's backups).
func (s *Server) Register(cs ...prometheus.Collector) { s.metrics.reg.MustRegister(cs...) }

// CloseEvents ends the event streams, which never go idle by themselves:
// the HTTP server calls it when it shuts down.
func (s *Server) CloseEvents() { s.events.close() }
