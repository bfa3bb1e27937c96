package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Meta is what a server advertises to the others in gossip: the host:port
// of each of its listeners.
type Meta struct {
	Wire string `json:"wire,omitempty"` // agent stream (wire protocol)
	Raft string `json:"raft,omitempty"` // Raft transport
	HTTP string `json:"http,omitempty"` // HTTP API
}

// metaVersion is the version of the encoding of Meta in gossip.
const metaVersion = 1

// gossipMeta is what a server gossips as its memberlist metadata: its Meta,
// its BootstrapExpect (only servers with the same value found a cluster
// together), and Leaving, set by Leave just before the server leaves
// gossip: memberlist's leave events do not say whether a node left or died
// (memberlist v0.7.0 never updates Node.State), so this flag is how the
// others tell. It is encoded as JSON with a version and the fields in a
// fixed order, so the same value always encodes to the same bytes
// (memberlist compares them to detect updates).
type gossipMeta struct {
	V       int    `json:"v"`
	Wire    string `json:"wire,omitempty"`
	Raft    string `json:"raft,omitempty"`
	HTTP    string `json:"http,omitempty"`
	Expect  int    `json:"expect,omitempty"`
	Leaving bool   `json:"leaving,omitempty"`
}

func newGossipMeta(m Meta, expect int) gossipMeta {
	return gossipMeta{V: metaVersion, Wire: m.Wire, Raft: m.Raft, HTTP: m.HTTP, Expect: expect}
}

// meta is the Meta part.
func (g gossipMeta) meta() Meta { return Meta{Wire: g.Wire, Raft: g.Raft, HTTP: g.HTTP} }

// encodeMeta encodes g for memberlist's NodeMeta, at most
// memberlist.MetaMaxSize (512) bytes.
func encodeMeta(g gossipMeta) ([]byte, error) {
	g.V = metaVersion
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: gossip metadata is %d bytes, more than %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeMeta decodes what encodeMeta made; later versions' extra fields are
// ignored.
func decodeMeta(b []byte) (gossipMeta, error) {
	var g gossipMeta
	if len(b) == 0 {
		return g, errors.New("no metadata")
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return gossipMeta{}, err
	}
	if g.V < 1 {
		return gossipMeta{}, fmt.Errorf("metadata version %d", g.V)
	}
	return g, nil
}

// Status is a server's health as this node sees it in gossip.
type Status string

const (
	StatusAlive Status = "alive" // alive in gossip
	// StatusSuspect: alive in gossip, but it has not answered this node's
	// own probes for several probe rounds (memberlist does not expose its
	// suspicion state, so this is this node's view); it may soon be failed.
	StatusSuspect Status = "suspect"
	// StatusFailed: declared dead in gossip, or in the Raft configuration
	// but not seen in gossip since this node started.
	StatusFailed  Status = "failed"
	StatusLeft    Status = "left"    // left the cluster on purpose (Leave)
	StatusUnknown Status = "unknown" // gossip is off, so only this node's own status is known
)

// Role is a server's place in the Raft configuration.
type Role string

const (
	RoleVoter    Role = "voter"
	RoleNonvoter Role = "nonvoter"
	RoleNone     Role = "" // not in the Raft configuration
)

// Member is one server as this node knows it.
type Member struct {
	ID          string    `json:"id"`
	GossipAddr  string    `json:"gossip_addr,omitempty"`
	Meta        Meta      `json:"meta"`
	Status      Status    `json:"status"`
	StatusSince time.Time `json:"status_since"` // when this node saw Status begin
	Raft        Role      `json:"raft"`
	Leader      bool      `json:"leader"`
}

// record is what the member table keeps on one server.
type record struct {
	id       string
	gossip   string // advertised gossip address; "" if never seen
	meta     Meta
	status   Status // alive, failed, left, unknown (suspect is derived from lastAck)
	since    time.Time
	lastAck  time.Time           // last answer to one of this node's probes
	leaving  bool                // its metadata announced Leave
	expect   int                 // its BootstrapExpect
	seen     bool                // seen in gossip since this node started
	inRaft   bool                // in the Raft configuration at the last sync
	suffrage raft.ServerSuffrage // when inRaft
	removed  bool                // removed with RemovePeer; not re-added until it rejoins gossip
}

// memberTable is this node's record of every server: those in the Raft
// configuration (whatever gossip says) and those gossip knows. Memberlist's
// events and Raft configuration syncs update it; it is the one place the
// rest of the package reads membership from. Records of servers neither in
// Raft nor alive are dropped after the reap time.
type memberTable struct {
	mu        sync.Mutex
	self      string
	gossip    bool
	recs      map[string]*record
	seenOther bool          // another server was seen alive: members.json may be written
	changed   chan struct{} // poked (never blocks) on every gossip event
	log       hclog.Logger
}

func newMemberTable(self string, gossip bool, meta Meta, expect int) *memberTable {
	t := &memberTable{self: self, gossip: gossip, recs: make(map[string]*record), changed: make(chan struct{}, 1), log: hclog.NewNullLogger()}
	t.recs[self] = &record{id: self, meta: meta, expect: expect, status: StatusAlive, since: time.Now(), seen: true}
	return t
}

func (t *memberTable) poke() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// get returns a copy of id's record.
func (t *memberTable) get(id string) (record, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.recs[id]
	if !ok {
		return record{}, false
	}
	return *r, true
}

// all returns copies of every record.
func (t *memberTable) all() []record {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]record, 0, len(t.recs))
	for _, r := range t.recs {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// gossiped applies a memberlist event about node.
func (t *memberTable) gossiped(node *memberlist.Node, status Status) {
	g, err := decodeMeta(node.Meta)
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.recs[node.Name]
	if r == nil {
		r = &record{id: node.Name}
		t.recs[node.Name] = r
	}
	if err == nil {
		r.meta, r.leaving, r.expect = g.meta(), g.Leaving, g.Expect
	} else if status == StatusAlive {
		t.log.Warn("gossip member without usable metadata; it cannot join Raft", "id", node.Name, "error", err)
	}
	r.gossip = node.Address()
	r.seen = true
	if status == StatusFailed && r.leaving {
		status = StatusLeft
	}
	if status == StatusAlive && r.status != StatusAlive {
		r.removed = false // a fresh join after a removal
	}
	if r.status != status {
		r.status, r.since = status, time.Now()
	}
	if status == StatusAlive && node.Name != t.self {
		t.seenOther = true
	}
	t.poke()
}

// syncRaft records the Raft configuration: servers in it that gossip has
// not shown are failed (unknown without gossip) from now on.
func (t *memberTable) syncRaft(servers []raft.Server) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := make(map[string]raft.Server, len(servers))
	for _, s := range servers {
		in[string(s.ID)] = s
	}
	for id, r := range t.recs {
		if _, ok := in[id]; !ok {
			r.inRaft = false
		}
	}
	for id, s := range in {
		r := t.recs[id]
		if r == nil {
			st := StatusFailed
			if !t.gossip {
				st = StatusUnknown
			}
			r = &record{id: id, status: st, since: time.Now()}
			t.recs[id] = r
		}
		r.inRaft, r.suffrage = true, s.Suffrage
		if r.meta.Raft == "" || !r.seen {
			r.meta.Raft = string(s.Address)
		}
	}
}

// acked notes that id answered one of this node's probes.
func (t *memberTable) acked(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.recs[id]; r != nil {
		r.lastAck = time.Now()
	}
}

// markRemoved notes that id was removed from Raft on purpose.
func (t *memberTable) markRemoved(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.recs[id]; r != nil && id != t.self {
		r.removed = true
	}
}

// prune drops records of servers out of Raft that have not been alive for
// reap.
func (t *memberTable) prune(reap time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, r := range t.recs {
		if id != t.self && !r.inRaft && r.status != StatusAlive && time.Since(r.since) >= reap {
			delete(t.recs, id)
		}
	}
}

// knownMembers is what members.json holds.
type knownMembers struct {
	Members []knownMember `json:"members"`
}

type knownMember struct {
	ID     string `json:"id"`
	Gossip string `json:"gossip"`
}

// persistable returns the members to record: every other server with a
// gossip address that has not left, or ok false while no other server has
// been seen (so a node that cannot reach anyone keeps its old record).
func (t *memberTable) persistable() (knownMembers, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var k knownMembers
	if !t.seenOther {
		return k, false
	}
	for id, r := range t.recs {
		if id != t.self && r.gossip != "" && r.status != StatusLeft {
			k.Members = append(k.Members, knownMember{ID: id, Gossip: r.gossip})
		}
	}
	sort.Slice(k.Members, func(i, j int) bool { return k.Members[i].ID < k.Members[j].ID })
	return k, true
}

const membersFile = "members.json"

// loadMembers reads the members recorded in dir; a missing file is none.
func loadMembers(dir string) (knownMembers, error) {
	var k knownMembers
	b, err := os.ReadFile(filepath.Join(dir, membersFile))
	if errors.Is(err, os.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return k, err
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return k, fmt.Errorf("%s: %w", membersFile, err)
	}
	return k, nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(dir)
	return nil
}

// persistMembers writes members.json when what it should hold changed. It
// is called by the run loop, then once by Shutdown after the loop ended.
func (n *Node) persistMembers() {
	k, ok := n.members.persistable()
	if !ok {
		return
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return
	}
	b = append(b, '\n')
	if bytes.Equal(b, n.membersWritten) {
		return
	}
	path := filepath.Join(n.cfg.DataDir, membersFile)
	if err := writeFileAtomic(path, b); err != nil {
		n.log.Warn("could not record the known members", "path", path, "error", err)
		return
	}
	n.membersWritten = b
}

// gossipDelegate serves our metadata to memberlist.
type gossipDelegate struct {
	mu   sync.Mutex
	meta []byte
}

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *gossipDelegate) set(b []byte) {
	d.mu.Lock()
	d.meta = b
	d.mu.Unlock()
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// gossipEvents feeds memberlist's join, leave and update events into the
// member table. Memberlist calls it with its node lock held: it must not
// call back into memberlist or block.
type gossipEvents struct {
	t   *memberTable
	log hclog.Logger
}

func (e *gossipEvents) NotifyJoin(node *memberlist.Node) {
	e.log.Info("server joined", "id", node.Name, "gossip", node.Address())
	e.t.gossiped(node, StatusAlive)
}

func (e *gossipEvents) NotifyLeave(node *memberlist.Node) {
	st := StatusFailed
	if node.State == memberlist.StateLeft {
		st = StatusLeft
	}
	e.log.Info("server "+string(st), "id", node.Name, "gossip", node.Address())
	e.t.gossiped(node, st)
}

func (e *gossipEvents) NotifyUpdate(node *memberlist.Node) {
	e.log.Debug("server updated", "id", node.Name, "gossip", node.Address())
	e.t.gossiped(node, StatusAlive)
}

// gossipPings records the answers to this node's probes (for
// StatusSuspect).
type gossipPings struct{ t *memberTable }

func (p *gossipPings) AckPayload() []byte { return nil }
func (p *gossipPings) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	p.t.acked(other.Name)
}

// startGossip creates the memberlist.
func (n *Node) startGossip() error {
	metaBytes, err := encodeMeta(newGossipMeta(n.meta, n.cfg.BootstrapExpect))
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("cluster: gossip address %q: %w", n.cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("cluster: gossip address %q: bad port", n.cfg.GossipAddr)
	}
	bindIP := "0.0.0.0"
	if host != "" {
		if bindIP, err = resolveIP(host); err != nil {
			return err
		}
	}
	advHost, err := advertiseHostFor(bindIP, n.cfg.AdvertiseHost)
	if err != nil {
		return err
	}
	advIP, err := resolveIP(advHost)
	if err != nil {
		return err
	}
	glog := n.log.Named("memberlist")
	n.members.log = glog
	mc := memberlist.DefaultLANConfig()
	mc.BindAddr, mc.BindPort = bindIP, port
	mc.AdvertiseAddr, mc.AdvertisePort = advIP, port
	mc.Logger = glog.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	mc.LogOutput = nil
	if n.cfg.Gossip != nil {
		n.cfg.Gossip(mc)
	}
	kr, err := n.openKeyring()
	if err != nil {
		return err
	}
	mc.Keyring, mc.SecretKey, n.mlKeyring = kr, nil, kr
	mc.Name = string(n.id)
	n.gossipMeta = &gossipDelegate{meta: metaBytes}
	mc.Delegate = n.gossipMeta
	mc.Events = &gossipEvents{t: n.members, log: glog}
	mc.Ping = &gossipPings{t: n.members}
	n.probeEvery = mc.ProbeInterval + mc.ProbeTimeout
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: gossip on %s: %w", n.cfg.GossipAddr, err)
	}
	n.ml = ml
	n.gossipBind = net.JoinHostPort(bindIP, strconv.Itoa(int(ml.LocalNode().Port)))
	n.members.mu.Lock()
	self := n.members.recs[string(n.id)]
	self.gossip = ml.LocalNode().Address()
	n.members.mu.Unlock()
	return nil
}

// GossipAddr is this node's advertised gossip address ("" without gossip):
// what other servers pass in Join.
func (n *Node) GossipAddr() string {
	if n.ml == nil {
		return ""
	}
	return n.ml.LocalNode().Address()
}

// Members lists every server this node knows, sorted by id: those in the
// Raft configuration (reported failed, not omitted, while gossip does not
// show them alive) and those alive, failed or left in gossip. It does not
// block on the network. Without gossip it lists the Raft configuration,
// with status unknown for the other servers.
func (n *Node) Members() []Member {
	if f := n.Raft.GetConfiguration(); f.Error() == nil {
		n.members.syncRaft(f.Configuration().Servers)
	}
	_, leader := n.Raft.LeaderWithID()
	recs := n.members.all()
	alive := 0
	for _, r := range recs {
		if r.status == StatusAlive {
			alive++
		}
	}
	// Memberlist probes one node per interval, round robin: an alive node
	// that has not answered for three rounds is suspect.
	suspectAfter := 3 * time.Duration(max(alive-1, 1)) * n.probeEvery
	out := make([]Member, 0, len(recs))
	for _, r := range recs {
		m := Member{ID: r.id, GossipAddr: r.gossip, Meta: r.meta, Status: r.status, StatusSince: r.since, Leader: raft.ServerID(r.id) == leader}
		if m.Status == StatusAlive && n.ml != nil && r.id != string(n.id) &&
			time.Since(r.lastAck) > suspectAfter && time.Since(r.since) > suspectAfter {
			m.Status = StatusSuspect
		}
		if r.inRaft {
			m.Raft = RoleNonvoter
			if r.suffrage == raft.Voter {
				m.Raft = RoleVoter
			}
		}
		out = append(out, m)
	}
	return out
}

// LeaderMeta returns the advertised addresses of the current Raft leader,
// found by its server id among the members, with ok false while no leader
// is known or its metadata has not arrived by gossip yet. Callers use it to
// redirect agents to the leader's wire address and to forward HTTP writes
// to its HTTP address. It does not block on the network.
func (n *Node) LeaderMeta() (Meta, bool) {
	_, id := n.Raft.LeaderWithID()
	if id == "" {
		return Meta{}, false
	}
	if id == n.id {
		return n.meta, true
	}
	r, ok := n.members.get(string(id))
	if !ok || !r.seen || r.meta.Wire == "" && r.meta.HTTP == "" {
		return Meta{}, false
	}
	return r.meta, true
}

// startJoin starts the join loop when there is anyone to join: cfg.Join
// and the members recorded in the data directory.
func (n *Node) startJoin() {
	known, err := loadMembers(n.cfg.DataDir)
	if err != nil {
		n.log.Warn("could not read the recorded members", "error", err)
	}
	self := n.GossipAddr()
	seen := map[string]bool{self: true, "": true}
	var addrs []string
	for _, a := range n.cfg.Join {
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	recorded := 0
	for _, m := range known.Members {
		if m.ID != string(n.id) && !seen[m.Gossip] {
			seen[m.Gossip] = true
			addrs = append(addrs, m.Gossip)
			recorded++
		}
	}
	n.joinDone = make(chan struct{})
	go n.joinLoop(addrs, recorded)
}

// Join backoff and reconnection timings.
const (
	joinBackoffMin             = 500 * time.Millisecond
	joinBackoffMax             = 30 * time.Second
	reconnectEvery             = 30 * time.Second
	autopilotUpdateInterval    = time.Second
	autopilotReconcileInterval = 2 * time.Second
)

// joinLoop joins addrs, retrying with exponential backoff and jitter until
// one answers; then, for as long as the node runs, it periodically tries to
// reach servers that gossip holds failed (a healed partition or a server
// that restarted elsewhere is found again).
func (n *Node) joinLoop(addrs []string, recorded int) {
	defer close(n.joinDone)
	if len(addrs) > 0 {
		n.log.Info("joining the cluster", "addresses", addrs, "recorded", recorded)
		delay := joinBackoffMin
		for attempt := 1; ; attempt++ {
			k, err := n.ml.Join(addrs)
			// Reaching only itself (its own address among those to join,
			// as when every pod of a StatefulSet is given the same list)
			// is not joining: go on until another server is a member.
			if k > 0 && n.ml.NumMembers() > 1 {
				n.log.Info("joined the cluster", "contacted", k, "members", n.ml.NumMembers(), "attempts", attempt)
				break
			}
			if k > 0 && err == nil {
				err = errors.New("only this server answered")
			}
			wait := delay/2 + rand.N(delay/2+1)
			n.log.Warn("could not join the cluster yet; retrying", "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "error", err)
			if !sleepCtx(n.ctx, wait) {
				return
			}
			delay = min(delay*2, joinBackoffMax)
		}
	}
	for {
		if !sleepCtx(n.ctx, reconnectEvery/2+rand.N(reconnectEvery)) {
			return
		}
		var addrs []string
		for _, r := range n.members.all() {
			if r.id != string(n.id) && r.status == StatusFailed && r.gossip != "" {
				addrs = append(addrs, r.gossip)
			}
		}
		if len(addrs) > 0 {
			if k, _ := n.ml.Join(addrs); k > 0 {
				n.log.Info("reached failed servers again", "addresses", addrs, "contacted", k)
			}
		}
	}
}

// sleepCtx sleeps d, returning false if the node stops first.
func sleepCtx(ctx interface{ Done() <-chan struct{} }, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
