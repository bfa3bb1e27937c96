package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// TestClusterGroupedEntriesThroughFailover: many agents stream batches
// without waiting for each acknowledgement, so that the leader groups
// several agents' batches into one log entry; the leader is killed in the
// middle, and every agent resends from its last acknowledged batch to the
// new leader, some of them applied already. Every batch counts exactly
// once on every server, and the leaders did group entries (their
// headroom_raft_entry_agent_messages histogram).
func TestClusterGroupedEntriesThroughFailover(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	const (
		nAgents  = 16
		nBatches = 400
		window   = 64 // batches sent and not acknowledged, per agent
	)
	tn := "grouped-t"
	c.setPlans([]string{tn}, "payg")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	agents := make([]*rawAgent, nAgents)
	var wg sync.WaitGroup
	errs := make(chan error, nAgents)
	for i := range agents {
		agents[i] = &rawAgent{id: fmt.Sprintf("grouped-agent-%d-%s", i, randSuffix()),
			epoch: uint64(time.Now().UnixNano()) + uint64(i), tenant: tn, total: nBatches, window: window}
		wg.Add(1)
		go func(a *rawAgent) {
			defer wg.Done()
			if err := a.run(ctx, func() []string { return wireAddrs(c.running()) }); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", a.id, err)
			}
		}(agents[i])
	}
	defer func() { cancel(); wg.Wait() }()
	acked := func() (n uint64) {
		for _, a := range agents {
			n += a.acked.Load()
		}
		return n
	}
	check := func() error {
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	// Kill the leader when half the batches are acknowledged.
	waitFor(t, 120*time.Second, "half the batches acknowledged", func() error {
		if err := check(); err != nil {
			return err
		}
		if n := acked(); n < nAgents*nBatches/2 {
			return fmt.Errorf("%d of %d batches acknowledged", n, nAgents*nBatches)
		}
		return nil
	})
	old, _ := c.waitLeader(30*time.Second, c.servers)
	grouped := leaderGrouping(t, old)
	old.p.kill()
	c.tl.mark("kill -9 of the leader %s at %d of %d batches acknowledged; it had grouped %s", old.name, acked(), nAgents*nBatches, grouped)
	var rest []*hServer
	for _, s := range c.servers {
		if s != old {
			rest = append(rest, s)
		}
	}
	nl, _ := c.waitLeader(30*time.Second, rest)
	old.p.restart()
	waitFor(t, 180*time.Second, "every batch acknowledged", func() error {
		if err := check(); err != nil {
			return err
		}
		if n := acked(); n < nAgents*nBatches {
			return fmt.Errorf("%d of %d batches acknowledged", n, nAgents*nBatches)
		}
		return nil
	})
	var resent, dups uint64
	for _, a := range agents {
		resent += a.resent.Load()
	}
	now, _ := c.waitLeader(30*time.Second, c.servers)
	after := leaderGrouping(t, now)
	c.tl.mark("all %d batches acknowledged; %d resent after the failover; the new leader %s grouped %s", nAgents*nBatches, resent, now.name, after)
	if now == nl {
		dups = metricSum(t, now, `headroom_stream_messages_total{kind="delta",result="duplicate"}`)
	}
	// Exactly once: every batch opened one session.
	want := uint64(nAgents * nBatches)
	waitFor(t, 60*time.Second, "every server counts every batch once", func() error {
		for _, s := range c.servers {
			f, hdr, err := s.tenant(tn)
			if err != nil {
				return err
			}
			if f.Concurrency.Total != want {
				return fmt.Errorf("%s (index %s): %d open, want %d", s.name, hdr.Get("X-Headroom-Index"), f.Concurrency.Total, want)
			}
		}
		return nil
	})
	// Nothing more arrives later (a late double count).
	for i := 0; i < 5; i++ {
		time.Sleep(200 * time.Millisecond)
		for _, s := range c.servers {
			if f, _, err := s.tenant(tn); err != nil || f.Concurrency.Total != want {
				t.Fatalf("%s later: %+v, %v; want %d open", s.name, f.Concurrency, err, want)
			}
		}
	}
	if grouped.multi+after.multi == 0 {
		t.Errorf("no log entry grouped several agents' messages (before the kill %s, after %s)", grouped, after)
	}
	t.Logf("resent after the failover: %d batches, %d of them acknowledged as duplicates by %s", resent, dups, now.name)
	c.tl.summary()
}

func wireAddrs(ss []*hServer) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.wire
	}
	return out
}

type grouping struct{ entries, messages, multi uint64 }

func (g grouping) String() string {
	return fmt.Sprintf("%d agent messages into %d log entries (%d of several)", g.messages, g.entries, g.multi)
}

// leaderGrouping reads a leader's headroom_raft_entry_agent_messages.
func leaderGrouping(t *testing.T, s *hServer) (g grouping) {
	t.Helper()
	text := metricsText(t, s)
	var single uint64
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case f[0] == "headroom_raft_entry_agent_messages_count":
			g.entries = uint64(v)
		case f[0] == "headroom_raft_entry_agent_messages_sum":
			g.messages = uint64(v)
		case f[0] == `headroom_raft_entry_agent_messages_bucket{le="1"}`:
			single = uint64(v)
		}
	}
	g.multi = g.entries - single
	return g
}

func metricsText(t *testing.T, s *hServer) string {
	t.Helper()
	_, body, err := call("GET", s.url("/metrics"), nil)
	if err != nil {
		t.Fatalf("%s /metrics: %v", s.name, err)
	}
	return string(body)
}

// metricSum is the value of one series of s's /metrics (0 if absent).
func metricSum(t *testing.T, s *hServer, series string) uint64 {
	sc := bufio.NewScanner(strings.NewReader(metricsText(t, s)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return uint64(f)
		}
	}
	return 0
}

// rawAgent speaks the wire protocol as an agent that opens one session per
// batch: up to window batches unacknowledged, and after a lost stream it
// resends from its last acknowledged batch to whichever server leads.
type rawAgent struct {
	id            string
	epoch         uint64
	tenant        string
	total, window uint64
	acked         atomic.Uint64 // the highest batch acknowledged
	resent        atomic.Uint64 // batches sent again on a new stream
	sentMax       uint64
}

func (a *rawAgent) batch(seq uint64) *wire.DeltaBatch {
	return &wire.DeltaBatch{AgentID: a.id, Epoch: a.epoch, Seq: seq, AgentTime: time.Now().UnixMilli(),
		Entries: []wire.DeltaEntry{{Tenant: a.tenant, Class: "audio", Opened: 1, Peak: seq}},
		Peaks:   []wire.TenantPeak{{Tenant: a.tenant, Peak: seq}}}
}

func (a *rawAgent) run(ctx context.Context, servers func() []string) error {
	for try := 0; ctx.Err() == nil; try++ {
		addrs := servers()
		if len(addrs) == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		err := a.stream(ctx, addrs[try%len(addrs)])
		if errors.Is(err, errFinished) {
			<-ctx.Done() // keep the contribution alive: the stream answered pings until now
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

var errFinished = errors.New("finished")

// stream is one connection: hello (following redirects), then batches
// from the last acknowledged one. It returns errFinished once every batch
// is acknowledged, after ctx ends (answering pings meanwhile).
func (a *rawAgent) stream(ctx context.Context, addr string) error {
	for hop := 0; hop < 5; hop++ {
		nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		defer stop()
		defer nc.Close()
		r := wire.NewReader(nc, wire.DefaultMaxFrame)
		var wmu sync.Mutex
		send := func(m wire.Message) error {
			wmu.Lock()
			defer wmu.Unlock()
			nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			return wire.WriteFrame(nc, m)
		}
		if err := send(&wire.Hello{AgentID: a.id, Epoch: a.epoch, Version: wire.ProtocolVersion}); err != nil {
			return err
		}
		var wel *wire.Welcome
		redirect := ""
		for wel == nil && redirect == "" {
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			m, err := r.Read()
			if err != nil {
				return err
			}
			switch m := m.(type) {
			case *wire.Redirect:
				if m.Leader == "" {
					return errors.New("no leader yet")
				}
				redirect = m.Leader
			case *wire.Welcome:
				wel = m
			case *wire.Error:
				return fmt.Errorf("hello: %s", m.Message)
			}
		}
		if wel == nil {
			nc.Close()
			addr = redirect
			continue
		}
		if wel.NeedFullState {
			if a.acked.Load() > 0 {
				return fmt.Errorf("the cluster lost this agent's counts: welcome %+v after %d batches acknowledged", wel, a.acked.Load())
			}
			if err := send(&wire.FullState{AgentID: a.id, Epoch: a.epoch}); err != nil {
				return err
			}
		}
		// Acknowledgements (cumulative) and pings, read meanwhile.
		ackCh := make(chan struct{}, 1)
		readErr := make(chan error, 1)
		go func() {
			for {
				nc.SetReadDeadline(time.Now().Add(30 * time.Second))
				m, err := r.Read()
				if err != nil {
					readErr <- err
					return
				}
				switch m := m.(type) {
				case *wire.Ack:
					for {
						cur := a.acked.Load()
						if m.Seq <= cur || a.acked.CompareAndSwap(cur, m.Seq) {
							break
						}
					}
					select {
					case ackCh <- struct{}{}:
					default:
					}
				case *wire.Ping:
					if err := send(&wire.Pong{Nonce: m.Nonce}); err != nil {
						readErr <- err
						return
					}
				case *wire.Error:
					readErr <- fmt.Errorf("server error: %s", m.Message)
					return
				}
			}
		}()
		next := a.acked.Load() + 1
		for {
			if next > a.total && a.acked.Load() >= a.total {
				select {
				case err := <-readErr: // the stream stays, answering pings
					return err
				case <-ctx.Done():
					return errFinished
				}
			}
			if next <= a.total && next <= a.acked.Load()+a.window {
				if next <= a.sentMax {
					a.resent.Add(1)
				}
				if err := send(a.batch(next)); err != nil {
					return err
				}
				a.sentMax = max(a.sentMax, next)
				next++
				continue
			}
			select {
			case <-ackCh:
			case err := <-readErr:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return errors.New("too many redirects")
}
