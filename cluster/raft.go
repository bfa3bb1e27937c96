// Package cluster runs the Raft node that replicates the aggregator's state
// machine: log and stable store (raft-wal), snapshots (raft's file store),
// TCP transport, and the timings tuned for a LAN cluster. It knows nothing of
// what the state machine holds.
package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
)

// Config configures a Raft node.
type Config struct {
	// DataDir holds the log (raft/wal), the snapshots (raft/snapshots). (Required)
	DataDir string
	// BindAddr is the TCP address Raft listens on. (Required)
	BindAddr string
	// AdvertiseAddr is the address other servers use to reach this one.
	// (Optional, default the bound address, which must then not be an
	// unspecified address such as 0.0.0.0)
	AdvertiseAddr string
	// ServerID is this server's Raft id. (Required)
	ServerID string
	// Bootstrap makes this node form a single-voter cluster when its data
	// directory holds no Raft state yet; with existing state it does nothing,
	// so the same command line restarts a node. (Optional)
	Bootstrap bool
	// Logger is the parent logger; Raft logs under "raft". (Optional)
	Logger hclog.Logger
	// Tuning overrides the LAN defaults of Tuned. (Optional)
	Tuning func(*raft.Config)
}

// Node is a running Raft node.
type Node struct {
	Raft      *raft.Raft
	Transport *raft.NetworkTransport
	wal       *raftwal.WAL
	id        raft.ServerID
	addr      raft.ServerAddress
}

// Tuned returns Raft's configuration tuned for servers on one LAN:
// heartbeats and elections about five times faster than raft's defaults
// (which are sized for WANs), so a dead leader is replaced in about a second;
// large append batches so a burst of agent batches is written and replicated
// together; a snapshot every 16,384 entries or 30 s, keeping 10,240 entries
// behind it so a briefly absent follower catches up from the log and one
// that fell further behind is sent the snapshot.
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

// Open starts a Raft node around fsm.
func Open(cfg Config, fsm raft.FSM) (*Node, error) {
	if cfg.DataDir == "" || cfg.BindAddr == "" || cfg.ServerID == "" {
		return nil, errors.New("cluster: DataDir, BindAddr and ServerID are required")
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	rlog := log.Named("raft")
	var advTCP net.Addr // nil: the address the listener bound
	if cfg.AdvertiseAddr != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster: advertise address %q: %w", cfg.AdvertiseAddr, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			return nil, fmt.Errorf("cluster: advertise address %q is not one others can reach", cfg.AdvertiseAddr)
		}
		advTCP = a
	}
	walDir := filepath.Join(cfg.DataDir, "raft", "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	wal, err := raftwal.Open(walDir, raftwal.WithLogger(rlog.Named("wal")))
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log in %s: %w", walDir, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "raft"), 2, rlog.Named("snapshots"))
	if err != nil {
		wal.Close()
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	trans, err := raft.NewTCPTransportWithLogger(cfg.BindAddr, advTCP, 4, 10*time.Second, rlog.Named("transport"))
	if err != nil {
		wal.Close()
		return nil, fmt.Errorf("cluster: raft transport on %s: %w", cfg.BindAddr, err)
	}
	rc := Tuned(cfg.ServerID)
	rc.Logger = rlog
	if cfg.Tuning != nil {
		cfg.Tuning(rc)
	}
	n := &Node{Transport: trans, wal: wal, id: rc.LocalID, addr: trans.LocalAddr()}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(wal, wal, snaps)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("cluster: inspect raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: n.id, Address: n.addr}}}
			if err := raft.BootstrapCluster(rc, wal, wal, snaps, trans, conf); err != nil {
				n.closeStores()
				return nil, fmt.Errorf("cluster: bootstrap: %w", err)
			}
			log.Info("bootstrapped a new cluster", "id", n.id, "raft_addr", n.addr)
		}
	}
	r, err := raft.NewRaft(rc, fsm, wal, wal, snaps, trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	n.Raft = r
	return n, nil
}

// ID is this node's server id.
func (n *Node) ID() string { return string(n.id) }

// Addr is this node's advertised Raft address.
func (n *Node) Addr() string { return string(n.addr) }

func (n *Node) closeStores() {
	n.Transport.Close()
	n.wal.Close()
}

// Shutdown stops Raft and closes its stores. It blocks until done.
func (n *Node) Shutdown() error {
	err := n.Raft.Shutdown().Error()
	n.closeStores()
	return err
}

// Ready reports whether this node knows a leader and has applied every entry
// up to the commit index it knows, with the reason when it has not.
func (n *Node) Ready() (bool, string) {
	addr, _ := n.Raft.LeaderWithID()
	if addr == "" {
		return false, "no leader known"
	}
	applied, commit := n.Raft.AppliedIndex(), n.Raft.CommitIndex()
	if applied < commit {
		return false, fmt.Sprintf("applied index %d behind commit index %d", applied, commit)
	}
	return true, ""
}
