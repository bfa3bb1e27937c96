package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// cutNow cuts a batch as the flusher does when connected.
func cutNow(a *Agent) {
	a.mu.Lock()
	a.cutLocked(a.now())
	a.mu.Unlock()
}

// cutEntries cuts the pending accumulator and returns its entries (without
// making a batch).
func cutEntries(a *Agent) ([]wire.DeltaEntry, []wire.TenantPeak) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tab.cut(a.now())
}

func mustPersist(t *testing.T, a *Agent) {
	t.Helper()
	if err := a.persist(); err != nil {
		t.Fatal(err)
	}
}

func TestPersistRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir, AgentID: "agent-7"}, nil)
	pushTenants(t, a, true, meter("t1"), soft("t2", 10, 4))
	a.Open("t1", "audio", "s1", 0)
	a.Open("t2", "video-hd", "s2", 30*time.Second)
	clk.advance(time.Second)
	cutNow(a) // seq 1
	a.Open("t1", "ai", "s3", 0)
	clk.advance(time.Second)
	cutNow(a) // seq 2
	a.onAck(&wire.Ack{Seq: 1, Index: 77})
	a.Open("nobody", "audio", "r", 0) // a refusal, pending
	clk.advance(500 * time.Millisecond)
	mustPersist(t, a)
	stA := a.Status()
	sessA, _ := json.Marshal(a.Sessions(""))

	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	stB := b.Status()
	if stB.ID != "agent-7" || stB.Epoch != stA.Epoch || stB.UnackedBatches != 1 || stB.OpenSessions != 3 ||
		stB.TenantsKnown != 2 || stB.LastAck.Seq != 1 || stB.LastAck.Index != 77 || stB.LastAck.At == nil {
		t.Fatalf("restored status %+v, was %+v", stB, stA)
	}
	if b.nextSeq != 3 || b.unacked[0].msg.Seq != 2 || !bytes.Equal(b.unacked[0].body, a.unacked[0].body) {
		t.Fatalf("restored seq %d unacked %+v", b.nextSeq, b.unacked[0].msg)
	}
	if sessB, _ := json.Marshal(b.Sessions("")); !bytes.Equal(sessA, sessB) {
		t.Fatalf("sessions\n%s\n%s", sessA, sessB)
	}
	// The pending interval: s1, s2, s3 accrued 0.5 s each, one refusal.
	es, ps := cutEntries(b)
	for _, want := range []wire.DeltaEntry{
		{Tenant: "nobody", Class: "audio", Refused: 1},
		{Tenant: "t1", Class: "audio", SessionMicros: 500_000, Peak: 1},
		{Tenant: "t1", Class: "ai", SessionMicros: 500_000, Peak: 1, Opened: 0},
		{Tenant: "t2", Class: "video-hd", SessionMicros: 0, Peak: 1}, // TTL: provisional since open
	} {
		got, _ := entryOf(es, want.Tenant, want.Class)
		if got != want {
			t.Errorf("entry %+v, want %+v", got, want)
		}
	}
	if peakOf(ps, "t1") != 2 || peakOf(ps, "t2") != 1 {
		t.Errorf("peaks %+v", ps)
	}
	// Admission state survives: t2 soft at 4+1 local < 10.
	if res, _ := b.Open("t2", "audio", "s4", 0); !res.Admitted {
		t.Fatalf("admission after restart: %+v", res)
	}
}

// TestPersistUsageAcrossRestart: a restart neither loses nor double counts,
// and a session its media server kept through the agent's downtime counts
// through it: what is billed equals what its close answers.
func TestPersistUsageAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	a.Open("t1", "audio", "s1", 0)
	var shipped uint64
	add := func(es []wire.DeltaEntry) {
		e, _ := entryOf(es, "t1", "audio")
		shipped += e.SessionMicros
	}
	clk.advance(1234567 * time.Nanosecond)
	es, _ := cutEntries(a)
	add(es)
	clk.advance(777 * time.Millisecond)
	mustPersist(t, a)            // then kill -9
	clk.advance(5 * time.Second) // downtime: the media server kept s1
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	clk.advance(2 * time.Second)
	// Until the media server says s1 lives, its downtime is held back.
	es, _ = cutEntries(b)
	add(es)
	if held := uint64((1234567*time.Nanosecond + 777*time.Millisecond) / time.Microsecond); shipped != held {
		t.Fatalf("shipped %d µs before s1 was heard of, want %d: the time since the last persist is in doubt", shipped, held)
	}
	d, err := b.Close("s1")
	if err != nil {
		t.Fatal(err)
	}
	es, _ = cutEntries(b)
	add(es)
	want := uint64((1234567*time.Nanosecond + 777*time.Millisecond + 5*time.Second + 2*time.Second) / time.Microsecond)
	if shipped != want || uint64(d/time.Microsecond) != want {
		t.Fatalf("shipped %d µs, the close answered %v; want %d µs", shipped, d, want)
	}
}

// TestPersistTTLTailAcrossRestart: the provisional time of a TTL session
// from before a restart is dropped if it lapses, shipped if it lives on.
func TestPersistTTLTailAcrossRestart(t *testing.T) {
	for _, lives := range []bool{false, true} {
		dir := t.TempDir()
		a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
		pushTenants(t, a, true, meter("t1"))
		a.Open("t1", "audio", "s", 10*time.Second)
		clk.advance(time.Second)
		cutEntries(a)
		clk.advance(time.Second)
		mustPersist(t, a)
		if lives {
			clk.advance(3 * time.Second)
		} else {
			clk.advance(30 * time.Second)
		}
		b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
		if lives {
			clk.advance(time.Second)
			if err := b.Keepalive("s"); err != nil {
				t.Fatal(err)
			}
		}
		es, _ := cutEntries(b)
		e, _ := entryOf(es, "t1", "audio")
		want := wire.DeltaEntry{Tenant: "t1", Class: "audio", Closed: 1, Peak: 1}
		if lives {
			// 2 s before the restart, the 3 s down, 1 s after.
			want = wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 6_000_000, Peak: 1}
		}
		if e != want {
			t.Fatalf("lives=%v: entry %+v, want %+v", lives, e, want)
		}
	}
}

func TestPersistIdentityMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	newTestAgent(t, Config{DataDir: dir, AgentID: "one"})
	_, err := New(Config{DataDir: dir, Servers: []string{"x:1"}, AgentID: "two"})
	if err == nil || !strings.Contains(err.Error(), `"one"`) || !strings.Contains(err.Error(), `"two"`) {
		t.Fatalf("mismatched id: %v", err)
	}
	if _, err := New(Config{DataDir: dir, Servers: []string{"x:1"}, AgentID: "one"}); err != nil {
		t.Fatalf("matching id: %v", err)
	}
	c, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
	if err != nil || c.ID() != "one" {
		t.Fatalf("kept id: %v %v", c, err)
	}
}

func TestPersistCorruptRefused(t *testing.T) {
	for name, data := range map[string][]byte{
		"garbage":   []byte("this is not msgpack at all \xff\xfe"),
		"truncated": nil, // filled below
		"version":   nil,
		"flipped":   nil,
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, stateFileName)
		a, _ := newTestAgent(t, Config{DataDir: dir})
		pushTenants(t, a, true, meter("t1"))
		a.Open("t1", "audio", "session-one", 0)
		mustPersist(t, a)
		good, _ := os.ReadFile(path)
		switch name {
		case "truncated":
			data = good[:len(good)/2]
		case "version":
			// Without the checksum trailer (a file of an older build), so
			// that the version itself is what is refused.
			data = bytes.Replace(good[:len(good)-8], []byte{0xa1, 'v', 0x01}, []byte{0xa1, 'v', 0x09}, 1)
			if bytes.Equal(data, good[:len(good)-8]) {
				t.Fatal("version key not found")
			}
		case "flipped":
			// Another session id of the same length decodes well: only the
			// checksum tells.
			data = bytes.Replace(good, []byte("session-one"), []byte("session-two"), 1)
			if bytes.Equal(data, good) {
				t.Fatal("session id not found")
			}
		}
		os.WriteFile(path, data, 0o600)
		_, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("%s: %v", name, err)
		}
		if name != "version" && !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("%s: the error does not say corrupt: %v", name, err)
		}
	}
}

// TestPersistLegacyFileLoads: a state file without the checksum trailer
// (written before it existed) still loads.
func TestPersistLegacyFileLoads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFileName)
	a, _ := newTestAgent(t, Config{DataDir: dir})
	pushTenants(t, a, true, meter("t1"))
	a.Open("t1", "audio", "s", 0)
	mustPersist(t, a)
	good, _ := os.ReadFile(path)
	if string(good[len(good)-8:len(good)-4]) != stateSumMagic {
		t.Fatalf("no trailer written: %q", good[len(good)-8:])
	}
	os.WriteFile(path, good[:len(good)-8], 0o600)
	b, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.ID() != a.ID() || b.tab.openCount() != 1 {
		t.Fatalf("legacy file loaded as agent %s with %d sessions, want %s with 1", b.ID(), b.tab.openCount(), a.ID())
	}
}

func TestPersistOnlyWhenChanged(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	a.flush()
	w := a.writes
	a.flush()
	if a.writes != w {
		t.Fatal("persisted without a change")
	}
	a.Open("t1", "audio", "s", 0)
	a.flush()
	clk.advance(time.Second)
	a.flush() // an open session accrues: persisted
	if a.writes != w+2 {
		t.Fatalf("writes %d, want %d", a.writes, w+2)
	}
	a.Close("s")
	a.flush()
	w = a.writes
	a.flush()
	if a.writes != w {
		t.Fatal("persisted without a change")
	}
	if _, err := os.Stat(a.statePth + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file left: %v", err)
	}
}

// TestPersistJournal: the sessions persisted through the change journal
// (including after it overflowed) are exactly the table's.
func TestPersistJournal(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"), meter("t2"))
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 30; round++ {
		ops := 50
		if round%10 == 9 {
			ops = 10_000 // overflows the journal
		}
		for i := 0; i < ops; i++ {
			id := "s" + itoa(rng.IntN(300))
			clk.advance(time.Duration(rng.IntN(100)) * time.Millisecond)
			switch rng.IntN(6) {
			case 0, 1:
				a.Open([]string{"t1", "t2"}[rng.IntN(2)], "audio", id, time.Duration(rng.IntN(3))*time.Hour)
			case 2:
				a.Close(id)
			case 3, 4:
				a.Keepalive(id)
			case 5:
				if rng.IntN(50) == 0 {
					a.Reconcile([]SessionSpec{{Tenant: "t1", Class: "ai", Session: id}})
				}
			}
		}
		overflowed := a.tab.jr.overflow
		mustPersist(t, a)
		if round%10 == 9 && !overflowed {
			t.Fatal("journal did not overflow")
		}
		b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
		want, _ := json.Marshal(a.Sessions(""))
		got, _ := json.Marshal(b.Sessions(""))
		if !bytes.Equal(want, got) {
			t.Fatalf("round %d: restored sessions differ:\n%s\n%s", round, want, got)
		}
		a.mu.Lock()
		for id, s := range a.tab.sessions {
			bs := b.tab.sessions[id]
			if bs == nil || b.startUnix+bs.lastKA != a.startUnix+s.lastKA ||
				(s.ttl > 0 && b.startUnix+bs.anchor != a.startUnix+s.anchor) {
				t.Fatalf("round %d: session %s: %+v vs %+v", round, id, bs, s)
			}
		}
		a.mu.Unlock()
	}
}
