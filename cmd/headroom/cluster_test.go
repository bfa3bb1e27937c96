package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/api"
	"github.com/headroom-rtc/headroom/wire"
)

// Process-level fault tests of the aggregator cluster: three to five
// `headroom aggregator` processes and several `headroom agent` processes,
// killed with SIGKILL, restarted with the same command line, grown and
// shrunk, partitioned (in network namespaces) and fed duplicate batches,
// while the test keeps the truth of which sessions are open. They check the
// invariants of DESIGN.md — no session lost or counted twice, usage never
// going backwards — and log a timeline with the failover figures; they never
// assert timing.

var sessionClasses = []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}

// fastc is the client for polling servers and agents: a dead or cut-off
// process must not hold a poll loop for long.
var fastc = &http.Client{Timeout: 5 * time.Second}

// ---------------------------------------------------------------------------
// The cluster harness.

// The servers' own answer types.
type (
	statusJSON = api.StatusJSON
	peerJSON   = api.PeerJSON
)

type agentStatus struct {
	ID             string `json:"id"`
	Epoch          uint64 `json:"epoch"`
	Server         string `json:"server"`
	Connected      bool   `json:"connected"`
	UnackedBatches int    `json:"unacked_batches"`
	LastAck        struct {
		Seq   uint64     `json:"seq"`
		Index uint64     `json:"index"`
		At    *time.Time `json:"at"`
	} `json:"last_ack"`
}

type agentRecord struct {
	ID      string `json:"id"`
	Epoch   uint64 `json:"epoch"`
	LastSeq uint64 `json:"last_seq"`
	Expired bool   `json:"expired"`
}

type hCluster struct {
	t       testing.TB
	dir     string
	tl      *timeline
	flags   []string // extra flags of every server
	lab     *netLab  // when set, server i runs in lab.nss[i]
	servers []*hServer
	agents  []*hAgent
}

type hServer struct {
	c                        *hCluster
	name                     string // also its node id
	http, wire, raft, gossip string
	ns                       *netNS
	client                   *http.Client
	p                        *proc
}

type hAgent struct {
	name   string
	api    string
	ns     *netNS
	client *http.Client
	p      *proc
}

// newCluster prepares n servers that --join one another with
// --bootstrap-expect 3 (not started: see startAll).
func newCluster(t testing.TB, n int, lab *netLab, flags ...string) *hCluster {
	c := &hCluster{t: t, dir: t.TempDir(), tl: newTimeline(t), flags: flags, lab: lab}
	for i := 0; i < n; i++ {
		c.servers = append(c.servers, c.newServer())
	}
	var gossip []string
	for _, s := range c.servers {
		gossip = append(gossip, s.gossip)
	}
	for _, s := range c.servers {
		var join []string
		for _, g := range gossip {
			if g != s.gossip {
				join = append(join, g)
			}
		}
		s.p = newProc(t, s.name, s.argv(join), nil)
	}
	return c
}

// newServer picks a new server's addresses; its proc is made by the caller.
func (c *hCluster) newServer() *hServer {
	i := len(c.servers) + 1
	s := &hServer{c: c, name: fmt.Sprintf("srv%d", i), client: fastc}
	if c.lab != nil {
		s.ns = c.lab.nss[i-1]
		s.client = s.ns.client
		s.http, s.wire, s.raft, s.gossip = s.ns.ip+":7370", s.ns.ip+":7371", s.ns.ip+":7372", s.ns.ip+":7373"
	} else {
		s.http, s.wire, s.raft, s.gossip = freeAddr(c.t), freeAddr(c.t), freeAddr(c.t), freeAddr(c.t)
	}
	return s
}

func (s *hServer) argv(join []string) []string {
	args := []string{binPath, "aggregator", "--node-id", s.name, "--data-dir", filepath.Join(s.c.dir, s.name),
		"--http-addr", s.http, "--wire-addr", s.wire, "--raft-addr", s.raft, "--gossip-addr", s.gossip,
		"--join", strings.Join(join, ","), "--bootstrap-expect", "3", "--log-level", "debug"}
	if s.ns != nil {
		args = append(args, "--advertise-addr", s.ns.ip)
	}
	args = append(args, s.c.flags...)
	if s.ns != nil {
		return s.ns.cmd(args...)
	}
	return args
}

// addServer starts one more server that joins the running ones (the
// README: every server with the same --bootstrap-expect and --join; a no-op
// once the cluster exists).
func (c *hCluster) addServer() *hServer {
	s := c.newServer()
	var join []string
	for _, o := range c.servers {
		join = append(join, o.gossip)
	}
	c.servers = append(c.servers, s)
	s.p = newProc(c.t, s.name, s.argv(join), nil)
	if err := s.p.spawn(); err != nil {
		c.t.Fatal(err)
	}
	return s
}

func (c *hCluster) startAll() {
	for _, s := range c.servers {
		if err := s.p.spawn(); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *hCluster) wires(among []*hServer) string {
	var w []string
	for _, s := range among {
		w = append(w, s.wire)
	}
	return strings.Join(w, ",")
}

func (c *hCluster) running() []*hServer {
	var out []*hServer
	for _, s := range c.servers {
		if s.p.running() {
			out = append(out, s)
		}
	}
	return out
}

func (s *hServer) url(path string) string { return "http://" + s.http + path }

// getJSON GETs path and decodes a 200 answer into v.
func getJSON(c *http.Client, url string, v any) (http.Header, error) {
	code, body, hdr, err := callWith(c, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return hdr, fmt.Errorf("GET %s: HTTP %d %s", url, code, bytes100(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return hdr, fmt.Errorf("GET %s: %v in %s", url, err, bytes100(body))
	}
	return hdr, nil
}

func bytes100(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func (s *hServer) status() (statusJSON, error) {
	var st statusJSON
	_, err := getJSON(s.client, s.url("/v1/status"), &st)
	return st, err
}

func (s *hServer) healthy() bool {
	code, _, _, err := callWith(s.client, "GET", s.url("/healthz"), nil)
	return err == nil && code == 200
}

func (s *hServer) tenants() (map[string]tenantFig, http.Header, error) {
	var list []tenantFig
	hdr, err := getJSON(s.client, s.url("/v1/tenants"), &list)
	if err != nil {
		return nil, hdr, err
	}
	m := make(map[string]tenantFig, len(list))
	for _, f := range list {
		m[f.Tenant] = f
	}
	return m, hdr, nil
}

func (s *hServer) tenant(id string) (tenantFig, http.Header, error) {
	var f tenantFig
	hdr, err := getJSON(s.client, s.url("/v1/tenants/"+id), &f)
	return f, hdr, err
}

func (s *hServer) agentsView() ([]agentRecord, error) {
	var as []agentRecord
	_, err := getJSON(s.client, s.url("/v1/agents"), &as)
	return as, err
}

// leader returns the leader as seen by the servers among those given that
// run: exactly one says it is the leader and every one names it.
func (c *hCluster) leader(among []*hServer) (*hServer, statusJSON, error) {
	var lead *hServer
	var lst statusJSON
	ids := map[string]bool{}
	n := 0
	for _, s := range among {
		if !s.p.running() {
			continue
		}
		n++
		st, err := s.status()
		if err != nil {
			return nil, lst, fmt.Errorf("%s: %v", s.name, err)
		}
		ids[st.LeaderID] = true
		if st.State == "leader" {
			if lead != nil {
				return nil, lst, fmt.Errorf("two leaders: %s and %s", lead.name, s.name)
			}
			lead, lst = s, st
		}
	}
	if n == 0 {
		return nil, lst, errors.New("no server runs")
	}
	if lead == nil {
		return nil, lst, errors.New("no leader")
	}
	if len(ids) != 1 || !ids[lst.ID] {
		return nil, lst, fmt.Errorf("servers name different leaders: %v (leader %s)", keys(ids), lst.ID)
	}
	return lead, lst, nil
}

func keys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func (c *hCluster) waitLeader(limit time.Duration, among []*hServer) (*hServer, statusJSON) {
	c.t.Helper()
	var lead *hServer
	var st statusJSON
	waitFor(c.t, limit, "a leader all servers agree on", func() error {
		var err error
		lead, st, err = c.leader(among)
		return err
	})
	return lead, st
}

// lastLines returns the last n lines of a log.
func lastLines(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitHealthy waits until every server given answers /healthz with 200.
func (c *hCluster) waitHealthy(limit time.Duration, among ...*hServer) {
	c.t.Helper()
	waitFor(c.t, limit, "servers healthy", func() error {
		for _, s := range among {
			if !s.p.running() {
				c.t.Fatalf("%s exited (%v); its log ends:\n%s", s.name, s.p.exitErr(), lastLines(s.p.logText(), 25))
			}
			if !s.healthy() {
				return fmt.Errorf("%s not healthy", s.name)
			}
		}
		return nil
	})
}

// setPlan puts tenant on plan through any running server (the write is
// forwarded to the leader), retrying while there is no leader.
func (c *hCluster) setPlan(limit time.Duration, tenant, plan string, among []*hServer) error {
	var last string
	i := mrand.IntN(len(among))
	return poll(limit, 100*time.Millisecond, func() error {
		i++
		s := among[i%len(among)]
		if !s.p.running() {
			return errors.New(last)
		}
		code, body, _, err := callWith(httpcFor(s), "PUT", s.url("/v1/tenants/"+tenant+"/plan"), map[string]string{"plan": plan})
		if err == nil && code == 200 {
			return nil
		}
		last = fmt.Sprintf("set-plan %s %s via %s: %d %s %v", tenant, plan, s.name, code, bytes100(body), err)
		return errors.New(last)
	})
}

// httpcFor is the client for a call that may wait for a leader (7 s).
func httpcFor(s *hServer) *http.Client {
	if s.ns != nil {
		return &http.Client{Timeout: 15 * time.Second, Transport: s.ns.client.Transport}
	}
	return httpc
}

func (c *hCluster) setPlans(tenants []string, plan string) {
	c.t.Helper()
	for _, tn := range tenants {
		if err := c.setPlan(60*time.Second, tn, plan, c.running()); err != nil {
			c.t.Fatal(err)
		}
	}
}

// agree checks every server given against the truth, per tenant and class.
func (c *hCluster) agree(tr truth, tenants []string, among []*hServer) error {
	want := tr.byClass()
	for _, s := range among {
		figs, hdr, err := s.tenants()
		if err != nil {
			return fmt.Errorf("%s: %v", s.name, err)
		}
		for _, tn := range tenants {
			f := figs[tn]
			var total uint64
			for _, n := range want[tn] {
				total += n
			}
			if f.Concurrency.Total != total {
				return fmt.Errorf("%s (index %s): tenant %s has %d open, truth is %d", s.name, hdr.Get("X-Headroom-Index"), tn, f.Concurrency.Total, total)
			}
			for _, cl := range sessionClasses {
				if got := f.Concurrency.ByClass[cl]; got != want[tn][cl] {
					return fmt.Errorf("%s (index %s): tenant %s class %s has %d open, truth is %d", s.name, hdr.Get("X-Headroom-Index"), tn, cl, got, want[tn][cl])
				}
			}
		}
	}
	return nil
}

func (c *hCluster) waitAgree(limit time.Duration, what string, tr truth, tenants []string, among []*hServer) {
	c.t.Helper()
	start := time.Now()
	waitFor(c.t, limit, what, func() error { return c.agree(tr, tenants, among) })
	c.tl.mark("%s: %d servers equal the truth (%d sessions open) after %.1fs", what, len(among), len(tr), time.Since(start).Seconds())
}

// addAgent starts an agent; in a namespace its API is on the namespace's
// loopback, reached through the namespace's forwarder.
func (c *hCluster) addAgent(name string, ns *netNS, servers string, extra ...string) *hAgent {
	a := &hAgent{name: name, client: fastc}
	args := []string{binPath, "agent", "--id", name, "--data-dir", filepath.Join(c.dir, name),
		"--server", servers, "--flush-interval", "100ms", "--log-level", "debug"}
	if ns != nil {
		a.ns, a.client, a.api = ns, ns.client, "127.0.0.1:9380"
		args = ns.cmd(append(args, "--api-addr", a.api)...)
	} else {
		a.api = freeAddr(c.t)
		args = append(args, "--api-addr", a.api)
	}
	args = append(args, extra...)
	a.p = newProc(c.t, name, args, nil)
	if err := a.p.spawn(); err != nil {
		c.t.Fatal(err)
	}
	c.agents = append(c.agents, a)
	waitFor(c.t, 30*time.Second, name+" API up", func() error {
		_, err := a.status()
		return err
	})
	return a
}

func (a *hAgent) url(path string) string { return "http://" + a.api + path }

func (a *hAgent) status() (agentStatus, error) {
	var st agentStatus
	_, err := getJSON(a.client, a.url("/v1/status"), &st)
	return st, err
}

// openRetries counts the open attempts that were refused or failed and
// retried, for the logs.
var openRetries atomic.Int64

// open admits a session, retrying refusals (429: the tenant's plan not yet
// pushed to the agent) and transport errors until limit.
func (a *hAgent) open(ctx context.Context, limit time.Duration, tenant, class, id string) error {
	deadline := time.Now().Add(limit)
	for {
		code, body, _, err := callWith(a.client, "POST", a.url("/v1/sessions"), map[string]string{"tenant": tenant, "class": class, "session": id})
		if err == nil && (code == 201 || code == 200) {
			return nil
		}
		if err == nil && code != 429 && code < 500 {
			return fmt.Errorf("%s: open %s: HTTP %d %s", a.name, id, code, bytes100(body))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: open %s: %d %s %v (gave up after %s)", a.name, id, code, bytes100(body), err, limit)
		}
		openRetries.Add(1)
		time.Sleep(20 * time.Millisecond)
	}
}

// close ends a session; a 404 after a failed attempt means that attempt
// closed it.
func (a *hAgent) close(ctx context.Context, limit time.Duration, id string) error {
	deadline := time.Now().Add(limit)
	failed := false
	for {
		code, body, _, err := callWith(a.client, "DELETE", a.url("/v1/sessions/"+id), nil)
		if err == nil && (code == 200 || (code == 404 && failed)) {
			return nil
		}
		if err == nil && code < 500 {
			return fmt.Errorf("%s: close %s: HTTP %d %s", a.name, id, code, bytes100(body))
		}
		failed = true
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: close %s: %d %s %v", a.name, id, code, bytes100(body), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAgentsSettled waits until every agent given is connected with nothing
// unacknowledged.
func (c *hCluster) waitAgentsSettled(limit time.Duration, agents ...*hAgent) {
	c.t.Helper()
	start := time.Now()
	waitFor(c.t, limit, "agents connected with every batch acknowledged", func() error {
		for _, a := range agents {
			st, err := a.status()
			if err != nil {
				return fmt.Errorf("%s: %v", a.name, err)
			}
			if !st.Connected || st.UnackedBatches != 0 {
				return fmt.Errorf("%s: connected %v to %q, %d unacked", a.name, st.Connected, st.Server, st.UnackedBatches)
			}
		}
		return nil
	})
	c.tl.mark("%d agents connected, all acknowledged, after %.1fs", len(agents), time.Since(start).Seconds())
}

// runCLI runs a headroom client command and returns its output.
func runCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, args...).CombinedOutput()
	return string(out), err
}

func (c *hCluster) raftPeers(s *hServer) ([]peerJSON, error) {
	out, err := runCLI("raft", "peers", "--addr", s.http, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("headroom raft peers --addr %s: %v: %s", s.http, err, out)
	}
	var ps []peerJSON
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, fmt.Errorf("headroom raft peers: %v in %s", err, out)
	}
	return ps, nil
}

// members returns the gossip view of s (headroom members -o json): id →
// status.
func members(s *hServer) (map[string]string, error) {
	out, err := runCLI("members", "--addr", s.http, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("headroom members --addr %s: %v: %s", s.http, err, out)
	}
	var ms []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return nil, fmt.Errorf("headroom members: %v in %s", err, out)
	}
	m := map[string]string{}
	for _, x := range ms {
		m[x.ID] = x.Status
	}
	return m, nil
}

// voters returns the sorted ids of the voters in ps.
func voters(ps []peerJSON) []string {
	var v []string
	for _, p := range ps {
		if p.Voter {
			v = append(v, p.ID)
		}
	}
	sort.Strings(v)
	return v
}

func tenantNames(prefix string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("%s-%02d", prefix, i))
	}
	return out
}

func randSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// safeTruth is the truth shared by goroutines.
type safeTruth struct {
	mu sync.Mutex
	tr truth
}

func (s *safeTruth) add(id, tn, cl string) { s.mu.Lock(); s.tr[id] = [2]string{tn, cl}; s.mu.Unlock() }
func (s *safeTruth) del(id string)         { s.mu.Lock(); delete(s.tr, id); s.mu.Unlock() }
func (s *safeTruth) snapshot() truth       { s.mu.Lock(); defer s.mu.Unlock(); return s.tr.clone() }

// usageWatch samples every healthy server's usage of the tenants and
// records any figure lower than the one the same server showed before.
type usageWatch struct {
	c        *hCluster
	tenants  []string
	sampling sync.Mutex // one sample at a time: a sample is read, compared and kept in order

	mu         sync.Mutex
	last       map[string]float64 // server/tenant → seconds
	lastIdx    map[string]string
	starts     map[string]int // server/tenant → the server's start count at the last sample
	violations []string
	samples    int
}

func watchUsage(ctx context.Context, c *hCluster, tenants []string, every time.Duration) (*usageWatch, func()) {
	w := &usageWatch{c: c, tenants: tenants, last: map[string]float64{}, lastIdx: map[string]string{}, starts: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			for _, s := range c.servers {
				w.sample(s)
			}
		}
	}()
	return w, func() { <-done }
}

// sample reads s's usage of every tenant, if s runs and is healthy, and
// compares it with what s showed last. Reads are local: a server that has
// not applied what it knows (say, just restarted) says so on /healthz and
// is not sampled; one that says it is healthy must show at least what it
// showed before, across its own restarts too.
func (w *usageWatch) sample(s *hServer) bool {
	w.sampling.Lock()
	defer w.sampling.Unlock()
	if !s.p.running() || !s.healthy() {
		return false
	}
	start := s.p.startCount()
	for _, tn := range w.tenants {
		f, hdr, err := s.tenant(tn)
		if err != nil {
			continue
		}
		v, key := f.seconds(), s.name+"/"+tn
		w.mu.Lock()
		if prev, ok := w.last[key]; ok && v < prev-1e-6 {
			restart := ""
			if w.starts[key] != start {
				restart = fmt.Sprintf(", in its first read after restart #%d", start-1)
			}
			w.violations = append(w.violations, fmt.Sprintf("%s: healthy, but its usage of %s went from %.3f s (X-Headroom-Index %s) to %.3f s (X-Headroom-Index %s) at %s (test time %s%s)",
				s.name, tn, prev, w.lastIdx[key], v, hdr.Get("X-Headroom-Index"), time.Now().Format("15:04:05.000"), w.c.tl.since(), restart))
		}
		w.last[key], w.lastIdx[key], w.starts[key] = v, hdr.Get("X-Headroom-Index"), start
		w.samples++
		w.mu.Unlock()
	}
	return true
}

// ---------------------------------------------------------------------------
// 1. Leader kills during churn.

func TestClusterLeaderKills(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	c.tl.mark("3 servers up, leader %s", lead.name)
	c.waitHealthy(30*time.Second, c.servers...)
	tenants := tenantNames("lk", 8)
	c.setPlans(tenants, "payg")
	for i := 0; i < 5; i++ {
		c.addAgent(fmt.Sprintf("lk-agent-%d", i), nil, c.wires(c.servers))
	}
	c.tl.mark("8 tenants on payg, 5 agents up")

	const (
		nSessions = 5000
		nWorkers  = 10
		nKills    = 5
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	type op struct {
		open   bool
		id     string
		tn, cl string
		agent  *hAgent
	}
	// Each worker owns nSessions/nWorkers sessions and opens and closes
	// them in a random order; about a third stay open.
	var plans [][]op
	totalOps := 0
	for w := 0; w < nWorkers; w++ {
		var ops []op
		var open []op
		next := 0
		per := nSessions / nWorkers
		for next < per || (len(open) > per/3 && rng.IntN(2) == 0) {
			if next < per && (len(open) == 0 || rng.IntN(10) < 6) {
				o := op{open: true, id: fmt.Sprintf("lk-%d-%03d", w, next), tn: tenants[rng.IntN(len(tenants))],
					cl: sessionClasses[rng.IntN(len(sessionClasses))], agent: c.agents[rng.IntN(len(c.agents))]}
				ops = append(ops, o)
				open = append(open, o)
				next++
				continue
			}
			k := rng.IntN(len(open))
			o := open[k]
			open = slices.Delete(open, k, k+1)
			o.open = false
			ops = append(ops, o)
		}
		plans = append(plans, ops)
		totalOps += len(ops)
	}
	t.Logf("%d operations over %d sessions", totalOps, nSessions)

	ctx, cancel := context.WithCancel(context.Background())
	tr := &safeTruth{tr: truth{}}
	var completed, allowed atomic.Int64
	allowed.Store(int64(totalOps / (nKills + 1)))
	errs := make(chan error, nWorkers)
	var wg sync.WaitGroup
	watch, watchDone := watchUsage(ctx, c, tenants, 300*time.Millisecond)
	t.Cleanup(func() { cancel(); wg.Wait(); watchDone() })
	churnStart := time.Now()
	retries0 := openRetries.Load()
	var opens, closes atomic.Int64
	for w := range plans {
		wg.Add(1)
		go func(ops []op) {
			defer wg.Done()
			for _, o := range ops {
				for completed.Load() >= allowed.Load() {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				if o.open {
					if err := o.agent.open(ctx, 60*time.Second, o.tn, o.cl, o.id); err != nil {
						errs <- err
						return
					}
					tr.add(o.id, o.tn, o.cl)
					opens.Add(1)
				} else {
					if err := o.agent.close(ctx, 60*time.Second, o.id); err != nil {
						errs <- err
						return
					}
					tr.del(o.id)
					closes.Add(1)
				}
				completed.Add(1)
			}
		}(plans[w])
	}
	churnDone := make(chan struct{})
	go func() { wg.Wait(); close(churnDone) }()
	failed := func() error {
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}

	var elections, commits, agentsBack []time.Duration
	for k := 0; k < nKills; k++ {
		target := int64(float64(totalOps) * (float64(k) + 0.5) / float64(nKills+1))
		if err := poll(120*time.Second, 20*time.Millisecond, func() error {
			if err := failed(); err != nil {
				return err
			}
			if n := completed.Load(); n < target {
				return fmt.Errorf("churn at %d of %d operations, waiting for %d", n, totalOps, target)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		old, ost := c.waitLeader(30*time.Second, c.servers)
		killed := time.Now()
		old.p.kill()
		c.tl.mark("kill -9 #%d: leader %s (term %d, index %d) at operation %d/%d", k+1, old.name, ost.Term, ost.CommitIndex, completed.Load(), totalOps)
		var rest []*hServer
		for _, s := range c.servers {
			if s != old {
				rest = append(rest, s)
			}
		}
		nl, nst := c.waitLeader(30*time.Second, rest)
		el := time.Since(killed)
		elections = append(elections, el)
		// A plan change through the new leader: the cluster commits again.
		if err := c.setPlan(30*time.Second, "lk-probe", "payg", []*hServer{nl}); err != nil {
			t.Fatal(err)
		}
		cm := time.Since(killed)
		commits = append(commits, cm)
		c.tl.mark("new leader %s (term %d) after %dms; first plan change committed after %dms", nl.name, nst.Term, el.Milliseconds(), cm.Milliseconds())
		old.p.restart()
		// Sample the restarted server the moment it says it is healthy:
		// that is when a server that has not replayed its log yet would
		// show less than before.
		var exited error
		if err := poll(60*time.Second, 5*time.Millisecond, func() error {
			if !old.p.running() {
				exited = fmt.Errorf("%s exited (%v) after its restart; its log ends:\n%s", old.name, old.p.exitErr(), lastLines(old.p.logText(), 25))
				return nil
			}
			if !watch.sample(old) {
				return fmt.Errorf("%s not healthy", old.name)
			}
			return nil
		}); err != nil {
			t.Fatalf("after its restart: %v", err)
		}
		if exited != nil {
			t.Fatal(exited)
		}
		c.tl.mark("%s restarted with the same command line and healthy after %.1fs", old.name, time.Since(killed).Seconds())
		// Before the next kill, every agent is back with the leader: it
		// was acknowledged after the kill (or has nothing to send).
		if err := poll(90*time.Second, 50*time.Millisecond, func() error {
			if err := failed(); err != nil {
				return err
			}
			for _, a := range c.agents {
				st, err := a.status()
				if err != nil {
					return fmt.Errorf("%s: %v", a.name, err)
				}
				acked := st.LastAck.At != nil && st.LastAck.At.After(killed)
				if !st.Connected || !(acked || st.UnackedBatches == 0) {
					return fmt.Errorf("%s: connected %v to %q, %d unacked, last ack %+v", a.name, st.Connected, st.Server, st.UnackedBatches, st.LastAck)
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("agents back with the new leader after kill #%d: %v", k+1, err)
		}
		back := time.Since(killed)
		agentsBack = append(agentsBack, back)
		c.tl.mark("all 5 agents connected to the leader and acknowledged %.1fs after the kill", back.Seconds())
		allowed.Store(int64(totalOps * (k + 2) / (nKills + 1)))
	}
	allowed.Store(int64(totalOps) + 1)
	select {
	case <-churnDone:
	case <-time.After(180 * time.Second):
		t.Fatalf("churn not finished: %d of %d operations", completed.Load(), totalOps)
	}
	if err := failed(); err != nil {
		t.Fatal(err)
	}
	c.tl.mark("churn done: %d opens (%d attempts refused or failed and retried), %d closes in %.1fs; %d sessions open",
		opens.Load(), openRetries.Load()-retries0, closes.Load(), time.Since(churnStart).Seconds(), len(tr.snapshot()))

	c.waitAgentsSettled(90*time.Second, c.agents...)
	c.waitAgree(90*time.Second, "after the churn", tr.snapshot(), tenants, c.servers)
	// The state machine is deterministic: with the agents paused (no more
	// batches), every server at the same index shows the same usage.
	for _, a := range c.agents {
		if err := a.p.signalNamed("STOP"); err != nil {
			t.Fatal(err)
		}
	}
	cont := func() {
		for _, a := range c.agents {
			a.p.signalNamed("CONT")
		}
	}
	t.Cleanup(cont)
	if err := poll(30*time.Second, 200*time.Millisecond, func() error { return sameUsage(c.servers, tenants) }); err != nil {
		t.Errorf("servers at the same index disagree on usage: %v", err)
	} else {
		c.tl.mark("agents paused: the 3 servers reach the same index with identical usage of all %d tenants", len(tenants))
	}
	cont()
	// Let the watch see the final state on every server, then stop it.
	time.Sleep(time.Second)
	cancel()
	watchDone()
	watch.mu.Lock()
	defer watch.mu.Unlock()
	c.tl.mark("usage sampled %d times: %d went backwards", watch.samples, len(watch.violations))
	t.Logf("failovers: new leader after %v; first plan change committed after %v; all agents back and acknowledged after %v", elections, commits, agentsBack)
	c.tl.summary()
	for _, v := range watch.violations {
		t.Error(v)
	}
	if watch.samples == 0 {
		t.Error("usage never sampled")
	}
}

// sameUsage reads every tenant's usage on every server and compares them,
// once all answers carry the same X-Headroom-Index.
func sameUsage(servers []*hServer, tenants []string) error {
	var refIdx string
	ref := map[string]string{}
	for i, s := range servers {
		for _, tn := range tenants {
			f, hdr, err := s.tenant(tn)
			if err != nil {
				return err
			}
			idx := hdr.Get("X-Headroom-Index")
			if refIdx == "" {
				refIdx = idx
			}
			if idx != refIdx {
				return fmt.Errorf("not at the same index yet: %s at %s, %s at %s", servers[0].name, refIdx, s.name, idx)
			}
			if f.Usage == nil {
				return fmt.Errorf("%s: %s has no usage", s.name, tn)
			}
			u, _ := json.Marshal(f.Usage)
			if i == 0 {
				ref[tn] = string(u)
			} else if ref[tn] != string(u) {
				return fmt.Errorf("at index %s, %s's usage of %s is %s, %s's is %s", idx, servers[0].name, tn, ref[tn], s.name, u)
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// 2. A follower that fell behind a compaction catches up by snapshot.

func TestClusterFollowerSnapshotCatchUp(t *testing.T) {
	c := newCluster(t, 3, nil, "--raft-snapshot-threshold", "64", "--raft-trailing-logs", "16")
	c.startAll()
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tenants := tenantNames("sn", 4)
	c.setPlans(tenants, "payg")
	a1 := c.addAgent("sn-agent-1", nil, c.wires(c.servers))
	a2 := c.addAgent("sn-agent-2", nil, c.wires(c.servers))
	agents := []*hAgent{a1, a2}
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 2))
	tr := truth{}
	owner := map[string]*hAgent{}
	n := 0
	openSome := func(k int) {
		for i := 0; i < k; i++ {
			id := fmt.Sprintf("sn-%05d", n)
			n++
			a, tn, cl := agents[rng.IntN(2)], tenants[rng.IntN(len(tenants))], sessionClasses[rng.IntN(len(sessionClasses))]
			if err := a.open(ctx, 30*time.Second, tn, cl, id); err != nil {
				t.Fatal(err)
			}
			tr[id], owner[id] = [2]string{tn, cl}, a
		}
	}
	closeSome := func(k int) {
		ids := keys(tr)
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		for _, id := range ids[:min(k, len(ids))] {
			if err := owner[id].close(ctx, 30*time.Second, id); err != nil {
				t.Fatal(err)
			}
			delete(tr, id)
		}
	}
	openSome(40)
	c.waitAgree(30*time.Second, "before the kill", tr, tenants, c.servers)

	var f *hServer
	for _, s := range c.servers {
		if s != lead {
			f = s
			break
		}
	}
	fst, err := f.status()
	if err != nil {
		t.Fatal(err)
	}
	f.p.kill()
	c.tl.mark("kill -9 follower %s at last index %d (its last snapshot %d)", f.name, fst.LastIndex, fst.LastSnapshotIndex)

	// Writes go on: sessions and plan changes, until the leader has taken a
	// snapshot and compacted its log past what the follower holds.
	var planned []string
	var lst statusJSON
	lastSnap := uint64(0)
	deadline := time.Now().Add(150 * time.Second)
	for i := 0; ; i++ {
		openSome(4)
		closeSome(2)
		if i%5 == 0 {
			tn := fmt.Sprintf("sn-plan-%03d", i/5)
			if err := c.setPlan(30*time.Second, tn, "payg", c.running()); err != nil {
				t.Fatal(err)
			}
			if err := c.setPlan(30*time.Second, tn, "growth", c.running()); err != nil {
				t.Fatal(err)
			}
			planned = append(planned, tn)
		}
		lead, lst = c.waitLeader(30*time.Second, c.running())
		// The status's last_snapshot_index, or raft's own log line.
		lst.LastSnapshotIndex = max(lst.LastSnapshotIndex, snapshotFromLog(lead.p.logText()))
		if lst.LastSnapshotIndex != lastSnap {
			lastSnap = lst.LastSnapshotIndex
			c.tl.mark("leader %s snapshot at index %d (last index %d)", lead.name, lst.LastSnapshotIndex, lst.LastIndex)
		}
		// Raft keeps 16 entries behind a snapshot: a snapshot more than
		// that (and some margin) beyond the follower's last index means
		// the entries it needs next are gone from the leader's log.
		if lst.LastSnapshotIndex > fst.LastIndex+16+32 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader's last snapshot is at %d, not beyond the follower's last index %d + 48, after 150 s of writes (index %d)",
				lst.LastSnapshotIndex, fst.LastIndex, lst.LastIndex)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.tl.mark("leader %s compacted past the follower: snapshot %d > %d + 48; %d plan changes, %d sessions open", lead.name, lst.LastSnapshotIndex, fst.LastIndex, 2*len(planned), len(tr))

	restarted := time.Now()
	f.p.restart()
	installLines := []string{"Installed remote snapshot", "snapshot installed", "installed remote snapshot"}
	installed := func() bool {
		log := f.p.logText()
		return slices.ContainsFunc(installLines, func(l string) bool { return strings.Contains(log, l) })
	}
	// Until it installed the snapshot, or caught up without it (then a
	// snapshot will never come).
	caughtUp := false
	if err := poll(60*time.Second, 100*time.Millisecond, func() error {
		if installed() {
			return nil
		}
		if st, err := f.status(); err == nil && st.AppliedIndex >= lst.LastIndex {
			caughtUp = !installed() // it may have installed it just now
			return nil
		}
		return errors.New("not yet")
	}); err != nil || caughtUp {
		// Say how it caught up instead, if it did: raft-wal drops only
		// whole segments, so entries below the leader's compaction point
		// may still be served from its log.
		fl, _ := f.status()
		ll := lead.p.logText()
		t.Errorf("%s (last index %d before the kill) did not install the leader's snapshot (no %q in its log; caught up without it: %v); "+
			"the leader's snapshot is at %d; leader log: %d \"installing snapshot on\" lines, %d \"compacting logs\" lines; %s now at applied index %d (leader's last index %d). "+
			"If it caught up anyway, the leader served it entries below its compaction point: raft-wal deletes only whole segments (64 MiB), so a compacted log is still readable until its segment rolls over",
			f.name, fst.LastIndex, installLines[0], caughtUp, lst.LastSnapshotIndex, strings.Count(ll, "installing snapshot on"), strings.Count(ll, "compacting logs"),
			f.name, fl.AppliedIndex, lst.LastIndex)
	} else {
		c.tl.mark("%s installed the leader's snapshot %.1fs after its restart", f.name, time.Since(restarted).Seconds())
	}
	c.waitHealthy(60*time.Second, f)
	openSome(10)
	closeSome(5)
	c.waitAgree(60*time.Second, "after the follower's catch-up", tr, tenants, c.servers)
	fst2, _ := f.status()
	c.tl.mark("%s: status says last snapshot index %d, applied %d", f.name, fst2.LastSnapshotIndex, fst2.AppliedIndex)
	if fst2.LastSnapshotIndex <= fst.LastIndex {
		t.Errorf("%s's /v1/status last_snapshot_index is %d after its catch-up, not beyond its last index before the kill (%d); the leader's snapshot is at %d", f.name, fst2.LastSnapshotIndex, fst.LastIndex, lst.LastSnapshotIndex)
	}
	waitFor(t, 30*time.Second, "plan changes on every server", func() error {
		for _, s := range c.servers {
			figs, _, err := s.tenants()
			if err != nil {
				return err
			}
			for _, tn := range planned {
				if figs[tn].Plan != "growth" {
					return fmt.Errorf("%s: %s is on %q, want growth", s.name, tn, figs[tn].Plan)
				}
			}
		}
		return nil
	})
	c.tl.summary()
}

// snapshotFromLog returns the index of the latest snapshot raft logged
// taking ("snapshot complete up to: index=N"), 0 if none.
func snapshotFromLog(log string) uint64 {
	var best uint64
	for _, line := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(line, "snapshot complete up to: index=")
		if !ok {
			continue
		}
		var n uint64
		if _, err := fmt.Sscanf(rest, "%d", &n); err == nil && n > best {
			best = n
		}
	}
	return best
}

// ---------------------------------------------------------------------------
// 3. Grow to five servers at run time, shrink back to three with leave.

func TestClusterGrowAndShrink(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tenants := tenantNames("gs", 3)
	c.setPlans(tenants, "payg")
	a := c.addAgent("gs-agent", nil, c.wires(c.servers))
	ctx := context.Background()
	tr := truth{}
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("gs-%03d", i)
		tn, cl := tenants[i%3], sessionClasses[i%len(sessionClasses)]
		if err := a.open(ctx, 30*time.Second, tn, cl, id); err != nil {
			t.Fatal(err)
		}
		tr[id] = [2]string{tn, cl}
	}
	c.waitAgree(30*time.Second, "3 servers", tr, tenants, c.servers)

	grow := time.Now()
	s4, s5 := c.addServer(), c.addServer()
	c.tl.mark("started %s and %s with --join %s", s4.name, s5.name, strings.Join([]string{c.servers[0].gossip, c.servers[1].gossip, c.servers[2].gossip}, ","))
	var ps []peerJSON
	waitFor(t, 120*time.Second, "raft peers shows 5 voters", func() error {
		var err error
		lead, _, err = c.leader(c.servers)
		if err != nil {
			return err
		}
		if ps, err = c.raftPeers(lead); err != nil {
			return err
		}
		if v := voters(ps); len(v) != 5 {
			return fmt.Errorf("voters %v (peers %+v)", v, ps)
		}
		return nil
	})
	c.tl.mark("5 voters after %.1fs: %v", time.Since(grow).Seconds(), voters(ps))
	c.waitHealthy(60*time.Second, c.servers...)
	c.waitAgree(60*time.Second, "5 servers", tr, tenants, c.servers)
	for _, s := range c.servers {
		st, err := s.status()
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Voters) != 5 {
			t.Errorf("%s's status lists voters %v, want 5", s.name, st.Voters)
		}
	}
	if ms, err := members(s5); err != nil {
		t.Error(err)
	} else {
		for _, s := range c.servers {
			if ms[s.name] != "alive" {
				t.Errorf("headroom members on %s: %s is %q, want alive (members %v)", s5.name, s.name, ms[s.name], ms)
			}
		}
		c.tl.mark("members as %s sees them: %v", s5.name, ms)
	}

	// Shrink: the leader leaves first (it must hand leadership over), then
	// one of the new servers.
	leavers := []*hServer{lead}
	if lead == s4 {
		leavers = append(leavers, s5)
	} else {
		leavers = append(leavers, s4)
	}
	remaining := slices.Clone(c.servers)
	for _, l := range leavers {
		remaining = slices.DeleteFunc(remaining, func(s *hServer) bool { return s == l })
		start := time.Now()
		out, err := runCLI("leave", "--addr", l.http)
		if err != nil {
			t.Fatalf("headroom leave --addr %s (%s): %v\n%s", l.http, l.name, err, out)
		}
		if err := l.p.waitExit(30 * time.Second); err != nil {
			t.Errorf("after leave: %v", err)
			l.p.kill()
		} else if e := l.p.exitErr(); e != nil {
			t.Errorf("%s exited with %v after leave", l.name, e)
		}
		c.tl.mark("headroom leave --addr %s (%s): %q; exited after %.1fs", l.http, l.name, strings.TrimSpace(out), time.Since(start).Seconds())
		want := []string{}
		for _, s := range remaining {
			want = append(want, s.name)
		}
		sort.Strings(want)
		waitFor(t, 60*time.Second, fmt.Sprintf("raft peers shows voters %v", want), func() error {
			nl, _, err := c.leader(remaining)
			if err != nil {
				return err
			}
			if ps, err = c.raftPeers(nl); err != nil {
				return err
			}
			if v := voters(ps); !slices.Equal(v, want) {
				return fmt.Errorf("voters %v, want %v", v, want)
			}
			return nil
		})
		nl, nst := c.waitLeader(30*time.Second, remaining)
		c.tl.mark("voters %v, leader %s (term %d), %.1fs after the leave", voters(ps), nl.name, nst.Term, time.Since(start).Seconds())
	}

	// Gossip knows they left: they are not alive in anyone's view.
	waitFor(t, 30*time.Second, "members shows the leavers gone", func() error {
		for _, s := range remaining {
			ms, err := members(s)
			if err != nil {
				return err
			}
			for _, l := range leavers {
				if ms[l.name] == "alive" {
					return fmt.Errorf("%s still sees %s alive: %v", s.name, l.name, ms)
				}
			}
			for _, r := range remaining {
				if ms[r.name] != "alive" {
					return fmt.Errorf("%s sees %s %q: %v", s.name, r.name, ms[r.name], ms)
				}
			}
		}
		return nil
	})
	ms, _ := members(remaining[0])
	c.tl.mark("members as %s sees them after the leaves: %v", remaining[0].name, ms)
	// They left on purpose: "left", not "failed" (cluster.StatusLeft).
	for _, l := range leavers {
		if ms[l.name] != "left" {
			t.Errorf("after headroom leave, %s shows %s as %q, want \"left\" (members %v)", remaining[0].name, l.name, ms[l.name], ms)
		}
	}

	// The three that remain still commit: a plan change, and sessions.
	if err := c.setPlan(30*time.Second, "gs-after", "payg", remaining); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("gs-%03d", i)
		if err := a.close(ctx, 30*time.Second, id); err != nil {
			t.Fatal(err)
		}
		delete(tr, id)
	}
	for i := 100; i < 115; i++ {
		id := fmt.Sprintf("gs-%03d", i)
		tn, cl := tenants[i%3], sessionClasses[i%len(sessionClasses)]
		if err := a.open(ctx, 30*time.Second, tn, cl, id); err != nil {
			t.Fatal(err)
		}
		tr[id] = [2]string{tn, cl}
	}
	c.waitAgentsSettled(60*time.Second, a)
	c.waitAgree(60*time.Second, "3 servers after the leaves", tr, tenants, remaining)
	for _, s := range remaining {
		st, err := s.status()
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Voters) != 3 {
			t.Errorf("%s's status lists voters %v, want 3", s.name, st.Voters)
		}
	}
	c.tl.summary()
}

// ---------------------------------------------------------------------------
// 4. Partition the leader from the other two (network namespaces).

func TestClusterPartition(t *testing.T) {
	requireNetNS(t)
	lab := newNetLab(t, 3)
	c := newCluster(t, 3, lab)
	c.startAll()
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	c.tl.mark("3 servers in namespaces %v, leader %s", lab.names(), lead.name)
	tenants := tenantNames("pt", 6)
	c.setPlans(tenants, "payg")
	wires := c.wires(c.servers)
	inNS := map[*hServer]*hAgent{}
	for _, s := range c.servers {
		inNS[s] = c.addAgent("pt-agent-"+s.name, s.ns, wires)
	}
	host := c.addAgent("pt-agent-host", nil, wires)
	ctx := context.Background()
	tr := truth{}
	owner := map[string]*hAgent{}
	n := 0
	// open and closeOf change the truth, and the other views given.
	open := func(a *hAgent, k int, views ...truth) {
		t.Helper()
		for i := 0; i < k; i++ {
			id := fmt.Sprintf("pt-%04d", n)
			tn, cl := tenants[n%len(tenants)], sessionClasses[n%len(sessionClasses)]
			n++
			if err := a.open(ctx, 30*time.Second, tn, cl, id); err != nil {
				t.Fatal(err)
			}
			tr[id], owner[id] = [2]string{tn, cl}, a
			for _, v := range views {
				v[id] = [2]string{tn, cl}
			}
		}
	}
	closeOf := func(a *hAgent, k int, skip truth, views ...truth) {
		t.Helper()
		for _, id := range keys(tr) {
			if k == 0 {
				return
			}
			if _, no := skip[id]; owner[id] != a || no {
				continue
			}
			if err := a.close(ctx, 30*time.Second, id); err != nil {
				t.Fatal(err)
			}
			delete(tr, id)
			for _, v := range views {
				delete(v, id)
			}
			k--
		}
	}
	for _, a := range c.agents {
		open(a, 20)
	}
	c.waitAgentsSettled(60*time.Second, c.agents...)
	c.waitAgree(60*time.Second, "before the partition", tr, tenants, c.servers)

	old, _ := c.waitLeader(30*time.Second, c.servers)
	minority := inNS[old]
	var majority []*hServer
	var others []*hAgent
	for _, s := range c.servers {
		if s != old {
			majority = append(majority, s)
			others = append(others, inNS[s])
		}
	}
	others = append(others, host)
	preCut := tr.clone()
	cut := time.Now()
	if err := old.ns.cut(); err != nil {
		t.Fatal(err)
	}
	c.tl.mark("partition: %s (the leader) and %s cut off from the bridge", old.name, minority.name)
	healed := false
	t.Cleanup(func() {
		if !healed {
			old.ns.heal()
		}
	})

	// The old leader steps down: it cannot reach a quorum.
	waitFor(t, 30*time.Second, "the old leader steps down", func() error {
		st, err := old.status()
		if err != nil {
			return err
		}
		if st.State == "leader" {
			return fmt.Errorf("%s still says leader (term %d)", old.name, st.Term)
		}
		return nil
	})
	c.tl.mark("%s stepped down after %dms", old.name, time.Since(cut).Milliseconds())
	nl, nst := c.waitLeader(30*time.Second, majority)
	c.tl.mark("majority elected %s (term %d) %dms after the cut", nl.name, nst.Term, time.Since(cut).Milliseconds())

	// The minority's agent admits locally, but nothing it ships is
	// acknowledged while it is cut off.
	st0, err := minority.status()
	if err != nil {
		t.Fatal(err)
	}
	// What the majority must show: the truth without the cut-off agent's
	// changes, which cannot be committed until the partition heals.
	majorityTruth := tr.clone()
	cutOff := truth{}
	open(minority, 15, cutOff)
	closeOf(minority, 3, cutOff)
	for _, a := range others {
		open(a, 10, majorityTruth)
		closeOf(a, 5, nil, majorityTruth)
	}
	c.waitAgentsSettled(90*time.Second, others...)
	c.tl.mark("the majority's %d agents moved to %s and were acknowledged, %.1fs after the cut", len(others), nl.name, time.Since(cut).Seconds())
	c.waitAgree(60*time.Second, "majority during the partition", majorityTruth, tenants, majority)

	// The code-level check of the cut-off agent: acks do not move.
	for i := 0; i < 10; i++ {
		st, err := minority.status()
		if err != nil {
			t.Fatal(err)
		}
		if st.LastAck.Seq != st0.LastAck.Seq {
			t.Errorf("%s (cut off) had batch %d acknowledged while cut off (ack seq before: %d): %+v", minority.name, st.LastAck.Seq, st0.LastAck.Seq, st)
			break
		}
		if i == 9 && st.UnackedBatches == 0 {
			t.Errorf("%s (cut off) has no unacknowledged batch after opening %d sessions: %+v", minority.name, len(cutOff), st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mst, _ := minority.status()
	c.tl.mark("%s while cut off: connected %v to %q, %d unacked, last ack seq %d (was %d)", minority.name, mst.Connected, mst.Server, mst.UnackedBatches, mst.LastAck.Seq, st0.LastAck.Seq)

	// A write on the minority side waits for a leader, then fails.
	wstart := time.Now()
	code, body, _, err := callWith(httpcFor(old), "PUT", old.url("/v1/tenants/pt-minority/plan"), map[string]string{"plan": "payg"})
	c.tl.mark("plan change on %s while cut off: %d %s %v after %.1fs", old.name, code, bytes100(body), err, time.Since(wstart).Seconds())
	if err == nil && code == 200 {
		t.Errorf("a plan change on the cut-off server %s succeeded", old.name)
	}
	// The cut-off server committed nothing: it shows what was true at the
	// cut, without the sessions its own agent opened since.
	if err := c.agree(preCut, tenants, []*hServer{old}); err != nil {
		t.Errorf("the cut-off server changed: %v", err)
	}
	// A write on the majority side commits.
	if err := c.setPlan(30*time.Second, "pt-majority", "payg", majority); err != nil {
		t.Fatal(err)
	}

	if err := old.ns.heal(); err != nil {
		t.Fatal(err)
	}
	healed = true
	heal := time.Now()
	c.tl.mark("healed after %.1fs cut", heal.Sub(cut).Seconds())
	c.waitAgentsSettled(90*time.Second, c.agents...)
	c.waitAgree(90*time.Second, "after healing", tr, tenants, c.servers)
	// Nothing doubled: close what the cut-off agent opened while cut off,
	// and some of every agent's older sessions.
	for _, id := range keys(cutOff) {
		if err := minority.close(ctx, 30*time.Second, id); err != nil {
			t.Fatal(err)
		}
		delete(tr, id)
	}
	for _, a := range c.agents {
		closeOf(a, 5, cutOff)
	}
	c.waitAgentsSettled(60*time.Second, c.agents...)
	c.waitAgree(60*time.Second, "after closing", tr, tenants, c.servers)
	for _, s := range c.servers {
		figs, _, err := s.tenants()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := figs["pt-minority"]; ok {
			t.Errorf("%s knows tenant pt-minority, whose plan change failed", s.name)
		}
		if figs["pt-majority"].Plan != "payg" {
			t.Errorf("%s: pt-majority on %q, want payg", s.name, figs["pt-majority"].Plan)
		}
	}
	c.tl.summary()
}

// ---------------------------------------------------------------------------
// 5. An agent killed for good has its sessions expired after the grace.

func TestClusterAgentExpiry(t *testing.T) {
	c := newCluster(t, 3, nil, "--agent-grace", "2s")
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tenants := tenantNames("ex", 2)
	c.setPlans(tenants, "payg")
	doomed := c.addAgent("ex-doomed", nil, c.wires(c.servers))
	stays := c.addAgent("ex-stays", nil, c.wires(c.servers))
	ctx := context.Background()
	tr := truth{}
	for i := 0; i < 30; i++ {
		a := doomed
		if i%3 == 2 {
			a = stays
		}
		id := fmt.Sprintf("ex-%s-%03d", a.name, i)
		tn, cl := tenants[i%2], sessionClasses[i%len(sessionClasses)]
		if err := a.open(ctx, 30*time.Second, tn, cl, id); err != nil {
			t.Fatal(err)
		}
		tr[id] = [2]string{tn, cl}
	}
	c.waitAgentsSettled(30*time.Second, doomed, stays)
	c.waitAgree(30*time.Second, "both agents counted", tr, tenants, c.servers)

	doomed.p.kill()
	killed := time.Now()
	gone := 0
	for id := range tr {
		if strings.HasPrefix(id, "ex-"+doomed.name) {
			delete(tr, id)
			gone++
		}
	}
	c.tl.mark("kill -9 %s for good (%d of its sessions open)", doomed.name, gone)
	waitFor(t, 60*time.Second, "the dead agent's sessions leave every server", func() error {
		if err := c.agree(tr, tenants, c.servers); err != nil {
			return err
		}
		for _, s := range c.servers {
			as, err := s.agentsView()
			if err != nil {
				return err
			}
			seen := false
			for _, r := range as {
				if r.ID == doomed.name {
					seen = true
					if !r.Expired {
						return fmt.Errorf("%s: %s not marked expired: %+v", s.name, doomed.name, r)
					}
				}
				if r.ID == stays.name && r.Expired {
					return fmt.Errorf("%s: %s, alive, marked expired", s.name, stays.name)
				}
			}
			if !seen {
				return fmt.Errorf("%s does not list %s in /v1/agents", s.name, doomed.name)
			}
		}
		return nil
	})
	c.tl.mark("%s's sessions expired on every server %.1fs after the kill (grace 2s)", doomed.name, time.Since(killed).Seconds())
	// The live agent still counts.
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("ex-late-%d", i)
		if err := stays.open(ctx, 30*time.Second, tenants[i%2], "audio", id); err != nil {
			t.Fatal(err)
		}
		tr[id] = [2]string{tenants[i%2], "audio"}
	}
	c.waitAgree(30*time.Second, "the live agent after the expiry", tr, tenants, c.servers)

	// An agent that falls silent (SIGSTOP) past the grace is expired too,
	// and when it comes back (SIGCONT) it resyncs: its sessions count
	// again, once.
	paused := c.addAgent("ex-paused", nil, c.wires(c.servers))
	var its []string
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("ex-paused-%d", i)
		if err := paused.open(ctx, 30*time.Second, tenants[i%2], "video-hd", id); err != nil {
			t.Fatal(err)
		}
		its = append(its, id)
	}
	c.waitAgentsSettled(30*time.Second, paused, stays)
	withPaused := tr.clone()
	for i, id := range its {
		withPaused[id] = [2]string{tenants[i%2], "video-hd"}
	}
	c.waitAgree(30*time.Second, "the paused agent counted", withPaused, tenants, c.servers)
	if err := paused.p.signalNamed("STOP"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { paused.p.signalNamed("CONT") })
	c.tl.mark("SIGSTOP %s", paused.name)
	waitFor(t, 60*time.Second, "the silent agent's sessions leave every server", func() error { return c.agree(tr, tenants, c.servers) })
	c.tl.mark("%s's sessions expired %.1fs after it fell silent", paused.name, time.Since(stopped).Seconds())
	if err := paused.p.signalNamed("CONT"); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	c.waitAgentsSettled(60*time.Second, paused)
	waitFor(t, 60*time.Second, "the returning agent counted again, once", func() error {
		if err := c.agree(withPaused, tenants, c.servers); err != nil {
			return err
		}
		for _, s := range c.servers {
			as, err := s.agentsView()
			if err != nil {
				return err
			}
			for _, r := range as {
				if r.ID == paused.name && r.Expired {
					return fmt.Errorf("%s: %s still marked expired", s.name, paused.name)
				}
			}
		}
		return nil
	})
	c.tl.mark("SIGCONT %s: resynced and counted again on every server after %.1fs", paused.name, time.Since(resumed).Seconds())
	// And it still ships: close its sessions.
	for _, id := range its {
		if err := paused.close(ctx, 30*time.Second, id); err != nil {
			t.Fatal(err)
		}
	}
	c.waitAgree(30*time.Second, "the returned agent's closes", tr, tenants, c.servers)
	c.tl.summary()
}

// ---------------------------------------------------------------------------
// 6. Duplicate batches and old epochs, straight on the wire.

type wireConn struct {
	t  testing.TB
	nc net.Conn
	r  *wire.Reader
}

// wireHello connects to the leader's wire address (following a Redirect),
// sends Hello and returns the first answer that is not a push.
func wireHello(t testing.TB, addr, agentID string, epoch uint64) (*wireConn, wire.Message) {
	t.Helper()
	for hop := 0; hop < 5; hop++ {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wc := &wireConn{t: t, nc: nc, r: wire.NewReader(nc, wire.DefaultMaxFrame)}
		t.Cleanup(func() { nc.Close() })
		wc.send(&wire.Hello{AgentID: agentID, Epoch: epoch, Version: wire.ProtocolVersion})
		m := wc.next(10 * time.Second)
		if rd, ok := m.(*wire.Redirect); ok {
			t.Logf("hello at %s: redirect to %s", addr, rd.Leader)
			nc.Close()
			addr = rd.Leader
			continue
		}
		return wc, m
	}
	t.Fatal("too many redirects")
	return nil, nil
}

func (w *wireConn) send(m wire.Message) {
	w.t.Helper()
	w.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteFrame(w.nc, m); err != nil {
		w.t.Fatalf("sending %s: %v", m.Type(), err)
	}
}

// next returns the next message that is not a TenantState push, answering
// Pings; nil when nothing came within limit.
func (w *wireConn) next(limit time.Duration) wire.Message {
	w.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		w.nc.SetReadDeadline(deadline)
		m, err := w.r.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			w.t.Fatalf("reading the stream: %v", err)
		}
		switch m := m.(type) {
		case *wire.TenantState:
			continue
		case *wire.Ping:
			w.send(&wire.Pong{Nonce: m.Nonce})
			continue
		}
		return m
	}
}

func TestClusterWireDedupAndEpochs(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead, _ := c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	tn := "wire-t"
	c.setPlans([]string{tn}, "payg")
	// Only the leader takes streams: start at a follower, to see the
	// redirect too.
	start := c.servers[0]
	if start == lead {
		start = c.servers[1]
	}
	agentID := "wire-agent-" + randSuffix()
	epoch1 := uint64(time.Now().UnixNano())
	epoch2 := epoch1 + uint64(time.Second)
	count := func(want uint64) func() error {
		return func() error {
			for _, s := range c.servers {
				f, hdr, err := s.tenant(tn)
				if err != nil {
					return err
				}
				if f.Concurrency.Total != want || f.Concurrency.ByClass["audio"] != want {
					return fmt.Errorf("%s (index %s): %s has %d open (audio %d), want %d", s.name, hdr.Get("X-Headroom-Index"), tn, f.Concurrency.Total, f.Concurrency.ByClass["audio"], want)
				}
			}
			return nil
		}
	}
	// stays checks the figure for a second (no late double count).
	stays := func(want uint64, what string) {
		t.Helper()
		waitFor(t, 20*time.Second, what, count(want))
		for i := 0; i < 10; i++ {
			if err := count(want)(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.tl.mark("%s: %s has %d open on every server", what, tn, want)
	}

	w1, m := wireHello(t, start.wire, agentID, epoch1)
	wel, ok := m.(*wire.Welcome)
	if !ok {
		t.Fatalf("hello: got %T %+v, want Welcome", m, m)
	}
	if !wel.NeedFullState {
		t.Fatalf("welcome for a new agent without NeedFullState: %+v", wel)
	}
	c.tl.mark("epoch %d: welcome from %s (LastSeq %d, NeedFullState, servers %v)", epoch1, wel.ServerID, wel.LastSeq, wel.Servers)
	w1.send(&wire.FullState{AgentID: agentID, Epoch: epoch1, Seq: 0})
	batch := &wire.DeltaBatch{AgentID: agentID, Epoch: epoch1, Seq: 1, AgentTime: time.Now().UnixMilli(),
		Entries: []wire.DeltaEntry{{Tenant: tn, Class: "audio", Opened: 3, Peak: 3}},
		Peaks:   []wire.TenantPeak{{Tenant: tn, Peak: 3}}}
	w1.send(batch)
	w1.send(batch)
	acks := 0
	for acks < 2 {
		m := w1.next(15 * time.Second)
		switch m := m.(type) {
		case *wire.Ack:
			if m.Seq == 1 {
				acks++
			} else if m.Seq > 1 {
				t.Fatalf("ack of seq %d, only 1 was sent", m.Seq)
			}
		case nil:
			t.Fatalf("%d acks of seq 1 for the batch sent twice, want 2", acks)
		default:
			t.Fatalf("after the batch: got %T %+v", m, m)
		}
	}
	stays(3, "batch 1 delivered twice")
	w1.nc.Close()

	// The same batch again on a new stream, as an agent that reconnects
	// without having seen the Ack resends it: Welcome says it is applied,
	// and the batch is acknowledged without effect.
	w1b, m := wireHello(t, start.wire, agentID, epoch1)
	wel, ok = m.(*wire.Welcome)
	if !ok || wel.NeedFullState || wel.LastSeq != 1 {
		t.Fatalf("hello again with the same epoch: got %T %+v, want Welcome with LastSeq 1", m, m)
	}
	batch.AgentTime = time.Now().UnixMilli()
	w1b.send(batch)
	for {
		m := w1b.next(15 * time.Second)
		if a, ok := m.(*wire.Ack); ok && a.Seq == 1 {
			break
		} else if !ok || a.Seq > 1 {
			t.Fatalf("batch 1 resent on a new stream: got %T %+v, want Ack 1", m, m)
		}
	}
	stays(3, "batch 1 resent on a new stream")
	w1b.nc.Close()

	w2, m := wireHello(t, start.wire, agentID, epoch2)
	wel, ok = m.(*wire.Welcome)
	if !ok || !wel.NeedFullState {
		t.Fatalf("hello with a newer epoch: got %T %+v, want Welcome with NeedFullState", m, m)
	}
	w2.send(&wire.FullState{AgentID: agentID, Epoch: epoch2, Seq: 0, Counts: []wire.CountEntry{{Tenant: tn, Class: "audio", Open: 1}}})
	stays(1, "full state of the newer epoch")

	w3, m := wireHello(t, start.wire, agentID, epoch1)
	if _, ok := m.(*wire.Welcome); ok {
		// Refused at the latest at its first batch.
		w3.send(&wire.DeltaBatch{AgentID: agentID, Epoch: epoch1, Seq: 2, AgentTime: time.Now().UnixMilli(),
			Entries: []wire.DeltaEntry{{Tenant: tn, Class: "audio", Opened: 5, Peak: 6}}})
		m = w3.next(10 * time.Second)
		t.Errorf("hello with an old epoch was welcomed; its batch got %T %+v", m, m)
	}
	e, ok := m.(*wire.Error)
	if !ok || e.Code != wire.CodeOldEpoch {
		t.Fatalf("old epoch: got %T %+v, want Error old-epoch", m, m)
	}
	c.tl.mark("hello with the old epoch: %v", e)
	stays(1, "after the old epoch's attempt")
	w2.nc.Close()

	// HTTP on a follower: a write is forwarded to the leader, and a
	// consistent read, answered by the leader, already sees it.
	code, body, _, err := callWith(start.client, "PUT", start.url("/v1/tenants/fwd-t/plan"), map[string]string{"plan": "growth"})
	if err != nil || code != 200 {
		t.Fatalf("plan change on follower %s: %d %s %v", start.name, code, bytes100(body), err)
	}
	code, body, hdr, err := callWith(start.client, "GET", start.url("/v1/tenants/fwd-t?consistent=true"), nil)
	if err != nil || code != 200 || !strings.Contains(string(body), `"plan":"growth"`) {
		t.Fatalf("consistent read on follower %s: %d %s %v", start.name, code, bytes100(body), err)
	}
	if hdr.Get("X-Headroom-Index") == "" {
		t.Errorf("consistent read without X-Headroom-Index")
	}
	if _, _, hdr, _ := callWith(start.client, "GET", start.url("/v1/tenants"), nil); hdr.Get("X-Headroom-Leader") != lead.http {
		t.Errorf("local read on %s names leader %q, want %q", start.name, hdr.Get("X-Headroom-Leader"), lead.http)
	}
	if code, _, _, _ := callWith(start.client, "GET", start.url("/v1/tenants?consistent=maybe"), nil); code != 400 {
		t.Errorf("consistent=maybe: %d, want 400", code)
	}
	c.tl.summary()
}
