package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// DefaultDeadServerReap is how long a server must stay failed before the
// leader removes it from the Raft configuration, unless Config says
// otherwise.
const DefaultDeadServerReap = 5 * time.Minute

// Config configures a server: its Raft node and, with GossipAddr set, its
// gossip membership.
type Config struct {
	// DataDir holds the log (raft/raft.db), the snapshots (raft/snapshots) and
	// the known members (members.json). Open refuses a damaged store with a
	// CorruptError and one another process holds with an InUseError (see
	// storage.go). (Required)
	DataDir string
	// BindAddr is the TCP address Raft listens on; port 0 picks a free
	// port. (Required)
	BindAddr string
	// AdvertiseAddr is the host:port other servers use to reach Raft.
	// (Optional, default AdvertiseAddr(the bound address, AdvertiseHost))
	AdvertiseAddr string
	// ServerID is this server's Raft id and its memberlist node name; the
	// caller keeps it stable across restarts. (Required)
	ServerID string
	// Bootstrap makes this node form a single-voter cluster when its data
	// directory holds no Raft state yet; with existing state it does nothing,
	// so the same command line restarts a node. Servers that join it over
	// gossip later are added by its leader. Not with BootstrapExpect.
	// (Optional)
	Bootstrap bool
	// Logger is the parent logger; Raft logs under "raft", memberlist
	// under "memberlist", autopilot under "autopilot". (Optional)
	Logger hclog.Logger
	// Tuning overrides the LAN defaults of Tuned. (Optional)
	Tuning func(*raft.Config)
	// Applied returns the index of the last entry the state machine has
	// consumed (Raft's own applied index only says what was handed to it).
	// Ready uses it when set. (Optional)
	Applied func() uint64

	// GossipAddr is the host:port memberlist binds (UDP and TCP); port 0
	// picks a free port. Empty runs no gossip: a single server as before,
	// with no automatic membership. (Optional)
	GossipAddr string
	// AdvertiseHost is the host (name or IP, no port) others use to reach
	// this server's listeners: gossip, and Raft when AdvertiseAddr is
	// empty. (Optional, default: the bound host, or the machine's private
	// address when bound to all interfaces; see AdvertiseAddr)
	AdvertiseHost string
	// Join lists gossip addresses (host:port) of servers to join. They are
	// retried in the background with exponential backoff until one answers,
	// together with the members recorded in DataDir. Needs GossipAddr.
	// (Optional)
	Join []string
	// BootstrapExpect, when above 0, forms a new cluster once that many
	// servers (this one included) see each other alive in gossip: the one
	// with the lowest ServerID among them bootstraps Raft with all of them
	// as voters. A no-op on a DataDir that holds Raft state. Every server
	// of a new cluster should be given the same value. It is gossiped, and
	// the largest value among the known servers is the smallest number of
	// voters the leader keeps when it removes dead servers (MinQuorum; 1
	// when none is set). Needs GossipAddr. (Optional)
	BootstrapExpect int
	// DeadServerReap is how long a server must have been failed in gossip
	// before the leader removes it from Raft. (Optional, default
	// DefaultDeadServerReap)
	DeadServerReap time.Duration
	// Meta is this server's advertised addresses, gossiped to the others.
	// Meta.Raft is always set to the Raft advertise address. (Optional)
	Meta Meta
	// Gossip adjusts memberlist's configuration (derived from
	// memberlist.DefaultLANConfig) after the addresses are set; Name,
	// Delegate, Events, Ping and Keyring are always ours. Tests use it to
	// shorten ProbeInterval, SuspicionMult or GossipToTheDeadTime.
	// (Optional)
	Gossip func(*memberlist.Config)
	// GossipKey encrypts gossip (16, 24 or 32 bytes: AES-128, -192 or
	// -256) when the data directory holds no keyring yet; the keyring file
	// there (see keyring.go) wins once it exists. (Optional, default: no
	// encryption unless the data directory holds a keyring)
	GossipKey []byte
	// TLS carries Raft, and this server's calls to the other servers' HTTP
	// APIs, over TLS; every server of a cluster must have it or none.
	// (Optional, default plaintext)
	TLS *TLS
	// LockWait is how long Open waits for raft.db's lock held by another
	// process before it fails with an InUseError. (Optional, default
	// DefaultLockTimeout)
	LockWait time.Duration
}

func (c *Config) lockWait() time.Duration {
	if c.LockWait > 0 {
		return c.LockWait
	}
	return DefaultLockTimeout
}

// logCacheSize is how many recent log entries are kept in memory in front
// of the log store, so replicating to followers rarely reads from disk.
const logCacheSize = 1024

// Node is a running server: Raft, and with gossip configured, memberlist
// and the goroutines that keep the two in step.
//
// All methods are safe for concurrent use.
type Node struct {
	Raft      *raft.Raft
	Transport *raft.NetworkTransport
	db        *raftboltdb.BoltStore // the log and the stable store
	stores    *stores               // db and the snapshots, closed with their digest
	startLast uint64                // last log index on disk at start
	id        raft.ServerID
	addr      raft.ServerAddress

	cfg  Config
	log  hclog.Logger
	meta Meta // our own, with Raft set

	ml         *memberlist.Memberlist // nil without gossip
	mlKeyring  *memberlist.Keyring    // nil: gossip unencrypted
	gossipBind string                 // host:port memberlist bound
	raftBind   string                 // host:port Raft listens on
	gossipMeta *gossipDelegate
	probeEvery time.Duration // memberlist's probe interval plus timeout
	// membersWritten is what members.json was last written with.
	membersWritten []byte
	mlMu           sync.Mutex // orders memberlist's Leave before its Shutdown
	mlLeft         bool       // memberlist.Leave was called (under mlMu)
	members        *memberTable
	ap             *autopilot.Autopilot
	client         *http.Client    // calls to other servers (stats)
	transport      *http.Transport // client's, shared by the other calls
	scheme         string          // of other servers' HTTP APIs: http or https
	keyMu          sync.Mutex      // orders keyring changes and their file writes

	ctx      context.Context // cancelled when the managers stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup // run loop, bootstrap loop, reaping
	joinDone chan struct{}  // closed when the join loop ends (nil: none)

	bootstrapped atomic.Bool // this node performed the BootstrapExpect bootstrap
	reaping      sync.Map    // raft.ServerID -> struct{}: removals in flight

	stopOnce, shutdownOnce sync.Once
	closed                 atomic.Bool // Shutdown has begun
	shutdownErr            error
}

// Tuned returns Raft's configuration tuned for servers on one LAN; see the
// package documentation for the reasons behind each figure.
func Tuned(id string) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.MaxAppendEntries = 512
	c.BatchApplyCh = true
	c.SnapshotInterval = 30 * time.Second
	c.SnapshotThreshold = 16384
	c.TrailingLogs = 10240
	return c
}

// Open starts a server around fsm: Raft, and when cfg.GossipAddr is set,
// memberlist plus the background work (joining, bootstrap-expect, and on
// the leader the membership reconcile loop and autopilot). It returns once
// the listeners are bound; joining and bootstrapping go on in the
// background and never block it. Call Shutdown (or Leave) to stop.
func Open(cfg Config, fsm raft.FSM) (*Node, error) {
	if cfg.DataDir == "" || cfg.BindAddr == "" || cfg.ServerID == "" {
		return nil, errors.New("cluster: DataDir, BindAddr and ServerID are required")
	}
	switch {
	case cfg.BootstrapExpect < 0:
		return nil, errors.New("cluster: BootstrapExpect must not be negative")
	case cfg.Bootstrap && cfg.BootstrapExpect > 0:
		return nil, errors.New("cluster: Bootstrap and BootstrapExpect exclude each other")
	case cfg.GossipAddr == "" && (cfg.BootstrapExpect > 0 || len(cfg.Join) > 0):
		return nil, errors.New("cluster: BootstrapExpect and Join need a gossip address")
	case cfg.DeadServerReap < 0:
		return nil, errors.New("cluster: DeadServerReap must not be negative")
	case cfg.GossipKey != nil && cfg.GossipAddr == "":
		return nil, errors.New("cluster: GossipKey needs a gossip address")
	}
	if cfg.GossipKey != nil {
		if err := memberlist.ValidateKey(cfg.GossipKey); err != nil {
			return nil, fmt.Errorf("cluster: gossip key of %d bytes: want 16, 24 or 32", len(cfg.GossipKey))
		}
	}
	if cfg.TLS != nil {
		if err := cfg.TLS.check(); err != nil {
			return nil, err
		}
	}
	if cfg.DeadServerReap == 0 {
		cfg.DeadServerReap = DefaultDeadServerReap
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	cfg.Logger = log
	rlog := log.Named("raft")

	st, err := openStores(cfg.DataDir, cfg.lockWait(), rlog)
	if err != nil {
		return nil, err
	}
	db, snaps := st.db, st.snaps
	logs, err := raft.NewLogCache(logCacheSize, db)
	if err != nil {
		st.close(rlog)
		return nil, fmt.Errorf("cluster: %w", err)
	}
	trans, raftBind, err := newTransport(cfg, rlog.Named("transport"))
	if err != nil {
		st.close(rlog)
		return nil, err
	}
	rc := Tuned(cfg.ServerID)
	rc.Logger = rlog
	if cfg.Tuning != nil {
		cfg.Tuning(rc)
	}
	n := &Node{
		Transport: trans, db: db, stores: st, id: rc.LocalID, addr: trans.LocalAddr(),
		cfg: cfg, log: log, raftBind: raftBind,
	}
	n.transport, n.client, n.scheme = newHTTPClient(cfg.TLS)
	n.meta = cfg.Meta
	n.meta.Raft = string(n.addr)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	has, err := raft.HasExistingState(logs, db, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("cluster: inspect raft state: %w", err)
	}
	if cfg.Bootstrap && !has {
		conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: n.id, Address: n.addr}}}
		if err := raft.BootstrapCluster(rc, logs, db, snaps, trans, conf); err != nil {
			n.closeStores()
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster", "id", n.id, "raft_addr", n.addr)
	}
	// Entries already on disk will be applied again once a leader confirms
	// the commit index: until then this node's commit index says too little.
	if n.startLast, err = logs.LastIndex(); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	r, err := raft.NewRaft(rc, fsm, logs, db, snaps, trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	n.Raft = r
	n.members = newMemberTable(string(n.id), cfg.GossipAddr != "", n.meta, cfg.BootstrapExpect)
	if cfg.GossipAddr == "" {
		return n, nil
	}
	if err := n.startGossip(); err != nil {
		n.Raft.Shutdown().Error()
		n.closeStores()
		return nil, err
	}
	n.ap = autopilot.New(n.Raft, &autopilotDelegate{n},
		autopilot.WithLogger(log),
		autopilot.WithUpdateInterval(autopilotUpdateInterval),
		autopilot.WithReconcileInterval(autopilotReconcileInterval))
	n.wg.Add(1)
	go n.run()
	if cfg.BootstrapExpect > 0 {
		if has {
			log.Info("bootstrap-expect: the data directory holds Raft state; not bootstrapping", "expect", cfg.BootstrapExpect)
		} else {
			n.wg.Add(1)
			go n.bootstrapExpect()
		}
	}
	n.startJoin()
	log.Info("cluster membership started", "id", n.id, "raft", n.addr, "gossip", n.GossipAddr(),
		"bootstrap_expect", cfg.BootstrapExpect, "join", cfg.Join)
	return n, nil
}

// newTransport listens for Raft first, so that the advertised address can
// be derived from the real port (0 picks one) and the machine's address
// (when bound to all interfaces), then wraps the listener in raft's network
// transport.
func newTransport(cfg Config, log hclog.Logger) (*raft.NetworkTransport, string, error) {
	adv := cfg.AdvertiseAddr
	if adv != "" {
		a, err := net.ResolveTCPAddr("tcp", adv)
		if err != nil {
			return nil, "", fmt.Errorf("cluster: advertise address %q: %w", adv, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() || a.Port == 0 {
			return nil, "", fmt.Errorf("cluster: advertise address %q is not one others can reach", adv)
		}
	}
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, "", fmt.Errorf("cluster: raft listen on %s: %w", cfg.BindAddr, err)
	}
	if adv == "" {
		if adv, err = AdvertiseAddr(ln.Addr().String(), cfg.AdvertiseHost); err != nil {
			ln.Close()
			return nil, "", err
		}
	}
	advAddr, err := net.ResolveTCPAddr("tcp", adv)
	if err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("cluster: advertise address %q: %w", adv, err)
	}
	var stream raft.StreamLayer = &tcpStream{Listener: ln, adv: advAddr}
	if cfg.TLS != nil {
		stream = newTLSStream(ln, advAddr, cfg.TLS, log)
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 4, Timeout: 10 * time.Second, Logger: log,
	}), ln.Addr().String(), nil
}

// tcpStream is raft's StreamLayer over plain TCP, advertising adv.
type tcpStream struct {
	net.Listener
	adv net.Addr
}

func (s *tcpStream) Addr() net.Addr { return s.adv }

func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// ID is this node's server id.
func (n *Node) ID() string { return string(n.id) }

// Addr is this node's advertised Raft address.
func (n *Node) Addr() string { return string(n.addr) }

func (n *Node) closeStores() {
	n.Transport.Close()
	n.stores.close(n.log)
}

// stopManagers stops the background work (run loop and autopilot,
// bootstrap loop, reaping) and waits for it. The join loop is only told to
// stop: a join attempt in flight can take memberlist's TCPTimeout.
func (n *Node) stopManagers() {
	n.stopOnce.Do(func() {
		n.cancel()
		n.wg.Wait()
	})
}

// Shutdown stops this server without leaving the cluster, as on SIGTERM:
// it stays a voter so a rolling restart does not churn the configuration,
// and the others see it failed until it returns (or DeadServerReap
// passes). If it is the leader and other voters exist it first hands
// leadership over (waiting at most a few seconds). Then it stops the
// background work, Raft and memberlist, records the known members and
// closes the stores. It blocks until done; later calls return the first
// call's result.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		n.mlMu.Lock()
		n.closed.Store(true)
		n.mlMu.Unlock()
		n.stopManagers()
		n.handOver()
		n.shutdownErr = n.Raft.Shutdown().Error()
		if n.ml != nil {
			if err := n.ml.Shutdown(); err != nil {
				n.log.Warn("memberlist shutdown", "error", err)
			}
			if n.joinDone != nil {
				select {
				case <-n.joinDone:
				case <-time.After(2 * time.Second):
					n.log.Debug("a join attempt is still in flight; not waiting for it")
				}
			}
			n.persistMembers()
		}
		n.closeStores()
		n.transport.CloseIdleConnections()
	})
	return n.shutdownErr
}

// handOver transfers leadership when this node leads and other voters
// exist, waiting at most handOverWait.
func (n *Node) handOver() {
	if n.Raft.State() != raft.Leader || otherVoters(n.Raft, n.id) == 0 {
		return
	}
	n.log.Info("handing leadership over before shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), handOverWait)
	defer cancel()
	if err := waitFuture(ctx, n.Raft.LeadershipTransfer()); err != nil {
		n.log.Warn("leadership transfer failed", "error", err)
	}
}

const handOverWait = 5 * time.Second

// otherVoters counts the voters of r's latest configuration other than id.
func otherVoters(r *raft.Raft, id raft.ServerID) int {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	k := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != id {
			k++
		}
	}
	return k
}

// waitFuture waits for f or ctx, whichever ends first.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether this node knows a leader and its state machine has
// consumed every command entry up to the commit index it knows (and, after
// a restart, every one it had on disk), with the reason when it has not.
// Entries the state machine never sees, such as a new leader's no-op or
// configuration changes, do not count; entries no longer in the log
// (truncated, or compacted behind a snapshot) end the scan.
func (n *Node) Ready() (bool, string) {
	addr, _ := n.Raft.LeaderWithID()
	if addr == "" {
		return false, "no leader known"
	}
	applied, commit := n.Raft.AppliedIndex(), n.Raft.CommitIndex()
	if n.cfg.Applied != nil {
		// After a restart the commit index starts low and catches up with
		// the leader's first successful append; the entries this node had
		// on disk count until the state machine has them.
		commit = max(commit, n.startLast)
		applied = n.cfg.Applied()
		if commit > applied && commit-applied > readyScan {
			return false, fmt.Sprintf("state machine at index %d, commit index %d", applied, commit)
		}
		// Entries up to the latest snapshot are in the state machine (it
		// took or restored that snapshot), whatever its last command was.
		snap, _ := strconv.ParseUint(n.Raft.Stats()["last_snapshot_index"], 10, 64)
		for i := max(applied, snap) + 1; i <= commit; i++ {
			var e raft.Log
			if err := n.db.GetLog(i, &e); err != nil {
				break // not in the log (a truncated tail): nothing more to apply
			}
			if e.Type == raft.LogCommand {
				return false, fmt.Sprintf("state machine at index %d, commit index %d", applied, commit)
			}
		}
		return true, ""
	}
	if applied < commit {
		return false, fmt.Sprintf("applied index %d behind commit index %d", applied, commit)
	}
	return true, ""
}

// readyScan bounds the entries Ready inspects beyond the state machine's
// index; further behind than that, the node is simply not ready.
const readyScan = 256
