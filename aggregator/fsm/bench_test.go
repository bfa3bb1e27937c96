package fsm

import (
	"fmt"
	"math"
	"math/rand/v2"
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
	f := NewFSM(nil)
	idx := uint64(0)
	applyItems := func(at int64, msgs ...wire.Message) {
		data, err := EncodeCmd(CmdAgentItems, ItemsCmd(at, "payg", msgs...))
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
		cmd := AgentItemsCmd{Time: t0.Add(time.Duration(i) * time.Millisecond).UnixNano(), DefaultPlan: "payg",
			Items: []AgentItem{{Kind: ItemDelta, Body: wire.Append(nil, &wire.DeltaBatch{AgentID: "a1", Epoch: 1, Seq: uint64(i + 1), Entries: entries})}}}
		datas[i], _ = EncodeCmd(CmdAgentItems, &cmd)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx++
		res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: datas[i]}).(*ApplyResult)
		if res.Items[0].Status != StatusApplied {
			b.Fatalf("batch %d: status %d", i, res.Items[0].Status)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
}

// BenchmarkApplyUsers1000 measures the state machine applying one log entry
// holding one agent batch that carries, for 1,000 tenants, 5 users each
// (new ones every batch): 1,000 UserSets merged into day and period counts.
// "exact": tenants under ExactUsers distinct users; "sketch": tenants
// already past it (their users in a HyperLogLog sketch).
func BenchmarkApplyUsers1000(b *testing.B) {
	for _, regime := range []string{"exact", "sketch"} {
		b.Run(regime, func(b *testing.B) {
			f := NewFSM(nil)
			idx := uint64(0)
			at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
			day := DayOf(at.UnixNano())
			apply := func(data []byte) *ApplyResult {
				idx++
				return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(*ApplyResult)
			}
			enc := func(seq uint64, sets []wire.UserSet) []byte {
				cmd := AgentItemsCmd{Time: at.UnixNano(), DefaultPlan: "payg",
					Items: []AgentItem{{Kind: ItemDelta, Body: wire.Append(nil, &wire.DeltaBatch{AgentID: "a1", Epoch: 1, Seq: seq, Users: sets})}}}
				data, _ := EncodeCmd(CmdAgentItems, &cmd)
				return data
			}
			data, _ := EncodeCmd(CmdAgentItems, ItemsCmd(at.UnixNano(), "payg", &wire.FullState{AgentID: "a1", Epoch: 1}))
			apply(data)
			var h uint64
			next := func() uint64 { h += 0x9e3779b97f4a7c15; return h * 0xbf58476d1ce4e5b9 }
			sets := func(per int) []wire.UserSet {
				out := make([]wire.UserSet, 1000)
				for i := range out {
					out[i] = wire.UserSet{Tenant: fmt.Sprintf("tenant-%04d", i), Day: day, Hashes: make([]uint64, per)}
					for j := range out[i].Hashes {
						out[i].Hashes[j] = next()
					}
				}
				return out
			}
			seq := uint64(1)
			if regime == "sketch" {
				for _, k := range []int{MaxUserHashes / 10, ExactUsers} { // 100, then 1,000 more: past the exact counts
					if r := apply(enc(seq, sets(k))); r.Items[0].Status != StatusApplied {
						b.Fatal(r.Items[0])
					}
					seq++
				}
			}
			datas := make([][]byte, b.N)
			for i := range datas {
				datas[i] = enc(seq+uint64(i), sets(5))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := apply(datas[i]); r.Items[0].Status != StatusApplied {
					b.Fatalf("batch %d: %+v", i, r.Items[0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
		})
	}
}

// BenchmarkMAUError counts n distinct users (random 64-bit hashes, as
// XXH64 of ids is) over several seeds and reports the largest relative
// error of the count, and the bytes a tenant-period's Users holds.
func BenchmarkMAUError(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var worst float64
			var size int
			for i := 0; i < b.N; i++ {
				for seed := uint64(1); seed <= 8; seed++ {
					r := rand.New(rand.NewPCG(seed, uint64(n)))
					var u Users
					batch := make([]uint64, 0, 10_000)
					for k := 0; k < n; k++ {
						batch = append(batch, r.Uint64())
						if len(batch) == cap(batch) || k == n-1 {
							u.Add(batch)
							batch = batch[:0]
						}
					}
					err := math.Abs(float64(u.Count())-float64(n)) / float64(n)
					worst = max(worst, err)
					size = u.size()
				}
			}
			b.ReportMetric(worst*100, "max-err-%")
			b.ReportMetric(float64(size), "bytes")
		})
	}
}
