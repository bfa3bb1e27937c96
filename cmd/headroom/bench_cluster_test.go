package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/wire"
)

// Cluster benchmarks run real server processes on loopback. Each is one
// long measurement, so run them with -benchtime 1x:
//
//	go test -run '^$' -bench 'Failover|ClusterThroughput|Join' -benchtime 1x -timeout 30m ./cmd/headroom/

func percentile(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// BenchmarkFailover kills the leader of a 3-server cluster with kill -9,
// 20 times, and measures the time until every one of 5 agents has had a
// batch acknowledged again (agents ship every 100 ms while sessions are
// open), and until a new leader is known. Goal: p99 ≤ 2 s.
func BenchmarkFailover(b *testing.B) {
	kills := 20
	c := newCluster(b, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.setPlans([]string{"fo"}, "payg")
	var agents []*hAgent
	for i := 0; i < 5; i++ {
		a := c.addAgent(fmt.Sprintf("fo-agent%d", i), nil, c.wires(c.servers))
		if err := a.open(context.Background(), 30*time.Second, "fo", "audio", "keep"); err != nil {
			b.Fatal(err)
		}
		agents = append(agents, a)
	}
	c.waitAgentsSettled(60*time.Second, agents...)
	var acked, elected []time.Duration
	b.ResetTimer()
	for k := 0; k < kills; k++ {
		leader, _ := c.waitLeader(60*time.Second, c.servers)
		c.waitHealthy(60*time.Second, c.servers...)
		leader.p.kill()
		t0 := time.Now()
		var newLeader time.Duration
		pending := map[*hAgent]bool{}
		for _, a := range agents {
			pending[a] = true
		}
		deadline := t0.Add(60 * time.Second)
		for len(pending) > 0 || newLeader == 0 {
			if time.Now().After(deadline) {
				b.Fatalf("kill %d: %d agents not acknowledged after 60 s", k, len(pending))
			}
			if newLeader == 0 {
				for _, s := range c.servers {
					if s == leader {
						continue
					}
					if st, err := s.status(); err == nil && st.State == "leader" {
						newLeader = time.Since(t0)
					}
				}
			}
			for a := range pending {
				if st, err := a.status(); err == nil && st.LastAck.At != nil && st.LastAck.At.After(t0) && st.Server != leader.wire {
					delete(pending, a)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		acked = append(acked, time.Since(t0))
		elected = append(elected, newLeader)
		b.Logf("kill %2d of %s: new leader after %v, every agent acknowledged after %v", k+1, leader.name, newLeader.Round(time.Millisecond), acked[k].Round(time.Millisecond))
		leader.p.restart()
	}
	b.StopTimer()
	b.ReportMetric(percentile(acked, 50).Seconds(), "p50-acked-s")
	b.ReportMetric(percentile(acked, 99).Seconds(), "p99-acked-s")
	b.ReportMetric(percentile(elected, 50).Seconds(), "p50-leader-s")
	b.ReportMetric(percentile(elected, 99).Seconds(), "p99-leader-s")
}

// BenchmarkClusterThroughput drives 200 agents (in this process, each with
// its own data directory and stream) flushing every 100 ms against 3 server
// processes, each agent opening and closing sessions of 20 tenants × 6
// classes at a fixed rate, and measures the session events per second the
// cluster acknowledged, and the commit latency seen by a probe session on
// one agent (opened → visible on the leader). Goal: ≥ 200,000 events/s.
func BenchmarkClusterThroughput(b *testing.B) {
	const (
		nAgents  = 200
		duration = 15 * time.Second
	)
	pairsPS := 1500 // open+close pairs per second per agent: 600,000 events/s offered
	if v, err := strconv.Atoi(os.Getenv("BENCH_PAIRS_PER_AGENT")); err == nil && v > 0 {
		pairsPS = v
	}
	c := newCluster(b, 3, nil)
	c.startAll()
	leader, _ := c.waitLeader(60*time.Second, c.servers)
	var tenants []string
	for i := 0; i < 20; i++ {
		tenants = append(tenants, fmt.Sprintf("tp%02d", i))
	}
	c.setPlans(append(tenants, "probe"), "scale")
	classes := []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}

	// 200 agents in one process share one disk here, where in a fleet each
	// has its own: their 2,000 journal fsyncs a second would measure the
	// disk. Their data directories go to tmpfs where there is one
	// (BENCH_AGENT_DISK=1 keeps them on disk).
	agentDir := c.dir
	if os.Getenv("BENCH_AGENT_DISK") == "" {
		if d, err := os.MkdirTemp("/dev/shm", "headroom-bench-"); err == nil {
			agentDir = d
			defer os.RemoveAll(d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	agents := make([]*agent.Agent, nAgents)
	for i := range agents {
		a, err := agent.New(agent.Config{DataDir: filepath.Join(agentDir, fmt.Sprintf("tp-agent%03d", i)), Servers: strings.Split(c.wires(c.servers), ",")})
		if err != nil {
			b.Fatal(err)
		}
		agents[i] = a
		runs.Add(1)
		go func() { defer runs.Done(); a.Run(ctx) }()
	}
	defer func() { cancel(); runs.Wait() }()
	admitted := func(a *agent.Agent, tenant, class, id string) bool {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if r, err := a.Open(tenant, class, id, 0); err == nil && r.Admitted {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	for i, a := range agents { // every agent knows every tenant before the clock starts
		for _, tn := range tenants {
			if !admitted(a, tn, "audio", "warm-"+tn) {
				b.Fatalf("agent %d never admitted %s", i, tn)
			}
			a.Close("warm-" + tn)
		}
	}
	var events atomic.Int64
	drive, stopDrive := context.WithTimeout(context.Background(), duration)
	defer stopDrive()
	var drivers sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, a := range agents {
		drivers.Add(1)
		go func() {
			defer drivers.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			n := 0
			for {
				select {
				case <-drive.Done():
					return
				case <-tick.C:
				}
				for j := 0; j < pairsPS/10; j++ {
					n++
					id := fmt.Sprintf("s%d-%d", i, n)
					tn, cl := tenants[n%len(tenants)], classes[(n/len(tenants))%len(classes)]
					if r, err := a.Open(tn, cl, id, 0); err == nil && r.Admitted {
						a.Close(id)
						events.Add(2)
					}
				}
			}
		}()
	}
	// Probe: a session opened on agent 0 until the leader shows it.
	var lat []time.Duration
	probes := 0
	for drive.Err() == nil {
		probes++
		id := fmt.Sprintf("probe-%d", probes)
		t0 := time.Now()
		if !admitted(agents[0], "probe", "audio", id) {
			b.Fatal("probe not admitted")
		}
		for {
			t, _, err := leader.tenant("probe")
			if err == nil && t.Concurrency.Total == 1 {
				break
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatal("probe never visible on the leader")
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
		agents[0].Close(id)
		time.Sleep(50 * time.Millisecond)
	}
	drivers.Wait()
	// Everything the agents did must be acknowledged: the cluster kept up.
	waitFor(b, 120*time.Second, "every agent's batches acknowledged", func() error {
		for i, a := range agents {
			if st := a.Status(); st.UnackedBatches != 0 || !st.Connected {
				return fmt.Errorf("agent %d: connected %v, %d unacked", i, st.Connected, st.UnackedBatches)
			}
		}
		return nil
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(events.Load())/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(percentile(lat, 50).Microseconds())/1000, "p50-visible-ms")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds())/1000, "p99-visible-ms")
}

// BenchmarkJoin100k fills a 3-server cluster with 100,000 tenants (one
// agent's FullState with a session for each, on --default-plan), then starts
// a fourth server with --join and measures the time until it holds a full
// copy: it has applied the leader's commit index of the moment it started
// and lists 100,000 tenants.
func BenchmarkJoin100k(b *testing.B) {
	const n = 100_000
	c := newCluster(b, 3, nil, "--default-plan", "payg")
	c.startAll()
	leader, _ := c.waitLeader(60*time.Second, c.servers)
	fs := wire.FullState{AgentID: "bulk", Epoch: uint64(time.Now().UnixNano())}
	for i := 0; i < n; i++ {
		fs.Counts = append(fs.Counts, wire.CountEntry{Tenant: fmt.Sprintf("t%06d", i), Class: "audio", Open: 1})
	}
	conn, err := net.DialTimeout("tcp", leader.wire, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := wire.NewReader(conn, 0)
	if err := wire.WriteFrame(conn, &wire.Hello{AgentID: fs.AgentID, Epoch: fs.Epoch, Version: wire.ProtocolVersion}); err != nil {
		b.Fatal(err)
	}
	if m, err := r.Read(); err != nil {
		b.Fatal(err)
	} else if w, ok := m.(*wire.Welcome); !ok || !w.NeedFullState {
		b.Fatalf("want a Welcome asking for full state, got %#v", m)
	}
	for _, part := range wire.SplitFullState(fs, 1<<20) {
		if err := wire.WriteFrame(conn, part); err != nil {
			b.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(120 * time.Second))
	for {
		m, err := r.Read()
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := m.(*wire.Ack); ok {
			break
		}
		if e, ok := m.(*wire.Error); ok {
			b.Fatal(e)
		}
	}
	st, err := leader.status()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	s := c.addServer()
	waitFor(b, 300*time.Second, "the new server holds the full state", func() error {
		got, err := s.status()
		if err != nil {
			return err
		}
		if got.AppliedIndex < st.CommitIndex {
			return fmt.Errorf("applied %d of %d", got.AppliedIndex, st.CommitIndex)
		}
		ts, _, err := s.tenants()
		if err != nil {
			return err
		}
		if len(ts) != n {
			return fmt.Errorf("%d tenants", len(ts))
		}
		return nil
	})
	b.StopTimer()
	b.ReportMetric(time.Since(t0).Seconds(), "join-s")
}
