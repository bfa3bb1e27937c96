package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
)

// Errors of RemovePeer.
var (
	ErrNotLeader   = errors.New("cluster: not the leader")
	ErrUnknownPeer = errors.New("cluster: no such server in the Raft configuration")
)

// RemovePeer removes server id from the Raft configuration (for `headroom
// raft remove-peer ID`, typically a server that is gone for good). It works
// on the leader only (ErrNotLeader elsewhere: forward to the leader, whose
// address LeaderMeta gives) and blocks until the change is committed. It
// returns ErrUnknownPeer if id is not in the configuration. A removed server
// that is still alive in gossip is not added back until it rejoins gossip
// (restarts), unless leadership moves meanwhile; prefer Leave on the server
// itself. Removing the leader itself makes it step down and stop its Raft.
func (n *Node) RemovePeer(id string) error {
	if n.Raft.State() != raft.Leader {
		return ErrNotLeader
	}
	f := n.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	found := false
	for _, s := range f.Configuration().Servers {
		found = found || s.ID == raft.ServerID(id)
	}
	if !found {
		return ErrUnknownPeer
	}
	n.members.markRemoved(id)
	if err := n.Raft.RemoveServer(raft.ServerID(id), 0, 0).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return ErrNotLeader
		}
		return fmt.Errorf("cluster: remove %s: %w", id, err)
	}
	n.log.Info("removed server from Raft on request", "id", id)
	return nil
}

// removePeerRequest is the body of POST RemovePeerPath.
type removePeerRequest struct {
	ID string `json:"id"`
}

// RemovePeerHandler serves POST {"id":"..."}: RemovePeer on this server.
// Answers: 200 {"removed":id}; 400 bad body; 404 unknown id; 409
// {"error":..., "leader_id":...} when this server is not the leader; 500
// otherwise. The aggregator mounts it at RemovePeerPath; Leave calls it on
// the leader.
func (n *Node) RemovePeerHandler() http.Handler {
	return n.serversOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
			return
		}
		var req removePeerRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: `want {"id":"SERVER-ID"}`})
			return
		}
		switch err := n.RemovePeer(req.ID); {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]string{"removed": req.ID})
		case errors.Is(err, ErrUnknownPeer):
			writeJSON(w, http.StatusNotFound, errorBody{Error: err.Error()})
		case errors.Is(err, ErrNotLeader):
			_, leader := n.Raft.LeaderWithID()
			writeJSON(w, http.StatusConflict, errorBody{Error: err.Error(), LeaderID: string(leader)})
		default:
			writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
		}
	}))
}

// Leave removes this server from the cluster for good, then shuts it down:
// it stops the background work, announces its departure in gossip (so that
// no leader adds it back), hands leadership over if it leads, asks the
// leader (over the leader's HTTP API, RemovePeerPath) to remove it from the
// Raft configuration, and finally runs Shutdown. It blocks until the
// removal is committed or ctx ends, and shuts down either way; the error
// says whether the removal was confirmed. The only voter of a cluster
// cannot leave it: it just shuts down (with an error if other servers
// remain in the configuration). Without gossip a follower does not know the
// leader's HTTP address and waits for ctx. Leave must not be called after
// Shutdown (it then returns an error).
func (n *Node) Leave(ctx context.Context) error {
	n.mlMu.Lock()
	if n.closed.Load() {
		n.mlMu.Unlock()
		return errors.New("cluster: leave: already shut down")
	}
	n.stopManagers()
	if n.ml != nil && !n.mlLeft {
		n.mlLeft = true
		timeout := 3 * time.Second
		if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
			timeout = max(time.Until(d), time.Millisecond)
		}
		// Announce the departure in metadata first, so the others record
		// a server that left, not one that failed.
		g := newGossipMeta(n.meta, n.cfg.BootstrapExpect)
		g.Leaving = true
		if b, err := encodeMeta(g); err == nil {
			n.gossipMeta.set(b)
			if err := n.ml.UpdateNode(timeout); err != nil {
				n.log.Warn("gossip: announcing the leave", "error", err)
			}
		}
		if err := n.ml.Leave(timeout); err != nil {
			n.log.Warn("gossip leave", "error", err)
		}
	}
	n.mlMu.Unlock()
	err := n.removeSelf(ctx)
	if err != nil {
		n.log.Warn("leaving: removal from Raft not confirmed", "error", err)
	} else {
		n.log.Info("left the cluster")
	}
	return errors.Join(err, n.Shutdown())
}

// removeSelf gets this server out of the Raft configuration.
func (n *Node) removeSelf(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("cluster: leave: %w", ctx.Err())
		}
		f := n.Raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("cluster: leave: %w", err)
		}
		in, others := false, 0
		for _, s := range f.Configuration().Servers {
			if s.ID == n.id {
				in = true
			} else {
				others++
			}
		}
		if !in {
			return nil
		}
		if n.Raft.State() == raft.Leader {
			if otherVoters(n.Raft, n.id) == 0 {
				if others > 0 {
					return errors.New("cluster: leave: this is the only voter; the other servers are left without one")
				}
				return nil
			}
			n.log.Info("leaving: handing leadership over")
			if err := waitFuture(ctx, n.Raft.LeadershipTransfer()); err != nil {
				n.log.Warn("leaving: leadership transfer failed; removing this server directly", "error", err)
				if err := waitFuture(ctx, n.Raft.RemoveServer(n.id, 0, 0)); err != nil {
					n.log.Warn("leaving: could not remove this server", "error", err)
					continue
				}
				return nil
			}
			continue
		}
		leader, ok := n.LeaderMeta()
		if !ok || leader.HTTP == "" {
			continue
		}
		err := n.askRemove(ctx, leader.HTTP)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrUnknownPeer):
			return nil
		default:
			n.log.Debug("leaving: leader could not remove this server yet", "error", err)
		}
	}
}

// askRemove posts RemovePeer(self) to the server whose HTTP API is at
// httpAddr.
func (n *Node) askRemove(ctx context.Context, httpAddr string) error {
	body, _ := json.Marshal(removePeerRequest{ID: string(n.id)})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, n.scheme+"://"+httpAddr+RemovePeerPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: n.transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusNotFound:
		return ErrUnknownPeer
	default:
		return fmt.Errorf("%s: %s %s", httpAddr, resp.Status, bytes.TrimSpace(msg))
	}
}
