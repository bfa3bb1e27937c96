package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

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

// mustPersist persists, and waits for a base being written or committed in
// the background: the tests then read the directory from a second agent
// while the first lives, which in production never shares it.
func mustPersist(t *testing.T, a *Agent) {
	t.Helper()
	if err := a.persist(); err != nil {
		t.Fatal(err)
	}
	a.waitCompaction()
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

// TestPersistCorruptRefused: a damaged state file stops New with an error
// naming the file and saying corrupt (or, for a version this build does
// not read, saying so), whichever file it is.
func TestPersistCorruptRefused(t *testing.T) {
	// A directory with a base holding session-one (written whole), a
	// journal holding the open of session-two, and the marker.
	setup := func(t *testing.T) string {
		dir := t.TempDir()
		a, _ := newTestAgent(t, Config{DataDir: dir})
		pushTenants(t, a, true, meter("t1"))
		a.Open("t1", "audio", "session-one", 0)
		a.persistM.Lock()
		a.pst.needBase = true
		a.persistM.Unlock()
		mustPersist(t, a)
		a.Open("t1", "audio", "session-two", 0)
		mustPersist(t, a)
		return dir
	}
	only := func(t *testing.T, dir, pattern string) string {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		if len(m) != 1 {
			t.Fatalf("%s: %v", pattern, m)
		}
		return m[0]
	}
	replace := func(t *testing.T, path, old, new string) {
		data, _ := os.ReadFile(path)
		changed := bytes.Replace(data, []byte(old), []byte(new), 1)
		if bytes.Equal(changed, data) {
			t.Fatalf("%q not in %s", old, path)
		}
		os.WriteFile(path, changed, 0o600)
	}
	truncate := func(path string, keep func(n int64) int64) {
		fi, _ := os.Stat(path)
		os.Truncate(path, keep(fi.Size()))
	}
	for _, tc := range []struct {
		name, file string
		damage     func(t *testing.T, path string)
		want       string
	}{
		{"marker garbage", stateFileName, func(t *testing.T, p string) { os.WriteFile(p, []byte("not msgpack \xff\xfe"), 0o600) }, "corrupt"},
		{"marker truncated", stateFileName, func(t *testing.T, p string) { truncate(p, func(n int64) int64 { return n / 2 }) }, "corrupt"},
		{"marker of another version", stateFileName, func(t *testing.T, p string) {
			data, _ := os.ReadFile(p)
			data = bytes.Replace(data[:len(data)-8], []byte{0xa1, 'v', 0x02}, []byte{0xa1, 'v', 0x09}, 1)
			os.WriteFile(p, data, 0o600)
		}, "unsupported version 9"},
		{"base flipped", baseFilePrefix + "*", func(t *testing.T, p string) { replace(t, p, "session-one", "session-uno") }, "corrupt"},
		{"base truncated", baseFilePrefix + "*", func(t *testing.T, p string) { truncate(p, func(n int64) int64 { return n - 3 }) }, "corrupt"},
		{"journal flipped", journalFilePrefix + "*", func(t *testing.T, p string) { replace(t, p, "session-two", "session-dos") }, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := setup(t)
			path := only(t, dir, tc.file)
			tc.damage(t, path)
			_, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want an error naming %s and saying %q", err, path, tc.want)
			}
		})
	}
}

// TestPersistTornTail: a journal whose last record was cut short (a crash
// during the write) loads the state of the record before; after a clean
// shutdown the same damage is refused as corrupt.
func TestPersistTornTail(t *testing.T) {
	for _, clean := range []bool{false, true} {
		dir := t.TempDir()
		a, _ := newTestAgent(t, Config{DataDir: dir})
		pushTenants(t, a, true, meter("t1"))
		a.Open("t1", "audio", "s1", 0)
		mustPersist(t, a)
		a.Open("t1", "audio", "s2", 0)
		var err error
		if clean {
			err = a.closeState()
		} else {
			err = a.persist()
		}
		if err != nil {
			t.Fatal(err)
		}
		path := journalPath(dir, a.pst.gen)
		fi, _ := os.Stat(path)
		os.Truncate(path, fi.Size()-5)
		b, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
		if clean {
			if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), path) {
				t.Fatalf("after a clean shutdown: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if b.ID() != a.ID() || b.tab.sessions["s1"] == nil || b.tab.sessions["s2"] != nil {
			t.Fatalf("loaded %s with %v, want %s with s1 only", b.ID(), b.Sessions(""), a.ID())
		}
		// It goes on appending after the last whole record.
		b.Open("t1", "audio", "s3", 0)
		mustPersist(t, b)
		c, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
		if err != nil || c.tab.sessions["s1"] == nil || c.tab.sessions["s3"] == nil {
			t.Fatalf("after appending again: %v, %v", err, c.Sessions(""))
		}
	}
}

// TestPersistLegacyFileLoads: a state file of version 1, with or without
// the checksum trailer (written before it existed), loads, and is replaced
// by a base and the marker at the first persist.
func TestPersistLegacyFileLoads(t *testing.T) {
	for _, trailer := range []bool{true, false} {
		dir := t.TempDir()
		st := &stateFile{Version: legacyVersion, AgentID: "agent-v1", Epoch: 7, NextSeq: 3, SavedAt: time.Now().UnixNano(),
			Sessions: []stSession{{ID: "s", Tenant: "t1", Class: "audio", OpenedAt: time.Now().UnixNano(), LastKA: time.Now().UnixNano(), Source: SourceAPI}}}
		data, err := msgpack.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if trailer {
			data = binary.BigEndian.AppendUint32(append(data, stateSumMagic...), crc32.Checksum(data, castagnoli))
		}
		os.WriteFile(filepath.Join(dir, stateFileName), data, 0o600)
		b, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
		if err != nil {
			t.Fatal(err)
		}
		if b.ID() != "agent-v1" || b.tab.openCount() != 1 {
			t.Fatalf("version 1 file loaded as agent %s with %d sessions, want agent-v1 with 1", b.ID(), b.tab.openCount())
		}
		mustPersist(t, b)
		var marker stateFile
		if raw, _ := os.ReadFile(filepath.Join(dir, stateFileName)); decodeState(raw, &marker) != nil || marker.Version != stateVersion || len(marker.Sessions) != 0 {
			t.Fatalf("agent.state after the first persist: version %d, %d sessions; want the marker of version %d", marker.Version, len(marker.Sessions), stateVersion)
		}
		c, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
		if err != nil || c.ID() != "agent-v1" || c.tab.openCount() != 1 {
			t.Fatalf("after the first persist: %v, %d sessions", err, c.tab.openCount())
		}
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
	if tmps, _ := filepath.Glob(filepath.Join(a.cfg.DataDir, "*.tmp")); len(tmps) > 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
}

// TestPersistJournal: the sessions persisted through the change journal
// (including after it overflowed) are exactly the table's.
func TestPersistJournal(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	a.persistM.Lock()
	a.pst.compactMin = 4096 // compactions all along
	a.persistM.Unlock()
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

// TestPersistCompactsWhileSessionsChange: sessions opened, kept alive and
// closed by several goroutines while the agent persists and compacts its
// journal (bases written from the table as it changes) are restored
// exactly; and the journal stays bounded.
func TestPersistCompactsWhileSessionsChange(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgent(t, Config{DataDir: dir})
	a.persistM.Lock()
	a.pst.compactMin = 64 << 10
	a.persistM.Unlock()
	pushTenants(t, a, true, meter("t1"), meter("t2"))
	for i := range 20_000 { // a table larger than a base chunk
		a.Open("t1", "audio", "base-"+itoa(i), time.Duration(i%2)*time.Hour)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := "s" + itoa(rng.IntN(30_000))
				if rng.IntN(4) == 0 {
					id = "base-" + itoa(rng.IntN(20_000))
				}
				switch rng.IntN(4) {
				case 0, 1:
					a.Open([]string{"t1", "t2"}[rng.IntN(2)], "audio", id, time.Duration(rng.IntN(2))*time.Hour)
				case 2:
					a.Close(id)
				case 3:
					a.Keepalive(id)
				}
			}
		}()
	}
	committed := 0
	for committed < 3 {
		before := a.pst.baseGen
		mustPersist(t, a)
		a.persistM.Lock()
		if a.pst.baseGen != before {
			committed++
		}
		a.persistM.Unlock()
	}
	close(stop)
	wg.Wait()
	a.waitCompaction()
	mustPersist(t, a)
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	want, _ := json.Marshal(a.Sessions(""))
	got, _ := json.Marshal(b.Sessions(""))
	if !bytes.Equal(want, got) {
		t.Fatalf("restored %d sessions, the agent has %d (or they differ)", b.tab.openCount(), a.tab.openCount())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "agent.*"))
	if len(files) > 5 { // marker, base, journal, and those of a compaction in progress
		t.Fatalf("state files left: %v", files)
	}
}

// TestPersistVersion1Records: pending cells, peaks and tenants as version
// 1 wrote them (maps) decode as those of version 2 (arrays) do.
func TestPersistVersion1Records(t *testing.T) {
	cell := stCell{Tenant: "t1", Class: "audio", Acc: 7, Peak: 3, Opened: 2, Closed: 1, Refused: 4, Reconciled: 1}
	peak := stPeak{Tenant: "t1", Peak: 9}
	ten := stTenant{Tenant: "t1", Plan: "p", Ceiling: 10, Mode: "strict", BurstPct: 20, Concurrency: 5, Suspended: true, Base: 2}
	for _, form := range []string{"map", "array"} {
		var data []byte
		var err error
		if form == "map" {
			data, err = msgpack.Marshal([]any{stCellMap(cell), stPeakMap(peak), stTenantMap(ten)})
		} else {
			data, err = msgpack.Marshal([]any{cell, peak, ten})
		}
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			_msgpack struct{} `msgpack:",as_array"`
			C        stCell
			P        stPeak
			T        stTenant
		}
		if err := msgpack.Unmarshal(data, &got); err != nil {
			t.Fatalf("%s: %v", form, err)
		}
		if got.C != cell || got.P != peak || got.T != ten {
			t.Fatalf("%s: decoded %+v %+v %+v", form, got.C, got.P, got.T)
		}
	}
}

// TestPersistTenantsWhenChanged: a journal record carries the tenants'
// admission states only when they changed since the record before; a
// restart after records without them restores the latest states, and one
// after a change the changed ones. Peaks and cells that the open sessions
// rebuild are left out too, and come back the same.
func TestPersistTenantsWhenChanged(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, soft("t1", 10, 4), meter("t2"))
	a.Open("t1", "audio", "s1", 0)
	mustPersist(t, a)
	for i := 0; i < 3; i++ {
		a.Open("t2", "audio", "x"+itoa(i), 0)
		clk.advance(100 * time.Millisecond)
		cutNow(a)
		mustPersist(t, a)
	}
	records := func() (rs []jRecord) {
		data, err := os.ReadFile(journalPath(dir, a.pst.gen))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readFrames(data, func(p []byte) error {
			var r jRecord
			if err := decodeRecord(p, &r); err != nil {
				return err
			}
			rs = append(rs, r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return rs
	}
	rs := records()
	if len(rs) != 4 || len(rs[0].Head.Tenants) != 2 || rs[0].SameTenants {
		t.Fatalf("first record: %d records, %+v", len(rs), rs[0].Head)
	}
	for _, r := range rs[1:] {
		if !r.SameTenants || len(r.Head.Tenants) != 0 || len(r.Head.Peaks) != 0 || len(r.Head.Pending) != 0 {
			t.Fatalf("unchanged tenants and settled cells written again: %+v", r.Head)
		}
	}
	restored := func() *Agent {
		b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
		return b
	}
	b := restored()
	if st := b.Status(); st.TenantsKnown != 2 || st.OpenSessions != 4 {
		t.Fatalf("restored %+v", st)
	}
	// t1: soft, ceiling 10, 4 elsewhere + s1 here: admits to 10 in all.
	if te := b.tab.tenants["t1"]; te.info.Ceiling != 10 || te.info.Concurrency != 4 || te.base != 0 {
		t.Fatalf("t1 restored as %+v base %d", te.info, te.base)
	}
	es, ps := cutEntries(b)
	if e, _ := entryOf(es, "t2", "audio"); e.Peak != 3 || peakOf(ps, "t2") != 3 {
		t.Fatalf("t2 after restart: %+v, peaks %+v", e, ps)
	}
	pushTenants(t, a, true, soft("t1", 20, 7))
	mustPersist(t, a)
	if rs := records(); rs[len(rs)-1].SameTenants || len(rs[len(rs)-1].Head.Tenants) != 1 {
		t.Fatalf("changed tenants not written: %+v", rs[len(rs)-1])
	}
	b = restored()
	if te := b.tab.tenants["t1"]; b.Status().TenantsKnown != 1 || te.info.Ceiling != 20 || te.info.Concurrency != 7 || te.base != 1 {
		t.Fatalf("after the change, t1 restored as %+v base %d (known %d)", te.info, te.base, b.Status().TenantsKnown)
	}
}
