package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// countFSM counts the entries applied to it.
type countFSM struct{ n atomic.Uint64 }

func (f *countFSM) Apply(*raft.Log) any { return f.n.Add(1) }
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countSnap(f.n.Load()), nil
}
func (f *countFSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	f.n.Store(binary.BigEndian.Uint64(b[:]))
	return nil
}

type countSnap uint64

func (s countSnap) Persist(sink raft.SnapshotSink) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(s))
	if _, err := sink.Write(b[:]); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (countSnap) Release() {}

// logBuf collects the logs of a test's servers, printed if it fails.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(l.b.String(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var showLogs = flag.Bool("logs", false, "print the servers' logs after each test")

// harness runs test servers on loopback.
type harness struct {
	t    *testing.T
	logs *logBuf
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, logs: &logBuf{}}
	t.Cleanup(func() {
		switch {
		case *showLogs:
			t.Logf("logs:\n%s", h.logs.tail(1<<30))
		case t.Failed():
			t.Logf("last log lines:\n%s", h.logs.tail(300))
		}
	})
	return h
}

// fastGossip shortens memberlist's timings so failures are noticed in
// about a second.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 300 * time.Millisecond
	c.ProbeTimeout = 200 * time.Millisecond
	c.SuspicionMult = 3
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.GossipToTheDeadTime = 3 * time.Second
	c.TCPTimeout = 2 * time.Second
}

type server struct {
	h      *harness
	id     string
	dir    string
	cfg    Config
	fsm    *countFSM
	node   *Node
	srv    *http.Server
	closed atomic.Bool
}

// start opens a server. dir "" makes a new data directory; raftAddr and
// gossipAddr "" pick free ports.
func (h *harness) start(id, dir, raftAddr, gossipAddr string, tweak func(*Config)) *server {
	t := h.t
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if raftAddr == "" {
		raftAddr = "127.0.0.1:0"
	}
	if gossipAddr == "" {
		gossipAddr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		DataDir: dir, BindAddr: raftAddr, ServerID: id, GossipAddr: gossipAddr,
		Meta:   Meta{Wire: "127.0.0.1:1", HTTP: ln.Addr().String()},
		Gossip: fastGossip,
		Logger: hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Debug, Output: h.logs}),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	fsm := &countFSM{}
	n, err := Open(cfg, fsm)
	if err != nil {
		ln.Close()
		t.Fatalf("open %s: %v", id, err)
	}
	mux := http.NewServeMux()
	mux.Handle(StatsPath, n.StatsHandler())
	mux.Handle(RemovePeerPath, n.RemovePeerHandler())
	mux.Handle(KeyringPath, n.KeyringHandler())
	mux.Handle(KeyringLocalPath, n.KeyringLocalHandler())
	s := &server{h: h, id: id, dir: dir, cfg: cfg, fsm: fsm, node: n, srv: &http.Server{Handler: mux}}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS.Server)
	}
	go s.srv.Serve(ln)
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down without leaving (a crash, as far as the
// others can tell).
func (s *server) stop() {
	if s.closed.CompareAndSwap(false, true) {
		if err := s.node.Shutdown(); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
			s.h.t.Errorf("shutdown %s: %v", s.id, err)
		}
		s.srv.Close()
	}
}

// leave makes the server leave, then stops its HTTP server.
func (s *server) leave() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := s.node.Leave(ctx)
	s.closed.Store(true)
	s.srv.Close()
	return err
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: %s", d, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leader returns the one live server that is Raft leader, or nil.
func leader(ss []*server) *server {
	var l *server
	for _, s := range ss {
		if !s.closed.Load() && s.node.Raft.State() == raft.Leader {
			if l != nil {
				return nil
			}
			l = s
		}
	}
	return l
}

// configOf returns s's latest Raft configuration as id -> suffrage.
func configOf(s *server) map[string]raft.ServerSuffrage {
	f := s.node.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	m := make(map[string]raft.ServerSuffrage)
	for _, srv := range f.Configuration().Servers {
		m[string(srv.ID)] = srv.Suffrage
	}
	return m
}

func describe(conf map[string]raft.ServerSuffrage) string {
	return fmt.Sprint(conf)
}

// waitVoters waits for a leader whose configuration has exactly the ids,
// all voters, and returns it.
func waitVoters(t *testing.T, ss []*server, d time.Duration, ids ...string) *server {
	t.Helper()
	var l *server
	waitFor(t, d, fmt.Sprintf("a leader with voters %v", ids), func() (bool, string) {
		l = leader(ss)
		if l == nil {
			return false, "no single leader"
		}
		conf := configOf(l)
		if len(conf) != len(ids) {
			return false, "configuration " + describe(conf)
		}
		for _, id := range ids {
			if conf[id] != raft.Voter {
				return false, "configuration " + describe(conf)
			}
		}
		return true, ""
	})
	return l
}

func memberOf(s *server, id string) (Member, bool) {
	for _, m := range s.node.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func bootstraps(ss []*server) int {
	k := 0
	for _, s := range ss {
		if s.node.bootstrapped.Load() {
			k++
		}
	}
	return k
}

func apply(t *testing.T, ss []*server) uint64 {
	t.Helper()
	var idx uint64
	waitFor(t, 10*time.Second, "an applied entry", func() (bool, string) {
		l := leader(ss)
		if l == nil {
			return false, "no leader"
		}
		f := l.node.Raft.Apply([]byte("x"), time.Second)
		if err := f.Error(); err != nil {
			return false, err.Error()
		}
		idx = f.Index()
		return true, ""
	})
	return idx
}

func waitApplied(t *testing.T, s *server, idx uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, s.id+" applies index "+fmt.Sprint(idx), func() (bool, string) {
		return s.node.Raft.AppliedIndex() >= idx, fmt.Sprint("applied ", s.node.Raft.AppliedIndex())
	})
}

// TestClusterLifecycle: three servers with BootstrapExpect 3 form a cluster
// with a single bootstrap; two more join and are promoted; a crashed one is
// kept until DeadServerReap, then removed; a follower and then the leader
// leave.
func TestClusterLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const reap = 3 * time.Second
	opts := func(join ...*server) func(*Config) {
		return func(c *Config) {
			c.BootstrapExpect = 3
			c.DeadServerReap = reap
			for _, s := range join {
				c.Join = append(c.Join, s.node.GossipAddr())
			}
		}
	}
	n1 := h.start("n1", "", "", "", opts())
	n2 := h.start("n2", "", "", "", opts(n1))
	n3 := h.start("n3", "", "", "", opts(n1, n2))
	all := []*server{n1, n2, n3}

	l := waitVoters(t, all, 30*time.Second, "n1", "n2", "n3")
	if k := bootstraps(all); k != 1 || !n1.node.bootstrapped.Load() {
		t.Fatalf("%d servers bootstrapped (n1: %v), want exactly n1", k, n1.node.bootstrapped.Load())
	}
	idx := apply(t, all)
	var first []byte // entry 1: the bootstrap configuration, replicated from n1
	for _, s := range all {
		waitApplied(t, s, idx)
		var e raft.Log
		if err := s.node.db.GetLog(1, &e); err != nil || e.Type != raft.LogConfiguration {
			t.Fatalf("%s: entry 1 is %v (%v), want the bootstrap configuration", s.id, e.Type, err)
		}
		if first == nil {
			first = e.Data
		} else if !bytes.Equal(first, e.Data) || e.Term != 1 {
			t.Fatalf("%s: entry 1 differs (term %d)", s.id, e.Term)
		}
	}
	waitFor(t, 10*time.Second, "every server knows the leader's addresses", func() (bool, string) {
		for _, s := range all {
			m, ok := s.node.LeaderMeta()
			if !ok || m.HTTP != leader(all).cfg.Meta.HTTP || m.Raft != leader(all).node.Addr() {
				return false, fmt.Sprintf("%s: %+v %v", s.id, m, ok)
			}
		}
		return true, ""
	})

	// Two late servers with lower ids, one with the same BootstrapExpect and
	// one with Join only: they are added as non-voters and promoted.
	a4 := h.start("a4", "", "", "", opts(l))
	a5 := h.start("a5", "", "", "", func(c *Config) { // Join only
		c.DeadServerReap = reap
		c.Join = []string{n2.node.GossipAddr()}
	})
	all = append(all, a4, a5)
	l = waitVoters(t, all, 60*time.Second, "n1", "n2", "n3", "a4", "a5")
	if k := bootstraps(all); k != 1 {
		t.Fatalf("%d bootstraps, want 1", k)
	}
	idx = apply(t, all)
	for _, s := range all {
		waitApplied(t, s, idx)
	}
	for _, m := range l.node.Members() {
		if m.Status != StatusAlive || m.Raft != RoleVoter || m.Meta.HTTP == "" || m.GossipAddr == "" {
			t.Errorf("member %+v", m)
		}
	}
	for _, s := range all {
		if s == l {
			continue
		}
		resp, err := http.Post("http://"+s.cfg.Meta.HTTP+RemovePeerPath, "application/json", strings.NewReader(`{"id":"n1"}`))
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || body.LeaderID != l.id {
			t.Fatalf("remove-peer on follower %s: %s %+v", s.id, resp.Status, body)
		}
		break
	}

	// A follower crashes: failed, kept while failed for less than the reap
	// time, removed after it.
	var victim *server
	for _, s := range all {
		if s != l && s != n1 {
			victim = s
			break
		}
	}
	victim.stop()
	var failedSince time.Time
	waitFor(t, 20*time.Second, victim.id+" reported failed", func() (bool, string) {
		l = leader(all)
		if l == nil {
			return false, "no leader"
		}
		m, ok := memberOf(l, victim.id)
		failedSince = m.StatusSince
		return ok && m.Status == StatusFailed, fmt.Sprintf("%+v", m)
	})
	if q := (&autopilotDelegate{a5.node}).AutopilotConfig().MinQuorum; q != 3 {
		t.Errorf("a5, started without BootstrapExpect, uses MinQuorum %d, want the gossiped 3", q)
	}
	ks := (&autopilotDelegate{l.node}).KnownServers()
	if s := ks[raft.ServerID(victim.id)]; s == nil || s.NodeStatus != autopilot.NodeFailed {
		t.Errorf("autopilot sees %s as %+v, want failed", victim.id, s)
	}
	for i := 0; i < 3; i++ {
		conf := configOf(l)
		if time.Since(failedSince) > reap/2 {
			break // only assert well below the reap time
		}
		if conf[victim.id] != raft.Voter {
			t.Fatalf("%s was removed after %v failed, before the reap time %v: %s", victim.id, time.Since(failedSince), reap, describe(conf))
		}
		time.Sleep(300 * time.Millisecond)
	}
	var alive []*server
	for _, s := range all {
		if s != victim {
			alive = append(alive, s)
		}
	}
	ids := func(ss []*server) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.id)
		}
		return out
	}
	l = waitVoters(t, alive, 30*time.Second, ids(alive)...)

	// A follower leaves: out of the configuration when Leave returns.
	var f *server
	for _, s := range alive {
		if s != l {
			f = s
			break
		}
	}
	if err := f.leave(); err != nil {
		t.Fatalf("%s leave: %v", f.id, err)
	}
	if conf := configOf(l); l.node.Raft.State() == raft.Leader {
		if _, in := conf[f.id]; in {
			t.Fatalf("%s still in the configuration after Leave returned: %s", f.id, describe(conf))
		}
	}
	var rest []*server
	for _, s := range alive {
		if s != f {
			rest = append(rest, s)
		}
	}
	l = waitVoters(t, rest, 10*time.Second, ids(rest)...)
	waitFor(t, 10*time.Second, f.id+" reported left", func() (bool, string) {
		m, _ := memberOf(l, f.id)
		return m.Status == StatusLeft && m.Raft == RoleNone, fmt.Sprintf("%+v", m)
	})

	// The leader leaves: leadership moves, and it is out.
	old := l
	if err := old.leave(); err != nil {
		t.Fatalf("leader %s leave: %v", old.id, err)
	}
	var final []*server
	for _, s := range rest {
		if s != old {
			final = append(final, s)
		}
	}
	l = waitVoters(t, final, 10*time.Second, ids(final)...)
	if m, ok := memberOf(l, old.id); ok && m.Raft != RoleNone {
		t.Errorf("left leader still in Raft: %+v", m)
	}
	idx = apply(t, final)
	for _, s := range final {
		waitApplied(t, s, idx)
	}
}

// TestDeadServerKeptAtMinQuorumThenRejoins: with BootstrapExpect 3 a dead
// server of a 3-server cluster is never reaped; restarted on its data
// directory without Join, it rejoins from its recorded members and does not
// bootstrap again.
func TestDeadServerKeptAtMinQuorumThenRejoins(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const reap = 500 * time.Millisecond
	opts := func(join ...*server) func(*Config) {
		return func(c *Config) {
			c.BootstrapExpect = 3
			c.DeadServerReap = reap
			for _, s := range join {
				c.Join = append(c.Join, s.node.GossipAddr())
			}
		}
	}
	s1 := h.start("s1", "", "", "", opts())
	s2 := h.start("s2", "", "", "", opts(s1))
	s3 := h.start("s3", "", "", "", opts(s2))
	all := []*server{s1, s2, s3}
	l := waitVoters(t, all, 30*time.Second, "s1", "s2", "s3")
	idx := apply(t, all)
	for _, s := range all {
		waitApplied(t, s, idx)
	}

	// A server with a lower id that would found a cluster with servers of a
	// running one finds it and does not bootstrap; one that cannot ask a
	// founder waits.
	lone := h.start("a0", "", "", "", nil) // gossip, but joined to no one
	founders := []record{
		{id: "a0", meta: lone.node.meta},
		{id: s1.id, meta: s1.node.meta},
		{id: s2.id, meta: s2.node.meta},
	}
	if done, err := lone.node.bootstrapWith(founders); !done || err != nil || lone.node.bootstrapped.Load() || lone.node.Raft.LastIndex() != 0 {
		t.Fatalf("bootstrap with founders in a cluster: done %v, err %v, bootstrapped %v", done, err, lone.node.bootstrapped.Load())
	}
	founders[1].meta.HTTP = "127.0.0.1:1"
	if done, err := lone.node.bootstrapWith(founders); done || err == nil || lone.node.Raft.LastIndex() != 0 {
		t.Fatalf("bootstrap with an unreachable founder: done %v, err %v", done, err)
	}
	lone.stop()

	var victim *server
	for _, s := range all {
		if s != l {
			victim = s
		}
	}
	waitFor(t, 10*time.Second, victim.id+" records its members", func() (bool, string) {
		k, err := loadMembers(victim.dir)
		return err == nil && len(k.Members) == 2, fmt.Sprint(k, err)
	})
	raftAddr, gossipAddr := victim.node.Addr(), victim.node.GossipAddr()
	victim.stop()
	waitFor(t, 20*time.Second, victim.id+" reported failed", func() (bool, string) {
		l = leader(all)
		if l == nil {
			return false, "no leader"
		}
		m, _ := memberOf(l, victim.id)
		return m.Status == StatusFailed, fmt.Sprintf("%+v", m)
	})
	// Several reconcile rounds past the reap time: MinQuorum 3 keeps it.
	time.Sleep(reap + 3*autopilotReconcileInterval)
	l = leader(all)
	if l == nil {
		t.Fatal("no leader")
	}
	if conf := configOf(l); conf[victim.id] != raft.Voter {
		t.Fatalf("%s was reaped below MinQuorum: %s", victim.id, describe(conf))
	}
	if m, _ := memberOf(l, victim.id); m.Status != StatusFailed || m.Raft != RoleVoter {
		t.Fatalf("member %+v, want a failed voter", m)
	}
	idx = apply(t, all) // two of three still commit

	// Restart on the same directory and addresses, no Join.
	back := h.start(victim.id, victim.dir, raftAddr, gossipAddr, func(c *Config) {
		c.BootstrapExpect = 3
		c.DeadServerReap = reap
	})
	all = []*server{}
	for _, s := range []*server{s1, s2, s3} {
		if s != victim {
			all = append(all, s)
		}
	}
	all = append(all, back)
	waitFor(t, 30*time.Second, victim.id+" alive again", func() (bool, string) {
		l = leader(all)
		if l == nil {
			return false, "no leader"
		}
		m, _ := memberOf(l, victim.id)
		return m.Status == StatusAlive && m.Raft == RoleVoter, fmt.Sprintf("%+v", m)
	})
	waitApplied(t, back, idx)
	idx = apply(t, all)
	for _, s := range all {
		waitApplied(t, s, idx)
	}
	if back.node.bootstrapped.Load() {
		t.Fatal("the restarted server bootstrapped again")
	}
	if k := bootstraps(all); k > 1 {
		t.Fatalf("%d bootstraps", k)
	}
	waitVoters(t, all, 10*time.Second, "s1", "s2", "s3")
}

// TestSingleServer: the Bootstrap option without gossip, as `headroom dev`
// uses it.
func TestSingleServer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dir := t.TempDir()
	open := func() *server {
		return h.start("solo", dir, "", "", func(c *Config) {
			c.GossipAddr = ""
			c.Gossip = nil
			c.Bootstrap = true
		})
	}
	s := open()
	waitFor(t, 10*time.Second, "leader", func() (bool, string) {
		ok, why := s.node.Ready()
		return ok && s.node.Raft.State() == raft.Leader, why
	})
	ms := s.node.Members()
	if len(ms) != 1 || ms[0].ID != "solo" || ms[0].Status != StatusAlive || ms[0].Raft != RoleVoter || !ms[0].Leader {
		t.Fatalf("members %+v", ms)
	}
	if m, ok := s.node.LeaderMeta(); !ok || m.HTTP != s.cfg.Meta.HTTP || m.Raft != s.node.Addr() {
		t.Fatalf("leader meta %+v %v", m, ok)
	}
	if s.node.GossipAddr() != "" {
		t.Fatal("gossip address without gossip")
	}
	if err := s.node.RemovePeer("nobody"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("remove unknown peer: %v", err)
	}
	resp, err := http.Get("http://" + s.cfg.Meta.HTTP + StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	var st RaftStats
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.ID != "solo" || st.State != "Leader" || st.Term == 0 || st.LastLogIndex == 0 || st.LastContactMs != 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
	resp, err = http.Post("http://"+s.cfg.Meta.HTTP+RemovePeerPath, "application/json", strings.NewReader(`{"id":"nobody"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("remove-peer of an unknown id: %s", resp.Status)
	}
	apply(t, []*server{s})
	s.stop()
	if _, err := os.Stat(filepath.Join(dir, membersFile)); err == nil {
		t.Error("members.json written without gossip")
	}
	s = open() // the same command line restarts it
	waitFor(t, 10*time.Second, "leader after restart", func() (bool, string) {
		return s.node.Raft.State() == raft.Leader, s.node.Raft.State().String()
	})
	if s.node.Raft.LastIndex() < 3 {
		t.Fatalf("restart lost the log: last index %d", s.node.Raft.LastIndex())
	}
}

// TestJoinRetriesUntilReachable: a server whose Join address is not up yet
// keeps retrying; the single-server cluster (Bootstrap, with gossip) that
// comes up there adds it and promotes it.
func TestJoinRetriesUntilReachable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	addr := freeGossipAddr(t)
	b := h.start("b", "", "", "", func(c *Config) { c.Join = []string{addr} })
	waitFor(t, 20*time.Second, "join retries", func() (bool, string) {
		return strings.Contains(h.logs.tail(1<<20), "could not join the cluster yet; retrying: attempt=2"), ""
	})
	a := h.start("a", "", "", addr, func(c *Config) { c.Bootstrap = true })
	waitVoters(t, []*server{a, b}, 60*time.Second, "a", "b")
	if !strings.Contains(h.logs.tail(1<<20), "b: joined the cluster") {
		t.Error("b did not log its join")
	}
}

// freeGossipAddr returns a loopback address whose port is free for TCP and
// UDP (at the time of asking).
func freeGossipAddr(t *testing.T) string {
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()
	base := func() Config {
		return Config{DataDir: t.TempDir(), BindAddr: "127.0.0.1:0", ServerID: "x", GossipAddr: "127.0.0.1:0"}
	}
	for name, tweak := range map[string]func(*Config){
		"no id":               func(c *Config) { c.ServerID = "" },
		"both bootstraps":     func(c *Config) { c.Bootstrap, c.BootstrapExpect = true, 3 },
		"negative expect":     func(c *Config) { c.BootstrapExpect = -1 },
		"expect w/o gossip":   func(c *Config) { c.GossipAddr, c.BootstrapExpect = "", 3 },
		"join w/o gossip":     func(c *Config) { c.GossipAddr, c.Join = "", []string{"127.0.0.1:1"} },
		"negative reap":       func(c *Config) { c.DeadServerReap = -time.Second },
		"meta too long":       func(c *Config) { c.Meta.Wire = strings.Repeat("a", 600) },
		"unreachable adv":     func(c *Config) { c.AdvertiseAddr = "0.0.0.0:9" },
		"bad gossip address":  func(c *Config) { c.GossipAddr = "nowhere" },
		"advertise with port": func(c *Config) { c.AdvertiseHost = "10.0.0.1:80" },
		"short gossip key":    func(c *Config) { c.GossipKey = make([]byte, 15) },
		"key w/o gossip":      func(c *Config) { c.GossipAddr, c.GossipKey = "", make([]byte, 32) },
		"TLS w/o client":      func(c *Config) { c.TLS = &TLS{Server: &tls.Config{}} },
	} {
		c := base()
		tweak(&c)
		if n, err := Open(c, &countFSM{}); err == nil {
			n.Shutdown()
			t.Errorf("%s: Open accepted %+v", name, c)
		}
	}
}

func TestAdvertiseAddr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ bind, host, want string }{
		{"127.0.0.1:9372", "", "127.0.0.1:9372"},
		{"0.0.0.0:9372", "10.1.2.3", "10.1.2.3:9372"},
		{"127.0.0.1:9372", "agg-1.internal", "agg-1.internal:9372"},
		{"[::]:9372", "fd00::1", "[fd00::1]:9372"},
		{"[::]:9372", "[fd00::1]", "[fd00::1]:9372"},
		{"localhost:80", "", "localhost:80"},
	} {
		got, err := AdvertiseAddr(c.bind, c.host)
		if err != nil || got != c.want {
			t.Errorf("AdvertiseAddr(%q, %q) = %q, %v; want %q", c.bind, c.host, got, err, c.want)
		}
	}
	for _, bind := range []string{"0.0.0.0:9372", ":9372", "[::]:9372"} {
		got, err := AdvertiseAddr(bind, "")
		if err != nil {
			t.Fatalf("AdvertiseAddr(%q): %v", bind, err)
		}
		host, port, _ := net.SplitHostPort(got)
		ip := net.ParseIP(host)
		if port != "9372" || ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
			t.Errorf("AdvertiseAddr(%q) = %q, want this machine's address", bind, got)
		}
	}
	for _, c := range []struct{ bind, host string }{
		{"9372", ""},
		{"0.0.0.0", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:70000", ""},
		{"127.0.0.1:x", ""},
		{"127.0.0.1:1", "0.0.0.0"},
		{"127.0.0.1:1", "10.0.0.1:80"},
		{"127.0.0.1:1", "bad host!"},
	} {
		if got, err := AdvertiseAddr(c.bind, c.host); err == nil {
			t.Errorf("AdvertiseAddr(%q, %q) = %q, want an error", c.bind, c.host, got)
		}
	}
}

func TestMetaEncoding(t *testing.T) {
	t.Parallel()
	m := Meta{Wire: "10.0.0.1:9371", Raft: "10.0.0.1:9372", HTTP: "10.0.0.1:9370"}
	g := newGossipMeta(m, 3)
	a, err := encodeMeta(g)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := encodeMeta(g)
	if !bytes.Equal(a, b) || len(a) > memberlist.MetaMaxSize {
		t.Fatalf("encoding %q / %q", a, b)
	}
	if got, err := decodeMeta(a); err != nil || got.meta() != m || got.Leaving || got.Expect != 3 {
		t.Fatalf("decode: %+v %v", got, err)
	}
	g.Leaving = true
	c, _ := encodeMeta(g)
	if got, err := decodeMeta(c); err != nil || got.meta() != m || !got.Leaving {
		t.Fatalf("decode leaving: %+v %v", got, err)
	}
	if got, err := decodeMeta([]byte(`{"v":2,"wire":"w","raft":"r","http":"h","new":1}`)); err != nil || got.meta() != (Meta{"w", "r", "h"}) {
		t.Fatalf("decode a later version: %+v %v", got, err)
	}
	for _, bad := range []string{"", "{", `{"wire":"w"}`} {
		if _, err := decodeMeta([]byte(bad)); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
	if _, err := encodeMeta(newGossipMeta(Meta{HTTP: strings.Repeat("h", 500)}, 0)); err == nil {
		t.Error("encoded metadata over 512 bytes")
	}
}
