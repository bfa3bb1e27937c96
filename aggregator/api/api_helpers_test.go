package api

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/plans"
)

// raftAPI returns an API on a Raft cluster of its own (one voter, on
// loopback, in a temporary directory, snapshots left to its end), leading
// and past its term's barrier, configured by tweak: what the server's New
// builds, without the agent streams and the HTTP listener.
func raftAPI(b testing.TB, tweak ...func(*Config)) *Server {
	b.Helper()
	f := fsm.NewFSM(plans.Defaults())
	cfg := Config{Log: hclog.NewNullLogger(), FSM: f, Now: time.Now, HoldTime: DefaultHoldTime, GrantMargin: fsm.DefaultGrantMargin,
		MetricsMaxTenants: DefaultMetricsMaxTenants, HistoryMaxTenants: DefaultHistoryMaxTenants}
	for _, fn := range tweak {
		fn(&cfg)
	}
	s := New(cfg)
	node, err := cluster.Open(cluster.Config{DataDir: b.TempDir(), BindAddr: "127.0.0.1:0", ServerID: "bench", Bootstrap: true,
		Logger: hclog.NewNullLogger(), Applied: f.AppliedIndex,
		Tuning: func(rc *raft.Config) { rc.SnapshotThreshold = 1 << 30 }}, f)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { node.Shutdown() })
	var mu sync.Mutex
	var last int64
	stamp := func() int64 { // never back, as the stream server's clock
		mu.Lock()
		defer mu.Unlock()
		last = max(last+1, time.Now().UnixNano())
		return last
	}
	s.Attach(Attachment{Node: node, HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0", Streams: noStreams{}, Stamp: stamp})
	deadline := time.Now().Add(10 * time.Second)
	for ok, _ := s.EnsureBarrier(); !ok; ok, _ = s.EnsureBarrier() {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// noStreams is a stream server without streams.
type noStreams struct{}

func (noStreams) Agents() int                   { return 0 }
func (noStreams) Unacked(string) (uint64, bool) { return 0, false }
func (noStreams) Traffic() (uint64, [2][fsm.StatusInvalid + 1]uint64) {
	return 0, [2][fsm.StatusInvalid + 1]uint64{}
}
