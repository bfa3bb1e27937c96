package aggregator

import (
	"github.com/headroom-rtc/headroom/aggregator/api"
	"net"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// TestAgentsShowUnacked: GET /v1/agents on the leader says, for an agent
// streaming to it, how many of its batches are not acknowledged yet.
func TestAgentsShowUnacked(t *testing.T) {
	s := newTestServer(t, &fakeClock{t: time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC)})
	nc, err := net.Dial("tcp", s.WireAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	rd := wire.NewReader(nc, 0)
	epoch := uint64(time.Now().UnixNano())
	wire.WriteFrame(nc, &wire.Hello{AgentID: "a1", Epoch: epoch, Version: wire.ProtocolVersion})
	if m, err := rd.Read(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.Welcome); !ok {
		t.Fatalf("hello: %#v", m)
	}
	wire.WriteFrame(nc, &wire.FullState{AgentID: "a1", Epoch: epoch, Seq: 0})
	wire.WriteFrame(nc, &wire.DeltaBatch{AgentID: "a1", Epoch: epoch, Seq: 1, Entries: []wire.DeltaEntry{{Tenant: "t", Class: "audio", Opened: 1}}})
	for {
		m, err := rd.Read()
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := m.(*wire.Ack); ok && a.Seq == 1 {
			break
		}
	}
	var agents []api.AgentJSON
	if code := get(t, s, "/v1/agents", &agents); code != 200 || len(agents) != 1 || agents[0].UnackedBatches == nil || *agents[0].UnackedBatches != 0 {
		t.Fatalf("agents: %d %+v", code, agents)
	}
	nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		agents = nil // Unmarshal into old elements keeps fields the answer leaves out
		get(t, s, "/v1/agents", &agents)
		if len(agents) == 1 && agents[0].UnackedBatches == nil {
			break // no stream to this server: nothing it can tell
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stream closed: %+v", agents)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
