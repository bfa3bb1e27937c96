package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// Autopilot settings for a LAN; see the package documentation.
const (
	serverStabilizationTime = 2 * time.Second
	lastContactThreshold    = time.Second
	maxTrailingLogs         = 500
	// manageEvery is how often the run loop syncs the Raft configuration,
	// checks leadership and, on the leader, adds new servers; gossip
	// events and leader changes also wake it.
	manageEvery = time.Second
)

// run is the membership manager of every server with gossip. It keeps the
// member table in step with the Raft configuration, records the known
// members in the data directory, and watches leadership: on gaining it, it
// starts autopilot and adds every alive gossip member missing from the Raft
// configuration as a non-voter (autopilot promotes it once stable); on
// losing it, it stops autopilot.
func (n *Node) run() {
	defer n.wg.Done()
	obsCh := make(chan raft.Observation, 8)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.Raft.RegisterObserver(obs)
	defer n.Raft.DeregisterObserver(obs)
	tick := time.NewTicker(manageEvery)
	defer tick.Stop()
	leading := false
	defer func() {
		if leading {
			<-n.ap.Stop()
		}
	}()
	for {
		isLeader := n.Raft.State() == raft.Leader
		switch {
		case isLeader && !leading:
			n.log.Info("gained leadership: starting autopilot")
			n.ap.Start(n.ctx)
			leading = true
		case !isLeader && leading:
			n.log.Info("lost leadership: stopping autopilot")
			<-n.ap.Stop()
			leading = false
		}
		if f := n.Raft.GetConfiguration(); f.Error() == nil {
			n.members.syncRaft(f.Configuration().Servers)
			if isLeader {
				n.addMissingServers(f.Configuration())
			}
		}
		n.persistMembers()
		n.members.prune(n.cfg.DeadServerReap)
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		case <-obsCh:
		case <-n.members.changed:
		}
	}
}

// addMissingServers (leader only) adds each alive gossip member that
// advertises a Raft address and is missing from conf, or is in it under
// another address, through autopilot: as a non-voter (an address change
// keeps a voter's vote).
func (n *Node) addMissingServers(conf raft.Configuration) {
	in := make(map[raft.ServerID]raft.ServerAddress, len(conf.Servers))
	for _, s := range conf.Servers {
		in[s.ID] = s.Address
	}
	for _, r := range n.members.all() {
		id := raft.ServerID(r.id)
		if id == n.id || r.status != StatusAlive || r.removed || r.leaving || r.meta.Raft == "" {
			continue
		}
		addr := raft.ServerAddress(r.meta.Raft)
		if have, ok := in[id]; ok && have == addr {
			continue
		}
		n.log.Info("adding server to Raft as a non-voter", "id", id, "raft_addr", addr)
		err := n.ap.AddServer(&autopilot.Server{ID: id, Name: r.id, Address: addr, NodeStatus: autopilot.NodeAlive, NodeType: autopilot.NodeVoter})
		if err != nil {
			n.log.Warn("could not add server to Raft", "id", id, "error", err)
		}
	}
}

// autopilotDelegate is autopilot's view of the application.
type autopilotDelegate struct{ n *Node }

// AutopilotConfig: CleanupDeadServers on, with MinQuorum the expected
// cluster size so that reaping never shrinks the voters below it: the
// largest BootstrapExpect this server or any server it knows advertises
// (so a leader that was itself started with Join only keeps it), or 1.
func (d *autopilotDelegate) AutopilotConfig() *autopilot.Config {
	minQuorum := max(1, d.n.cfg.BootstrapExpect)
	for _, r := range d.n.members.all() {
		minQuorum = max(minQuorum, r.expect)
	}
	return &autopilot.Config{
		CleanupDeadServers:      true,
		LastContactThreshold:    lastContactThreshold,
		MaxTrailingLogs:         maxTrailingLogs,
		MinQuorum:               uint(minQuorum),
		ServerStabilizationTime: serverStabilizationTime,
	}
}

// NotifyState logs changes of the cluster's health.
func (d *autopilotDelegate) NotifyState(s *autopilot.State) {
	d.n.log.Trace("autopilot state", "healthy", s.Healthy, "failure_tolerance", s.FailureTolerance, "voters", len(s.Voters))
}

// KnownServers lists every server of the Raft configuration, read live so
// that autopilot never sees one as unknown (it would remove it at once),
// with its gossip status: a server gossip does not show alive is
// NodeFailed, one that left NodeLeft. RemoveFailedServer decides when a
// failed one really goes.
func (d *autopilotDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	n := d.n
	if f := n.Raft.GetConfiguration(); f.Error() == nil {
		n.members.syncRaft(f.Configuration().Servers)
	}
	_, leader := n.Raft.LeaderWithID()
	out := make(map[raft.ServerID]*autopilot.Server)
	for _, r := range n.members.all() {
		if !r.inRaft {
			continue
		}
		st := autopilot.NodeAlive
		switch r.status {
		case StatusFailed, StatusUnknown:
			st = autopilot.NodeFailed
		case StatusLeft:
			st = autopilot.NodeLeft
		}
		id := raft.ServerID(r.id)
		out[id] = &autopilot.Server{
			ID: id, Name: r.id, Address: raft.ServerAddress(r.meta.Raft),
			NodeStatus: st, NodeType: autopilot.NodeVoter, IsLeader: id == leader,
			Meta: map[string]string{"wire": r.meta.Wire, "http": r.meta.HTTP},
		}
	}
	return out
}

// FetchServerStats asks every server for its Raft stats (in parallel, over
// its advertised HTTP address, within ctx); the leader's own come from its
// local Raft. A server that does not answer gets no stats, so autopilot
// holds it unhealthy.
func (d *autopilotDelegate) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	n := d.n
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id := range servers {
		if id == n.id {
			st := n.Stats().autopilot()
			mu.Lock()
			out[id] = st
			mu.Unlock()
			continue
		}
		r, ok := n.members.get(string(id))
		if !ok || r.meta.HTTP == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := n.fetchStats(ctx, r.meta.HTTP)
			if err != nil {
				n.log.Debug("no raft stats from server", "id", id, "error", err)
				return
			}
			mu.Lock()
			out[id] = st.autopilot()
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// RemoveFailedServer is autopilot asking to remove a failed or left
// server; autopilot has already checked MinQuorum. A server that left goes
// at once; a failed one only after it has been failed for DeadServerReap
// (autopilot asks again every reconcile round). It returns at once: the
// removal runs in a goroutine.
func (d *autopilotDelegate) RemoveFailedServer(s *autopilot.Server) {
	n := d.n
	r, ok := n.members.get(string(s.ID))
	if !ok || s.ID == n.id {
		return
	}
	var why string
	switch {
	case r.status == StatusLeft:
		why = "left"
	case r.status == StatusFailed && time.Since(r.since) >= n.cfg.DeadServerReap:
		why = "failed for " + time.Since(r.since).Round(time.Second).String()
	default:
		n.log.Debug("not removing failed server yet", "id", s.ID, "status", r.status,
			"failed_for", time.Since(r.since).Round(time.Second), "reap_after", n.cfg.DeadServerReap)
		return
	}
	if _, busy := n.reaping.LoadOrStore(s.ID, struct{}{}); busy {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.reaping.Delete(s.ID)
		if err := n.Raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
			n.log.Warn("could not remove server from Raft", "id", s.ID, "reason", why, "error", err)
			return
		}
		n.log.Info("removed server from Raft", "id", s.ID, "reason", why)
	}()
}
