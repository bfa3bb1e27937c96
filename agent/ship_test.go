package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// fakeServer speaks the server side of the wire protocol; the test drives it
// from its own goroutine.
type fakeServer struct {
	t     *testing.T
	ln    net.Listener
	conns chan *fakeConn
	mu    sync.Mutex
	all   []net.Conn
}

func newFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{t: t, ln: ln, conns: make(chan *fakeConn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fs.mu.Lock()
			fs.all = append(fs.all, c)
			fs.mu.Unlock()
			fs.conns <- &fakeConn{t: t, c: c, rd: wire.NewReader(bufio.NewReader(c), 0)}
		}
	}()
	t.Cleanup(fs.close)
	return fs
}

func (fs *fakeServer) addr() string { return fs.ln.Addr().String() }

func (fs *fakeServer) close() {
	fs.ln.Close()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, c := range fs.all {
		c.Close()
	}
}

// accept waits for the next connection and reads its Hello.
func (fs *fakeServer) accept() *fakeConn {
	fs.t.Helper()
	select {
	case fc := <-fs.conns:
		m := fc.recv()
		h, ok := m.(*wire.Hello)
		if !ok {
			fs.t.Fatalf("first message %T, want Hello", m)
		}
		fc.hello = h
		return fc
	case <-time.After(10 * time.Second):
		fs.t.Fatal("no connection")
		return nil
	}
}

type fakeConn struct {
	t     *testing.T
	c     net.Conn
	rd    *wire.Reader
	hello *wire.Hello
}

// recv reads the next message other than Ping/Pong.
func (fc *fakeConn) recv() wire.Message {
	fc.t.Helper()
	for {
		fc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := fc.rd.Read()
		if err != nil {
			fc.t.Fatalf("server read: %v", err)
		}
		switch m := m.(type) {
		case *wire.Ping:
			fc.send(&wire.Pong{Nonce: m.Nonce})
		case *wire.Pong:
		default:
			return m
		}
	}
}

func (fc *fakeConn) recvBatch() *wire.DeltaBatch {
	fc.t.Helper()
	m := fc.recv()
	b, ok := m.(*wire.DeltaBatch)
	if !ok {
		fc.t.Fatalf("got %T, want DeltaBatch", m)
	}
	return b
}

func (fc *fakeConn) send(m wire.Message) {
	fc.t.Helper()
	fc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteFrame(fc.c, m); err != nil {
		fc.t.Fatalf("server write: %v", err)
	}
}

// startAgent runs a on its own goroutine; cleanup cancels it and waits for
// Run to return.
func startAgent(t *testing.T, a *Agent) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// shipAgent makes an agent for shipping tests: real clock, fast timings.
func shipAgent(t *testing.T, cfg Config) *Agent {
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.knobs.drainTimeout = 300 * time.Millisecond
	a.knobs.backoffMin = 5 * time.Millisecond
	a.knobs.backoffMax = 50 * time.Millisecond
	return a
}

func TestShipHelloAndFullState(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}, Token: "tok",
		Labels: []wire.Label{{Key: "zone", Value: "b"}, {Key: "region", Value: "eu"}}})
	pushTenants(t, a, true, meter("t1"), meter("t2"))
	a.Open("t1", "audio", "a1", 0)
	a.Open("t1", "audio", "a2", 0)
	a.Open("t2", "video-hd", "v1", 0)
	a.Open("t1", "audio", "gone", 0)
	a.Close("gone")
	a.Open("nobody", "ai", "r", 0)
	startAgent(t, a)

	fc := srv.accept()
	h := fc.hello
	if h.AgentID != a.ID() || h.Epoch != a.Status().Epoch || h.Version != wire.ProtocolVersion || h.Token != "tok" ||
		len(h.Labels) != 2 || h.Labels[0].Key != "region" || h.Labels[1].Key != "zone" {
		t.Fatalf("hello %+v", h)
	}
	fc.send(&wire.Welcome{ServerID: "s1", Version: 1, NeedFullState: true})
	m := fc.recv()
	fs, ok := m.(*wire.FullState)
	if !ok {
		t.Fatalf("got %T, want FullState", m)
	}
	if fs.AgentID != a.ID() || fs.Seq != 1 || fs.More {
		t.Fatalf("full state %+v", fs)
	}
	wantCounts := []wire.CountEntry{{Tenant: "t1", Class: "audio", Open: 2}, {Tenant: "t2", Class: "video-hd", Open: 1}}
	if len(fs.Counts) != 2 || fs.Counts[0] != wantCounts[0] || fs.Counts[1] != wantCounts[1] {
		t.Fatalf("counts %+v", fs.Counts)
	}
	if u, _ := entryOf(fs.Usage, "t1", "audio"); u.Peak != 3 || u.Opened != 0 || u.Closed != 0 || u.SessionMicros == 0 {
		t.Fatalf("usage t1/audio %+v", u)
	}
	if u, _ := entryOf(fs.Usage, "nobody", "ai"); u.Refused != 1 {
		t.Fatalf("usage nobody/ai %+v", u)
	}
	if peakOf(fs.Peaks, "t1") != 3 || peakOf(fs.Peaks, "t2") != 1 {
		t.Fatalf("peaks %+v", fs.Peaks)
	}
	if st := a.Status(); st.UnackedBatches < 1 {
		t.Fatalf("status %+v", st)
	}
	fc.send(&wire.Ack{Seq: 1, Index: 10})
	// Then deltas from seq 2 on.
	if b := fc.recvBatch(); b.Seq != 2 {
		t.Fatalf("first delta seq %d", b.Seq)
	}
	waitFor(t, "connected status", func() bool { st := a.Status(); return st.Connected && st.Server == srv.addr() })
	waitFor(t, "ack recorded", func() bool { return a.Status().LastAck.Index == 10 })
}

// TestShipResendAfterReconnect: batches never acked are resent, same seqs,
// same content, in order; those the server applied are not.
func TestShipResendAfterReconnect(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	var got []*wire.DeltaBatch
	for i := 0; len(got) < 3; i++ {
		a.Open("t1", "audio", "s"+itoa(i), 0)
		b := fc.recvBatch()
		got = append(got, b)
	}
	for i, b := range got {
		if b.Seq != uint64(i+1) {
			t.Fatalf("batch %d seq %d", i, b.Seq)
		}
	}
	fc.c.Close() // without acking

	fc = srv.accept()
	fc.send(&wire.Welcome{LastSeq: 0})
	for i := range got {
		b := fc.recvBatch()
		if !bytes.Equal(wire.Append(nil, b), wire.Append(nil, got[i])) {
			t.Fatalf("resent batch %d differs:\n%+v\n%+v", i, b, got[i])
		}
	}
	fc.c.Close()

	fc = srv.accept()
	fc.send(&wire.Welcome{LastSeq: 2})
	if b := fc.recvBatch(); b.Seq != 3 {
		t.Fatalf("after LastSeq 2: seq %d", b.Seq)
	}
	waitFor(t, "applied batches dropped", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.unacked) > 0 && a.unacked[0].msg.Seq == 3
	})
}

func TestShipSeqGap(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	a.Open("t1", "audio", "s", 0) // accrues: a batch every tick
	b1, b2, b3 := fc.recvBatch(), fc.recvBatch(), fc.recvBatch()
	if b1.Seq != 1 || b2.Seq != 2 || b3.Seq != 3 {
		t.Fatalf("seqs %d %d %d", b1.Seq, b2.Seq, b3.Seq)
	}
	fc.send(&wire.Error{Code: wire.CodeSeqGap, LastSeq: 1, Message: "gap"})
	// Batches already in flight may come first; then 2, 3, 4... again.
	for {
		b := fc.recvBatch()
		if b.Seq == 2 {
			if !bytes.Equal(wire.Append(nil, b), wire.Append(nil, b2)) {
				t.Fatal("resent batch 2 differs")
			}
			break
		}
	}
	if b := fc.recvBatch(); b.Seq != 3 {
		t.Fatalf("after resent 2: %d", b.Seq)
	}
	if b := fc.recvBatch(); b.Seq != 4 {
		t.Fatalf("after resent 3: %d", b.Seq)
	}
}

func TestShipAckDropsUnacked(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	a.Open("t1", "audio", "s", 0)
	a.Close("s")
	b := fc.recvBatch()
	if e, _ := entryOf(b.Entries, "t1", "audio"); e.Opened != 1 || e.Closed != 1 || e.Peak != 1 {
		t.Fatalf("batch %+v", b)
	}
	if n := a.Status().UnackedBatches; n != 1 {
		t.Fatalf("unacked %d", n)
	}
	fc.send(&wire.Ack{Seq: b.Seq, Index: 42})
	waitFor(t, "ack", func() bool {
		st := a.Status()
		return st.UnackedBatches == 0 && st.LastAck.Seq == b.Seq && st.LastAck.Index == 42 && st.LastAck.At != nil
	})
}

// TestShipCoalescesWhileDown: while no stream is live nothing is cut; the
// pending accumulator coalesces, and one batch carries it all afterwards,
// with exact sums.
func TestShipCoalescesWhileDown(t *testing.T) {
	srv := newFakeServer(t)
	var down atomic.Bool
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if down.Load() {
			return nil, errors.New("network down")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	a := shipAgent(t, Config{Servers: []string{srv.addr()}, Dial: dial})
	pushTenants(t, a, true, meter("t1"))
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	a.Open("t1", "audio", "warm", 0)
	var all []*wire.DeltaBatch
	b := fc.recvBatch()
	all = append(all, b)
	fc.send(&wire.Ack{Seq: b.Seq})
	waitFor(t, "acked", func() bool { return a.Status().UnackedBatches <= 1 })

	down.Store(true)
	fc.c.Close()
	waitFor(t, "disconnected", func() bool { return !a.Status().Connected })
	before := a.Status().UnackedBatches
	a.mu.Lock()
	lastCut := a.nextSeq - 1
	a.mu.Unlock()
	var exact time.Duration
	d, _ := a.Close("warm")
	exact += d
	// Many flush intervals of activity while down.
	deadline := time.Now().Add(40 * a.cfg.FlushInterval)
	for i := 0; time.Now().Before(deadline); i++ {
		id := "d" + itoa(i)
		a.Open("t1", "audio", id, 0)
		a.Open("t1", "video-hd", id+"v", 0)
		time.Sleep(time.Millisecond)
		d1, _ := a.Close(id)
		d2, _ := a.Close(id + "v")
		exact += d1 + d2
		if n := a.Status().UnackedBatches; n > max(before, 1) {
			t.Fatalf("%d unacked batches while down", n)
		}
	}
	a.mu.Lock()
	cutWhileDown := a.nextSeq - 1 - lastCut
	a.mu.Unlock()
	if cutWhileDown != 0 {
		t.Fatalf("%d batches cut while down", cutWhileDown)
	}

	down.Store(false)
	fc = srv.accept()
	fc.send(&wire.Welcome{LastSeq: b.Seq})
	var after []*wire.DeltaBatch
	for {
		nb := fc.recvBatch()
		after = append(after, nb)
		if nb.Seq == lastCut+1 {
			break
		}
	}
	if len(after) > before+1 {
		t.Fatalf("%d batches after reconnect", len(after))
	}
	all = append(all, after...)
	sums := sumEntries(all)
	audio, video := sums[usageKey{"t1", "audio"}], sums[usageKey{"t1", "video-hd"}]
	if audio.Opened != audio.Closed || video.Opened != video.Closed || video.Opened == 0 {
		t.Fatalf("opened/closed audio %+v video %+v", audio, video)
	}
	gotMicros := audio.SessionMicros + video.SessionMicros
	wantMicros := uint64(exact / time.Microsecond)
	if gotMicros+2 < wantMicros || gotMicros > wantMicros {
		t.Fatalf("shipped %d µs, sessions lasted %d µs", gotMicros, wantMicros)
	}
	coalesced := after[len(after)-1]
	if e, _ := entryOf(coalesced.Entries, "t1", "video-hd"); e.Opened != video.Opened || e.Peak != 1 {
		t.Fatalf("coalesced video entry %+v (total opened %d)", e, video.Opened)
	}
}

func TestShipTenantStateAcrossFrames(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("old"))
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	fc.send(&wire.TenantState{Full: true, More: true, Tenants: []wire.TenantInfo{soft("t1", 2, 1)}})
	fc.send(&wire.TenantState{Full: true, More: true, Tenants: []wire.TenantInfo{meter("t2")}})
	// Not applied before the last frame.
	fc.send(&wire.Ping{Nonce: 99})
	for {
		if p, ok := fc.recvRaw().(*wire.Pong); ok && p.Nonce == 99 {
			break
		}
	}
	if res, _ := a.Open("old", "audio", "o1", 0); !res.Admitted {
		t.Fatalf("old set replaced before the last frame: %+v", res)
	}
	if res, _ := a.Open("t1", "audio", "x", 0); res.Reason != ReasonUnknownTenant {
		t.Fatalf("partial full set applied early: %+v", res)
	}
	fc.send(&wire.TenantState{Full: true, Tenants: []wire.TenantInfo{meter("t3")}})
	waitFor(t, "full state applied", func() bool { return a.Status().TenantsKnown == 3 })
	if res, _ := a.Open("old", "audio", "o2", 0); res.Reason != ReasonUnknownTenant {
		t.Fatalf("old tenant still known: %+v", res)
	}
	// t1: ceiling 2, concurrency 1: one more admitted, then refused.
	if res, _ := a.Open("t1", "audio", "a", 0); !res.Admitted {
		t.Fatalf("t1 first: %+v", res)
	}
	if res, _ := a.Open("t1", "audio", "b", 0); res.Reason != ReasonCeiling {
		t.Fatalf("t1 second: %+v", res)
	}
	// A partial update merges: t1 suspended, t2 untouched.
	sus := soft("t1", 100, 0)
	sus.Suspended = true
	fc.send(&wire.TenantState{Tenants: []wire.TenantInfo{sus}})
	waitFor(t, "suspension", func() bool {
		res, _ := a.Open("t1", "audio", "c", 0)
		return res.Reason == ReasonSuspended
	})
	if res, _ := a.Open("t2", "ai", "d", 0); !res.Admitted || a.Status().TenantsKnown != 3 {
		t.Fatalf("t2 after merge: %+v", res)
	}
}

// recvRaw reads the next message, Pings and Pongs included.
func (fc *fakeConn) recvRaw() wire.Message {
	fc.t.Helper()
	fc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := fc.rd.Read()
	if err != nil {
		fc.t.Fatalf("server read: %v", err)
	}
	return m
}

func TestShipOldEpochStartsNewEpoch(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	a.Open("t1", "audio", "s", 0)
	startAgent(t, a)
	fc := srv.accept()
	old := fc.hello.Epoch
	fc.send(&wire.Error{Code: wire.CodeOldEpoch, Message: "epoch superseded"})
	fc = srv.accept()
	if fc.hello.Epoch <= old {
		t.Fatalf("epoch %d after old %d", fc.hello.Epoch, old)
	}
	fc.send(&wire.Welcome{NeedFullState: true})
	fs, ok := fc.recv().(*wire.FullState)
	if !ok || fs.Epoch != fc.hello.Epoch || fs.Seq != 1 || len(fs.Counts) != 1 || fs.Counts[0].Open != 1 {
		t.Fatalf("full state %+v", fs)
	}
}

func TestShipRedirectAndNotLeader(t *testing.T) {
	s1, s2, s3 := newFakeServer(t), newFakeServer(t), newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{s1.addr(), s2.addr()}})
	startAgent(t, a)
	fc := s1.accept()
	fc.send(&wire.Redirect{Leader: s3.addr()})
	fc = s3.accept()
	fc.send(&wire.Error{Code: wire.CodeNotLeader, Message: "no"})
	// The next server in the list after a not-leader.
	select {
	case fc = <-s1.conns:
	case fc = <-s2.conns:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect after not-leader")
	}
	if _, ok := fc.recv().(*wire.Hello); !ok {
		t.Fatal("no hello")
	}
}

func TestShipPingPongAndDeadStream(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	a.knobs.pingInterval = 50 * time.Millisecond
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	fc.send(&wire.Ping{Nonce: 7})
	gotPing := false
	for !gotPing {
		switch m := fc.recvRaw().(type) {
		case *wire.Pong:
			if m.Nonce != 7 {
				t.Fatalf("pong nonce %d", m.Nonce)
			}
		case *wire.Ping:
			gotPing = true
		}
	}
	// The server goes silent: the agent gives up on the stream and
	// reconnects (read deadline 3 × ping interval).
	fc2 := srv.accept()
	if fc2.hello.AgentID != a.ID() {
		t.Fatal("bad hello")
	}
}

// TestShipShutdownDrains: cancelling Run cuts and sends the last changes
// and waits (bounded) for their ack; the persisted state has none left.
func TestShipShutdownDrains(t *testing.T) {
	srv := newFakeServer(t)
	dir := t.TempDir()
	a := shipAgent(t, Config{DataDir: dir, Servers: []string{srv.addr()}, FlushInterval: time.Hour})
	a.knobs.drainTimeout = 5 * time.Second
	pushTenants(t, a, true, meter("t1"))
	stop := startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	waitFor(t, "live", func() bool { return a.Status().Connected })
	a.Open("t1", "audio", "s", 0)
	go stop()
	b := fc.recvBatch()
	if e, _ := entryOf(b.Entries, "t1", "audio"); e.Opened != 1 {
		t.Fatalf("final batch %+v", b)
	}
	fc.send(&wire.Ack{Seq: b.Seq})
	stop()
	a2, err := New(Config{DataDir: dir, Servers: []string{"x:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := a2.Status(); st.UnackedBatches != 0 || st.OpenSessions != 1 || st.LastAck.Seq != b.Seq {
		t.Fatalf("after shutdown: %+v", st)
	}
}

// TestShipEarlyCutAndSplit: MaxBatchEntries changed entries trigger a cut
// before the flush interval; a cut with more entries gives several batches.
func TestShipEarlyCutAndSplit(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}, FlushInterval: time.Hour, MaxBatchEntries: 4})
	var infos []wire.TenantInfo
	for i := 0; i < 10; i++ {
		infos = append(infos, meter("t"+itoa(i)))
	}
	pushTenants(t, a, true, infos...)
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	waitFor(t, "live", func() bool { return a.Status().Connected })
	// 10 entries in one go under the lock: one cut, three batches.
	a.mu.Lock()
	for i := 0; i < 10; i++ {
		a.tab.open(a.tab.tenants["t"+itoa(i)], "s"+itoa(i), 1, 0, a.now())
	}
	a.noteEventLocked()
	a.mu.Unlock()
	var got []*wire.DeltaBatch
	for len(got) < 3 {
		got = append(got, fc.recvBatch())
	}
	total := 0
	for i, b := range got {
		if b.Seq != uint64(i+1) || len(b.Entries) > 4 || len(b.Peaks) != len(b.Entries) {
			t.Fatalf("batch %+v", b)
		}
		for j, e := range b.Entries {
			if b.Peaks[j].Tenant != e.Tenant {
				t.Fatalf("peak of %s in another batch", e.Tenant)
			}
		}
		total += len(b.Entries)
	}
	if total != 10 {
		t.Fatalf("%d entries", total)
	}
}

// TestShipHoldsBatchesUntilPersisted: a batch is never sent before the
// state holding it is on disk.
func TestShipHoldsBatchesUntilPersisted(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	a.persistM.Lock()
	a.pst.fault = func() error { return errors.New("disk on fire") }
	a.persistM.Unlock()
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	a.Open("t1", "audio", "s", 0)
	waitFor(t, "a batch cut", func() bool { return a.Status().UnackedBatches > 0 })
	fc.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		m, err := fc.rd.Read()
		if err != nil {
			break // timeout: nothing but pings
		}
		if _, ok := m.(*wire.DeltaBatch); ok {
			t.Fatal("batch sent before it was persisted")
		}
	}
	fc.rd = wire.NewReader(bufio.NewReader(fc.c), 0) // the timed-out reader is out of step
	a.persistM.Lock()
	a.pst.fault = nil
	a.persistM.Unlock()
	if b := fc.recvBatch(); b.Seq != 1 {
		t.Fatalf("seq %d", b.Seq)
	}
}
