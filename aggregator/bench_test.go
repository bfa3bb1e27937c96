package aggregator

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/wire"
)

// BenchmarkApplyBatch1000 measures the state machine applying one log entry
// holding one agent batch of 1,000 entries (1,000 tenants, mixed classes),
// including decoding the entry. Goal: ≤ 200 µs.
func BenchmarkApplyBatch1000(b *testing.B) {
	classes := []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}
	f := NewFSM(nil, nil)
	idx := uint64(0)
	applyItems := func(at int64, msgs ...wire.Message) {
		data, err := encodeCmd(cmdAgentItems, itemsCmd(at, "payg", msgs...))
		if err != nil {
			b.Fatal(err)
		}
		idx++
		f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
	}
	applyItems(t0.UnixNano(), &wire.FullState{AgentID: "a1", Epoch: 1})
	entries := make([]wire.DeltaEntry, 1000)
	for i := range entries {
		entries[i] = wire.DeltaEntry{Tenant: fmt.Sprintf("tenant-%04d", i), Class: classes[i%len(classes)], Opened: 3, Closed: 2, SessionMicros: 123_456_789, Peak: 5}
	}
	// Pre-encode the entries for b.N batches so only Apply is timed.
	datas := make([][]byte, b.N)
	for i := range datas {
		cmd := agentItemsCmd{Time: t0.Add(time.Duration(i) * time.Millisecond).UnixNano(), DefaultPlan: "payg",
			Items: []agentItem{{Kind: itemDelta, Body: wire.Append(nil, &wire.DeltaBatch{AgentID: "a1", Epoch: 1, Seq: uint64(i + 1), Entries: entries})}}}
		datas[i], _ = encodeCmd(cmdAgentItems, &cmd)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx++
		res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: datas[i]}).(*applyResult)
		if res.Items[0].Status != statusApplied {
			b.Fatalf("batch %d: status %d", i, res.Items[0].Status)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
}
