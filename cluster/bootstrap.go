package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapPoll is how often a server waiting for BootstrapExpect looks at
// gossip again.
const bootstrapPoll = 250 * time.Millisecond

// bootstrapExpect forms a new cluster once BootstrapExpect servers see each
// other alive in gossip. It runs only on a data directory without Raft
// state, and ends as soon as this server has Raft state (it bootstrapped,
// or a leader reached it) or learns that a cluster already exists.
//
// The choice is deterministic: among the alive servers that advertise a
// Raft address and the same BootstrapExpect, sorted by id, the first
// BootstrapExpect are the founding voters, and the lowest id of them bootstraps Raft with all of them; the
// others wait for the leader it elects to contact them. Before it
// bootstraps, the chosen server asks each other founder for its Raft stats
// and gives up if any of them already holds Raft state (a late server with
// a low id that finds a running cluster joins it instead of founding
// another); a founder that cannot be asked delays the bootstrap.
func (n *Node) bootstrapExpect() {
	defer n.wg.Done()
	want := n.cfg.BootstrapExpect
	tick := time.NewTicker(bootstrapPoll)
	defer tick.Stop()
	var lastNote string
	note := func(msg string, args ...any) {
		if s := fmt.Sprint(msg, args); s != lastNote {
			lastNote = s
			n.log.Info("bootstrap-expect: "+msg, args...)
		}
	}
	for {
		if n.Raft.LastIndex() > 0 {
			note("this server has Raft state; done")
			return
		}
		founders := n.aliveServers()
		switch {
		case len(founders) < want:
			note("waiting for servers with the same bootstrap-expect", "alive", len(founders), "expect", want)
		case founders[0].id != string(n.id) && !contains(founders[:want], string(n.id)):
			note("more servers than expected are alive; waiting to be added by the leader", "alive", len(founders), "expect", want)
		case founders[0].id != string(n.id):
			note("waiting for the server with the lowest id to bootstrap", "bootstrapper", founders[0].id)
		default:
			done, err := n.bootstrapWith(founders[:want])
			if err != nil {
				n.log.Warn("bootstrap-expect: not bootstrapping yet", "error", err)
			}
			if done {
				return
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// bootstrapWith checks that no founder is in a cluster yet and bootstraps
// Raft with all of them as voters. done reports that the loop should end.
func (n *Node) bootstrapWith(founders []record) (done bool, err error) {
	for _, f := range founders {
		if f.id == string(n.id) {
			continue
		}
		if f.meta.HTTP == "" {
			n.log.Warn("bootstrap-expect: server advertises no HTTP address; cannot check it holds no Raft state", "id", f.id)
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		st, err := n.fetchStats(ctx, f.meta.HTTP)
		cancel()
		if err != nil {
			return false, fmt.Errorf("ask %s for its Raft state: %w", f.id, err)
		}
		if st.hasState() {
			n.log.Info("bootstrap-expect: a cluster exists already; waiting to be added by its leader", "member", f.id, "term", st.Term)
			return true, nil
		}
	}
	conf := raft.Configuration{}
	ids := make([]string, 0, len(founders))
	for _, f := range founders {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(f.id), Address: raft.ServerAddress(f.meta.Raft)})
		ids = append(ids, f.id)
	}
	if err := n.Raft.BootstrapCluster(conf).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return true, nil // state arrived meanwhile
		}
		return n.ctx.Err() != nil, fmt.Errorf("bootstrap: %w", err)
	}
	n.bootstrapped.Store(true)
	n.log.Info("bootstrap-expect: bootstrapped a new cluster", "voters", ids)
	return true, nil
}

// aliveServers returns the servers alive in gossip that advertise a Raft
// address and this server's BootstrapExpect, sorted by id.
func (n *Node) aliveServers() []record {
	var out []record
	for _, r := range n.members.all() {
		if r.status == StatusAlive && r.seen && !r.leaving && r.meta.Raft != "" && r.expect == n.cfg.BootstrapExpect {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func contains(rs []record, id string) bool {
	for _, r := range rs {
		if r.id == id {
			return true
		}
	}
	return false
}
