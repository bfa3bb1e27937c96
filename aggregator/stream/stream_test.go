package stream

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/wire"
)

// TestResultMessage: each outcome of an agent message is answered as
// PROTOCOL.md says: an Ack for applied and duplicate, the matching Error
// code otherwise, not-leader for a commit that lost the leadership.
func TestResultMessage(t *testing.T) {
	for _, c := range []struct {
		res  fsm.ItemResult
		err  error
		code wire.ErrorCode // 0 for an Ack
	}{
		{fsm.ItemResult{Status: fsm.StatusApplied, LastSeq: 7}, nil, 0},
		{fsm.ItemResult{Status: fsm.StatusDuplicate, LastSeq: 7}, nil, 0},
		{fsm.ItemResult{Status: fsm.StatusGap, LastSeq: 7}, nil, wire.CodeSeqGap},
		{fsm.ItemResult{Status: fsm.StatusNeedFull}, nil, wire.CodeNeedFullState},
		{fsm.ItemResult{Status: fsm.StatusOldEpoch, LastSeq: 7}, nil, wire.CodeOldEpoch},
		{fsm.ItemResult{Status: fsm.StatusInvalid}, nil, wire.CodeBadMessage},
		{fsm.ItemResult{}, raft.ErrNotLeader, wire.CodeNotLeader},
		{fsm.ItemResult{}, raft.ErrLeadershipLost, wire.CodeNotLeader},
		{fsm.ItemResult{}, errors.New("disk full"), wire.CodeInternal},
	} {
		m := resultMessage(c.res, 42, c.err, 9)
		switch got := m.(type) {
		case *wire.Ack:
			if c.code != 0 || got.Seq != c.res.LastSeq || got.Index != 42 {
				t.Errorf("%+v %v: %+v, want code %d", c.res, c.err, got, c.code)
			}
		case *wire.Error:
			if got.Code != c.code {
				t.Errorf("%+v %v: code %d, want %d", c.res, c.err, got.Code, c.code)
			}
		default:
			t.Errorf("%+v %v: %T", c.res, c.err, m)
		}
	}
}

// TestCheckEntries: entries and user sets the stream refuses before they
// reach the log: a bad tenant id, an unknown class, too many user hashes.
func TestCheckEntries(t *testing.T) {
	if err := checkEntries([]wire.DeltaEntry{{Tenant: "t1", Class: "audio"}, {Tenant: "t2", Class: "video-hd"}}); err != nil {
		t.Fatal(err)
	}
	for _, es := range [][]wire.DeltaEntry{{{Tenant: "", Class: "audio"}}, {{Tenant: "t1", Class: "hologram"}}, {{Tenant: "a b", Class: "audio"}}} {
		if err := checkEntries(es); err == nil || !strings.Contains(err.Error(), "entry 0") {
			t.Errorf("%+v: %v", es, err)
		}
	}
	if err := checkUsers([]wire.UserSet{{Tenant: "t1", Hashes: make([]uint64, fsm.MaxUserHashes)}}); err != nil {
		t.Fatal(err)
	}
	if err := checkUsers([]wire.UserSet{{Tenant: "t1", Hashes: make([]uint64, fsm.MaxUserHashes+1)}}); err == nil {
		t.Error("a user set over the bound accepted")
	}
}
