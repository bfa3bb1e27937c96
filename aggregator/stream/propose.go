package stream

import (
	"context"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/raft"
)

// Clock stamps log entries. Stamps never go backwards, also across a
// leader change: a new stamp is at least the last time the FSM applied.
type Clock struct {
	now  func() time.Time
	fsm  fsm.Reader
	mu   sync.Mutex
	last int64
}

// NewClock returns a clock that reads now and never stamps before what fsm
// last applied.
func NewClock(now func() time.Time, fsm fsm.Reader) *Clock { return &Clock{now: now, fsm: fsm} }

// Stamp is the time for a new log entry, unix ns. Safe for concurrent use.
func (c *Clock) Stamp() int64 {
	t := c.now().UnixNano()
	var applied int64
	c.fsm.Read(func(s fsm.View) { applied = s.Time() })
	c.mu.Lock()
	defer c.mu.Unlock()
	t = max(t, applied, c.last)
	c.last = t
	return t
}

// proposal is one agent message waiting to be put into the log.
type proposal struct {
	item    fsm.AgentItem
	entries int
	// done is called once, in proposal order, from the proposer's
	// completion goroutine; it must not block.
	done func(res fsm.ItemResult, index uint64, err error)
}

type flight struct {
	f     raft.ApplyFuture
	batch []*proposal
	start time.Time
}

// proposer groups many agents' messages into one log entry. Entries are
// proposed without waiting for the previous one to commit (Raft pipelines
// them); results come back in order.
type proposer struct {
	raft        *raft.Raft
	clock       *Clock
	defaultPlan string
	maxItems    int
	maxEntries  int
	// lease and margin are stamped into every entry for its grants.
	lease, margin time.Duration
	// observe, if set, is told how long each entry took from proposal to
	// result.
	observe func(time.Duration)
	// grouped, if set, is told how many agent messages each entry holds.
	grouped  func(n int)
	in       chan *proposal
	inflight chan flight
}

func newProposer(r *raft.Raft, clock *Clock, defaultPlan string) *proposer {
	return &proposer{
		raft: r, clock: clock, defaultPlan: defaultPlan,
		maxItems: 512, maxEntries: 64 << 10,
		in:       make(chan *proposal, 4096),
		inflight: make(chan flight, 64),
	}
}

// submit queues p; it blocks while the queue is full (back-pressure on the
// agent's stream) and fails when ctx ends.
func (p *proposer) submit(ctx context.Context, pr *proposal) error {
	select {
	case p.in <- pr:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *proposer) run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for fl := range p.inflight {
			p.complete(fl)
		}
	}()
	defer func() {
		close(p.inflight)
		<-done
	}()
	for {
		var first *proposal
		select {
		case first = <-p.in:
		case <-ctx.Done():
			return
		}
		batch := []*proposal{first}
		entries := first.entries
	drain:
		for len(batch) < p.maxItems && entries < p.maxEntries {
			select {
			case pr := <-p.in:
				batch = append(batch, pr)
				entries += pr.entries
			default:
				break drain
			}
		}
		cmd := fsm.AgentItemsCmd{Time: p.clock.Stamp(), DefaultPlan: p.defaultPlan, Items: make([]fsm.AgentItem, len(batch)),
			Lease: int64(p.lease), Margin: int64(p.margin)}
		for i, pr := range batch {
			cmd.Items[i] = pr.item
		}
		data, err := fsm.EncodeCmd(fsm.CmdAgentItems, &cmd)
		if err != nil {
			for _, pr := range batch {
				pr.done(fsm.ItemResult{}, 0, err)
			}
			continue
		}
		if p.grouped != nil {
			p.grouped(len(batch))
		}
		start := time.Now()
		p.inflight <- flight{f: p.raft.Apply(data, 10*time.Second), batch: batch, start: start}
	}
}

func (p *proposer) complete(fl flight) {
	err := fl.f.Error()
	if p.observe != nil && err == nil {
		p.observe(time.Since(fl.start))
	}
	if err != nil {
		for _, pr := range fl.batch {
			pr.done(fsm.ItemResult{}, 0, err)
		}
		return
	}
	res, _ := fl.f.Response().(*fsm.ApplyResult)
	for i, pr := range fl.batch {
		if res == nil || res.Err != nil || i >= len(res.Items) {
			pr.done(fsm.ItemResult{Status: fsm.StatusInvalid}, fl.f.Index(), nil)
			continue
		}
		pr.done(res.Items[i], fl.f.Index(), nil)
	}
}
