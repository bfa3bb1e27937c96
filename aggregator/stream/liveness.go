package stream

import (
	"context"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/loop"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// liveness expires silent agents. Every server notes when it last heard
// from each agent on its streams; only the leader acts, through the log:
// an agent silent for longer than the grace period has its contribution
// expired, and an expired agent gone for longer than the forget period has
// its record dropped. A server that becomes leader gives every agent a fresh
// grace period, since it has not heard from agents that were streaming to
// the previous leader.
type liveness struct {
	log    hclog.Logger
	raft   *raft.Raft
	fsm    fsm.Reader
	clock  *Clock
	now    func() time.Time
	grace  time.Duration
	forget time.Duration

	mu   sync.Mutex
	seen map[string]time.Time
}

// heard notes a frame from an agent.
func (l *liveness) heard(agent string) {
	t := l.now()
	l.mu.Lock()
	l.seen[agent] = t
	l.mu.Unlock()
}

// run does the leader's periodic duties: expiring and forgetting agents,
// and proposing scheduled plan changes once due.
func (l *liveness) run(ctx context.Context) {
	var leaderSince time.Time
	loop.Every(ctx, min(l.grace/4, 250*time.Millisecond), func() {
		if l.raft.State() != raft.Leader {
			leaderSince = time.Time{}
			return
		}
		if leaderSince.IsZero() {
			leaderSince = l.now()
		}
		expire, forget := l.due(leaderSince)
		l.propose(fsm.CmdExpire, expire)
		l.propose(fsm.CmdForget, forget)
		l.applyDue()
	})
}

// applyDue proposes the scheduled plan changes whose time has come; the
// state machine applies each at its own scheduled time.
func (l *liveness) applyDue() {
	now := l.now().UnixNano()
	due := false
	l.fsm.Read(func(s fsm.View) {
		for _, sc := range s.ScheduledAll() {
			due = due || sc.At <= now
		}
	})
	if !due {
		return
	}
	data, err := fsm.EncodeCmd(fsm.CmdApplyDue, &fsm.ApplyDueCmd{Time: l.clock.Stamp()})
	if err == nil {
		err = l.raft.Apply(data, 5*time.Second).Error()
	}
	if err != nil {
		l.log.Warn("scheduled plan changes not applied yet; retrying", "error", err)
	}
}

// due lists the agents to expire and to forget now.
func (l *liveness) due(leaderSince time.Time) (expire, forget []fsm.AgentRef) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fsm.Read(func(s fsm.View) {
		for id, rec := range s.Agents() {
			if rec.Expired {
				if now.Sub(time.Unix(0, rec.LastSeen)) > l.forget {
					forget = append(forget, fsm.AgentRef{ID: id, Epoch: rec.Epoch})
				}
				continue
			}
			last, ok := l.seen[id]
			if !ok || last.Before(leaderSince) {
				last = leaderSince
			}
			if now.Sub(last) > l.grace {
				expire = append(expire, fsm.AgentRef{ID: id, Epoch: rec.Epoch})
			}
		}
	})
	for id := range l.seen { // bounded by the agents the cluster knows
		if t := l.seen[id]; now.Sub(t) > l.forget {
			delete(l.seen, id)
		}
	}
	return expire, forget
}

func (l *liveness) propose(kind fsm.CmdKind, refs []fsm.AgentRef) {
	if len(refs) == 0 {
		return
	}
	data, err := fsm.EncodeCmd(kind, &fsm.AgentsCmd{Time: l.clock.Stamp(), Agents: refs})
	if err != nil {
		l.log.Error("encoding agent expiry", "error", err)
		return
	}
	if err := l.raft.Apply(data, 5*time.Second).Error(); err != nil {
		l.log.Warn("agent expiry not committed; retrying at the next check", "error", err)
		return
	}
	what := "expired silent agents"
	if kind == fsm.CmdForget {
		what = "forgot agents gone past the forget period"
	}
	ids := make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.ID
	}
	l.log.Info(what, "agents", ids)
}
