package aggregator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/headroom-rtc/headroom/aggregator/api"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/stream"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/loop"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/net/netutil"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// maxHTTPConns bounds the HTTP connections served at once.
const maxHTTPConns = 4096

// Config configures an aggregator server.
type Config struct {
	// DataDir keeps the Raft log, snapshots and the node id. (Required)
	DataDir string
	// NodeID is the Raft server id. (Optional, default: kept in DataDir,
	// random on first start)
	NodeID string
	// HTTPAddr, WireAddr and RaftAddr are the listen addresses. (Required;
	// port 0 picks a free port)
	HTTPAddr, WireAddr, RaftAddr string
	// Bootstrap forms a single-server cluster on an empty DataDir; a no-op
	// on one that holds a cluster. (Optional)
	Bootstrap bool
	// GossipAddr is the memberlist bind address. (Optional: without it the
	// server runs alone, as with Bootstrap)
	GossipAddr string
	// Join lists gossip addresses of servers to join. (Optional)
	Join []string
	// BootstrapExpect: once this many servers see each other, one of them
	// bootstraps Raft with all of them as voters. (Optional)
	BootstrapExpect int
	// AdvertiseAddr is the host other servers and agents use to reach this
	// one, for all of its addresses. (Optional, default: the bound host, or
	// the first private address when bound to 0.0.0.0)
	AdvertiseAddr string
	// DeadServerReap is how long a failed server stays a Raft voter before
	// the leader removes it. (Optional, default 5m)
	DeadServerReap time.Duration
	// RaftSnapshotThreshold and RaftTrailingLogs override the Raft tuning
	// (entries between snapshots; entries kept behind a snapshot).
	// (Optional, defaults in cluster.Tuned)
	RaftSnapshotThreshold, RaftTrailingLogs uint64
	// HoldTime is how long a write waits for a leader before failing with
	// 503. (Optional, default DefaultHoldTime)
	HoldTime time.Duration
	// DefaultPlan puts tenants first seen in agent batches on this plan.
	// (Optional, default "": such tenants stay on no plan and agents refuse
	// their sessions as unknown)
	DefaultPlan string
	// AgentGrace is how long an agent may stay silent before the leader
	// expires its contribution. (Optional, default 15s)
	AgentGrace time.Duration
	// AgentForget is how long an expired agent is remembered (with its
	// dedup state). (Optional, default 24h)
	AgentForget time.Duration
	// UsageGrace is how long after its end a billing period still takes
	// the batches cut in it; later ones go to the open period, flagged
	// late. The leader writes it into the log. (Optional, default
	// DefaultUsageGrace, at most MaxUsageGrace)
	UsageGrace time.Duration
	// GrantLease is how long a share of a strict ceiling leased to an agent
	// lasts without renewal; GrantMargin is how much longer the leader waits
	// before it gives an expired share to another agent (covering the
	// servers' clock skew). (Optional, defaults 10s and 2s)
	GrantLease, GrantMargin time.Duration
	// Plans are created in the catalogue by the leader when missing (from
	// --plans FILE); plans already there are never overwritten, so changes
	// made at run time stand. (Optional)
	Plans []plans.Plan
	// MaxFrame limits one wire frame. (Optional, default wire.DefaultMaxFrame)
	MaxFrame int
	// AlertWebhook receives a JSON POST for each alert (see api/alerts.go);
	// without it alerts are only logged. (Optional)
	AlertWebhook string
	// AlertThresholds are the utilization percentages (of the ceiling and
	// of the included unit-minutes) alerts fire at: 1 to 1000, ascending.
	// (Optional, default DefaultAlertThresholds)
	AlertThresholds []uint32
	// ACL requires a token on every request but health, the one-time
	// bootstrap and the dashboard's static files, and on every agent
	// stream (see api/acl.go). (Optional, default off)
	ACL bool
	// TLS serves the HTTP API and the agent streams over TLS (TLS.Server)
	// and carries Raft and the calls between servers over it (see
	// cluster.TLS). (Optional, default plaintext)
	TLS *cluster.TLS
	// GossipKey encrypts gossip until the data directory holds a keyring
	// (see cluster.Config.GossipKey). (Optional)
	GossipKey []byte
	// MetricsMaxTenants is how many tenants /metrics labels one by one, the
	// busiest by open sessions; the others are summed under
	// tenant="_other". (Optional, default DefaultMetricsMaxTenants, at
	// most MaxMetricsMaxTenants)
	MetricsMaxTenants int
	// BackupInterval makes the leader write a snapshot file to BackupDir
	// this often, keeping the newest BackupRetain (see backup.go).
	// (Optional, default 0: no backups; at least MinBackupInterval)
	BackupInterval time.Duration
	// BackupDir holds the backups. (Required with BackupInterval)
	BackupDir string
	// BackupRetain is how many backups are kept. (Optional, default
	// DefaultBackupRetain)
	BackupRetain int
	// HistoryMaxTenants is how many tenants' recent history (api/history.go)
	// the server keeps, the busiest. (Optional, default
	// DefaultHistoryMaxTenants, at most MaxHistoryMaxTenants)
	HistoryMaxTenants int
	// ExportURL receives the usage increments as batches of CloudEvents,
	// POSTed by the leader (api/export_send.go). (Optional, default off)
	ExportURL string
	// ExportToken is sent to ExportURL as a bearer token. (Optional)
	ExportToken string
	// ExportWindow is the export's window: the leader cuts at its
	// multiples. (Optional, default DefaultExportWindow, at least
	// MinExportWindow)
	ExportWindow time.Duration
	// ExportBatch is the most events one POST carries. (Optional, default
	// DefaultExportBatch, 6 to MaxExportBatch)
	ExportBatch int
	// ExportSource is the events' CloudEvents source; set the same on every
	// server. (Optional, default "headroom/" and a random id, chosen at
	// the first cut and kept in the state)
	ExportSource string
	// exportBackoff is the first retry's delay (tests shorten it).
	exportBackoff time.Duration
	// Logger is the parent logger. (Optional)
	Logger hclog.Logger
	// Now is the clock the leader stamps entries with and reads use for
	// the current period. (Optional, default time.Now)
	Now func() time.Time
}

// Server is a running aggregator: the state machine under Raft, the agent
// stream server that feeds it and the HTTP API that reads it, wired.
type Server struct {
	cfg   Config
	log   hclog.Logger
	fsm   *fsm.FSM
	node  *cluster.Node
	clock *stream.Clock
	st    *stream.Server
	api   *api.Server

	httpLn, wireLn net.Listener
	httpSrv        *http.Server
	advertised     cluster.Meta
	backup         *backups // nil without Config.BackupInterval (backup.go)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks cfg, opens the data directory and starts Raft and the
// listeners. Call Close to stop.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" || cfg.HTTPAddr == "" || cfg.WireAddr == "" || cfg.RaftAddr == "" {
		return nil, errors.New("aggregator: data dir, HTTP, wire and Raft addresses are required")
	}
	if err := api.ValidateAlertThresholds(cfg.AlertThresholds); err != nil {
		return nil, fmt.Errorf("aggregator: alert thresholds: %w", err)
	}
	if cfg.AlertWebhook != "" {
		if err := api.ValidateWebhook(cfg.AlertWebhook); err != nil {
			return nil, fmt.Errorf("aggregator: %w", err)
		}
	}
	export := api.ExportConfig{URL: cfg.ExportURL, Token: cfg.ExportToken, Window: cfg.ExportWindow, Batch: cfg.ExportBatch,
		Source: cfg.ExportSource, Backoff: cfg.exportBackoff}
	if err := export.Check(); err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	if cfg.GrantLease <= 0 {
		cfg.GrantLease = fsm.DefaultGrantLease
	}
	if cfg.GrantMargin <= 0 {
		cfg.GrantMargin = fsm.DefaultGrantMargin
	}
	if cfg.AgentGrace <= 0 {
		cfg.AgentGrace = 15 * time.Second
	}
	if cfg.AgentForget <= 0 {
		cfg.AgentForget = 24 * time.Hour
	}
	if err := checkUsageGrace(cfg.UsageGrace); err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	} else if cfg.UsageGrace == 0 {
		cfg.UsageGrace = fsm.DefaultUsageGrace
	}
	if err := checkBackups(&cfg); err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	catalogue := plans.Defaults()
	for _, p := range cfg.Plans {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("aggregator: %w", err)
		}
	}
	if cfg.DefaultPlan != "" && !hasPlan(catalogue, cfg.DefaultPlan) && !hasPlan(cfg.Plans, cfg.DefaultPlan) {
		return nil, fmt.Errorf("aggregator: default plan %q is not in the catalogue", cfg.DefaultPlan)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	id, err := nodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	if cfg.HoldTime <= 0 {
		cfg.HoldTime = api.DefaultHoldTime
	}
	switch {
	case cfg.MetricsMaxTenants < 0 || cfg.MetricsMaxTenants > api.MaxMetricsMaxTenants:
		return nil, fmt.Errorf("aggregator: metrics max tenants %d: want 1 to %d", cfg.MetricsMaxTenants, api.MaxMetricsMaxTenants)
	case cfg.MetricsMaxTenants == 0:
		cfg.MetricsMaxTenants = api.DefaultMetricsMaxTenants
	}
	switch {
	case cfg.HistoryMaxTenants < 0 || cfg.HistoryMaxTenants > api.MaxHistoryMaxTenants:
		return nil, fmt.Errorf("aggregator: history max tenants %d: want 1 to %d", cfg.HistoryMaxTenants, api.MaxHistoryMaxTenants)
	case cfg.HistoryMaxTenants == 0:
		cfg.HistoryMaxTenants = api.DefaultHistoryMaxTenants
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.fsm = loggedFSM(catalogue, s.log.Named("fsm"))
	s.api = api.New(api.Config{
		Log: s.log, FSM: s.fsm, Now: cfg.Now, ACL: cfg.ACL, TLS: cfg.TLS, DataDir: cfg.DataDir, GrantMargin: cfg.GrantMargin,
		HoldTime: cfg.HoldTime, MetricsMaxTenants: cfg.MetricsMaxTenants, HistoryMaxTenants: cfg.HistoryMaxTenants,
		AlertWebhook: cfg.AlertWebhook, AlertThresholds: cfg.AlertThresholds, Export: export,
	})

	if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("aggregator: HTTP listen: %w", err)
	}
	// At most maxHTTPConns connections at once (event streams included);
	// more wait in the listen backlog. Under TLS, which wraps it.
	s.httpLn = netutil.LimitListener(s.httpLn, maxHTTPConns)
	if s.wireLn, err = net.Listen("tcp", cfg.WireAddr); err != nil {
		s.httpLn.Close()
		return nil, fmt.Errorf("aggregator: wire listen: %w", err)
	}
	closeListeners := func() {
		s.httpLn.Close()
		s.wireLn.Close()
	}
	advertise := func(bound string) (string, error) { return cluster.AdvertiseAddr(bound, cfg.AdvertiseAddr) }
	if s.advertised.HTTP, err = advertise(s.httpLn.Addr().String()); err == nil {
		s.advertised.Wire, err = advertise(s.wireLn.Addr().String())
	}
	if err != nil {
		closeListeners()
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	s.node, err = cluster.Open(cluster.Config{
		DataDir: cfg.DataDir, BindAddr: cfg.RaftAddr, ServerID: id,
		Bootstrap: cfg.Bootstrap, Logger: s.log,
		GossipAddr: cfg.GossipAddr, AdvertiseHost: cfg.AdvertiseAddr, Join: cfg.Join,
		BootstrapExpect: cfg.BootstrapExpect, DeadServerReap: cfg.DeadServerReap, Meta: s.advertised,
		Applied: s.fsm.AppliedIndex, TLS: cfg.TLS, GossipKey: cfg.GossipKey,
		Tuning: func(rc *raft.Config) {
			if cfg.RaftSnapshotThreshold > 0 {
				rc.SnapshotThreshold = cfg.RaftSnapshotThreshold
			}
			if cfg.RaftTrailingLogs > 0 {
				rc.TrailingLogs = cfg.RaftTrailingLogs
			}
		},
	}, s.fsm)
	if err != nil {
		closeListeners()
		return nil, err
	}
	s.advertised.Raft = s.node.Addr() // the cluster resolves the Raft address itself
	if cfg.TLS != nil {
		s.httpLn = tlsListener(s.httpLn, cfg.TLS)
		s.wireLn = tlsListener(s.wireLn, cfg.TLS)
	}
	s.clock = stream.NewClock(cfg.Now, s.fsm)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.st = stream.New(stream.Config{
		Log: s.log, FSM: s.fsm, Raft: s.node.Raft, Clock: s.clock, Now: cfg.Now, DefaultPlan: cfg.DefaultPlan,
		GrantLease: cfg.GrantLease, GrantMargin: cfg.GrantMargin, AgentGrace: cfg.AgentGrace, AgentForget: cfg.AgentForget,
		MaxFrame: cfg.MaxFrame, SelfAddr: s.advertised.Wire, SelfID: s.node.ID(), Servers: s.wireServers,
		Ready: func() bool { ok, _ := s.Ready(); return ok },
		ACL:   cfg.ACL, AuthFails: s.api.AuthFails(),
		ObserveCommit:  s.api.ObserveCommit,
		ObserveGrouped: s.api.ObserveGrouped,
	})
	s.api.Attach(api.Attachment{Node: s.node, Advertised: s.advertised, HTTPAddr: s.HTTPAddr(), WireAddr: s.WireAddr(),
		Streams: s.st, Stamp: s.clock.Stamp})
	s.fsm.OnChange = func(tenants []string) {
		s.st.TenantsChanged(tenants)
		s.api.TenantsChanged(tenants)
	}
	s.httpSrv = &http.Server{
		Handler:           s.api.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          s.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.httpSrv.RegisterOnShutdown(s.api.CloseEvents) // streams never go idle by themselves
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.api.Run(ctx) }()
	go func() { defer s.wg.Done(); loop.Every(ctx, 50*time.Millisecond, s.leaderBarrier) }()
	go func() { defer s.wg.Done(); s.st.Run(ctx, s.wireLn) }()
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server stopped", "error", err)
		}
	}()
	if cfg.BackupInterval > 0 {
		s.backup = s.newBackups()
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.backup.run(ctx) }()
	}
	s.log.Info("aggregator started", "id", id, "http", s.HTTPAddr(), "wire", s.WireAddr(), "raft", s.node.Addr())
	return s, nil
}

func hasPlan(ps []plans.Plan, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

// nodeID returns the node id kept in dir, storing want (or a random id) on
// first start; a different want than the stored one is an error.
func nodeID(dir, want string) (string, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		have := strings.TrimSpace(string(b))
		if want != "" && want != have {
			return "", fmt.Errorf("aggregator: %s holds node id %q, not %q", path, have, want)
		}
		return have, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("aggregator: %w", err)
	}
	if want == "" {
		var r [6]byte
		rand.Read(r[:])
		want = "node-" + hex.EncodeToString(r[:])
	}
	if plans.ValidateID("", want, plans.MaxIDLen) != nil {
		return "", fmt.Errorf("aggregator: node id %q: want 1-128 printable characters without spaces", want)
	}
	if err := os.WriteFile(path, []byte(want+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("aggregator: %w", err)
	}
	return want, nil
}

// wireServers returns the leader's wire address and every live server's.
func (s *Server) wireServers() (leader string, all []string) {
	if s.node.Raft.State() == raft.Leader {
		leader = s.advertised.Wire
	} else if m, ok := s.node.LeaderMeta(); ok {
		leader = m.Wire
	}
	for _, m := range s.node.Members() {
		if m.Status == cluster.StatusAlive && m.Meta.Wire != "" {
			all = append(all, m.Meta.Wire)
		}
	}
	if len(all) == 0 {
		all = []string{s.advertised.Wire}
	}
	return leader, all
}

// Done is closed once the server has left the cluster (POST /v1/leave);
// the process should then Close it and exit.
func (s *Server) Done() <-chan struct{} { return s.api.Done() }

// HTTPAddr is the address the HTTP API listens on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// WireAddr is the address agents connect to.
func (s *Server) WireAddr() string { return s.wireLn.Addr().String() }

// RaftAddr is the advertised Raft address.
func (s *Server) RaftAddr() string { return s.node.Addr() }

// leaderBarrier runs a barrier once per term on a new leader (the API's
// ensureBarrier), so it serves reads and agent streams only once it has
// applied everything committed before it; then it seeds the plans, and on
// every call the leader keeps the usage grace in the log.
func (s *Server) leaderBarrier() {
	ok, fresh := s.api.EnsureBarrier()
	if !ok {
		return
	}
	if fresh {
		s.seedPlans()
	}
	s.syncUsageGrace()
}

// Ready reports whether the server can answer reads and take writes: it
// knows a leader, its state machine has applied everything committed that
// it knows of, and, on a leader, a barrier in its term has made sure of
// everything committed before it became leader.
func (s *Server) Ready() (bool, string) { return s.api.Ready() }

// seedPlans creates the configured plans the catalogue lacks.
func (s *Server) seedPlans() {
	for _, p := range s.cfg.Plans {
		var exists bool
		s.fsm.Read(func(st fsm.View) { _, exists = st.Plan(p.Name) })
		if exists {
			continue
		}
		data, err := fsm.EncodeCmd(fsm.CmdPutPlan, &fsm.PutPlanCmd{Time: s.clock.Stamp(), Plan: p, Create: true, Operator: "--plans"})
		if err == nil {
			err = s.node.Raft.Apply(data, 5*time.Second).Error()
		}
		if err != nil {
			s.log.Warn("plan from --plans not created yet", "plan", p.Name, "error", err)
			return
		}
		s.log.Info("created plan from --plans", "plan", p.Name)
	}
}

// Close stops the listeners, the streams, gossip and Raft. It does not
// leave the cluster: a leader hands leadership over first, and the server
// stays a voter, so a rolling restart does not churn the configuration.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.httpSrv.Shutdown(ctx)
	s.cancel()
	s.wg.Wait()
	return s.node.Shutdown()
}

// checkUsageGrace validates a configured grace (0: the default).
func checkUsageGrace(d time.Duration) error {
	if d < 0 || d > fsm.MaxUsageGrace {
		return fmt.Errorf("usage grace %v: want 0 (default %v) to %v", d, fsm.DefaultUsageGrace, fsm.MaxUsageGrace)
	}
	return nil
}

// syncUsageGrace, on the leader, writes its configured grace into the log
// when the state holds another.
func (s *Server) syncUsageGrace() {
	var have int64
	s.fsm.Read(func(st fsm.View) { have = st.Grace() })
	if have == int64(s.cfg.UsageGrace) {
		return
	}
	data, err := fsm.EncodeCmd(fsm.CmdUsageGrace, &fsm.UsageGraceCmd{Time: s.clock.Stamp(), Grace: int64(s.cfg.UsageGrace)})
	if err == nil {
		err = s.node.Raft.Apply(data, 5*time.Second).Error()
	}
	if err != nil {
		s.log.Warn("usage grace not set yet", "grace", s.cfg.UsageGrace, "error", err)
		return
	}
	s.log.Info("set the grace for late batches", "grace", s.cfg.UsageGrace, "was", time.Duration(have))
}

// loggedFSM returns a state machine holding catalogue that logs to log what
// it refuses or skips.
func loggedFSM(catalogue []plans.Plan, log hclog.Logger) *fsm.FSM {
	f := fsm.NewFSM(catalogue)
	f.OnRefused = func(index uint64, err error, malformed bool) {
		if malformed {
			log.Error("skipping malformed log entry", "index", index, "error", err)
		} else {
			log.Debug("command refused", "index", index, "error", err)
		}
	}
	return f
}

func tlsListener(ln net.Listener, t *cluster.TLS) net.Listener {
	return tls.NewListener(ln, t.Server.Clone())
}

// AddInsecure records more of what the server exposes unprotected, for
// GET /v1/status.
func (s *Server) AddInsecure(notes ...string) { s.api.AddInsecure(notes...) }

// Insecure lists what this server exposes beyond its own machine without
// protection (empty when nothing): a listener on a non-loopback address
// in plaintext, Raft taking peers without client certificates, gossip
// without encryption. GET /v1/status shows it as "insecure".
func (s *Server) Insecure() []string { return s.api.Insecure() }
