package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDockerCluster runs deploy/compose.yaml on the local Docker engine, the
// image as built by `make image`, and puts the cluster through the faults of
// a deployment: the leader's container killed, an aggregator cut off the
// network for 20 s, an agent's container restarted, a plan changed with the
// CLI against a published port. After each, traffic is paused and every
// server's figures must equal the media servers' own counts. It prints a
// timeline with the failover and catch-up times it measured, and removes the
// containers, networks and volumes it made, also when a step fails.
//
// It runs only with HEADROOM_E2E_DOCKER=1 (`make e2e-docker` sets it). A
// Docker engine that does not answer fails it when CI=true and skips it
// otherwise.
//
// HEADROOM_IMAGE names the image (headroom:dev), HEADROOM_BIN the headroom
// binary the CLI steps run on the host (built from ../cmd/headroom when
// unset), HEADROOM_E2E_NET the /24 the cluster's network takes (172.28.171).
func TestDockerCluster(t *testing.T) {
	if os.Getenv("HEADROOM_E2E_DOCKER") == "" {
		t.Skip("set HEADROOM_E2E_DOCKER=1 (make e2e-docker) to run the compose cluster on Docker")
	}
	c := newComposeCluster(t)
	c.up()
	c.waitLeader("compose up")
	c.waitTraffic()
	c.agree("start", true)

	c.killLeader()
	c.agree("after the leader was killed", true)

	c.partitionFollower(20 * time.Second)
	c.agree("after the partition healed", true)

	c.restartAgent("agent2")
	c.agree("after the agent restart", true)

	c.planChange()

	c.agree("traffic stopped", false)
	c.compareAgents()
}

const (
	project = "headroom-e2e" // fixed, so that a run cleans up what an interrupted one left
	opLimit = 90 * time.Second
)

var (
	aggregators = []string{"agg1", "agg2", "agg3"}
	agents      = []string{"agent1", "agent2", "agent3"}
	medias      = []string{"media1", "media2", "media3"}
)

type composeCluster struct {
	t       *testing.T
	compose []string // the compose command and its project flags
	env     []string
	bin     string // headroom CLI on the host
	aggPort map[string]string
	ids     map[string]string // service -> container id
	pubMu   sync.Mutex
	pub     map[string]string // "service port" -> published host address
	tl      *timeline
	http    *http.Client
	figures []string
}

func newComposeCluster(t *testing.T) *composeCluster {
	t.Helper()
	c := &composeCluster{t: t, tl: &timeline{begin: time.Now()}, aggPort: map[string]string{}, ids: map[string]string{}, pub: map[string]string{}, http: &http.Client{Timeout: 3 * time.Second}}
	c.requireDocker()
	image := envOr("HEADROOM_IMAGE", "headroom:dev")
	out, err := c.run("docker", "image", "inspect", "-f", "{{.Size}}", image)
	if err != nil {
		t.Fatalf("image %s: %v (build it with `make image`)", image, err)
	}
	size, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	c.figure("image %s: %.1f MB", image, float64(size)/1e6)

	c.bin = os.Getenv("HEADROOM_BIN")
	if c.bin == "" {
		c.bin = filepath.Join(t.TempDir(), "headroom")
		if out, err := c.run("go", "build", "-o", c.bin, "../cmd/headroom"); err != nil {
			t.Fatalf("building the CLI: %v\n%s", err, out)
		}
	}
	c.env = []string{"HEADROOM_IMAGE=" + image, "HEADROOM_NET=" + envOr("HEADROOM_E2E_NET", "172.28.171")}
	ports := freePorts(t, len(aggregators))
	for i, a := range aggregators {
		c.aggPort[a] = ports[i]
		c.env = append(c.env, fmt.Sprintf("HEADROOM_PORT_AGG%d=%s", i+1, c.aggPort[a]))
	}
	// A run killed before its cleanup left its project behind: take it down.
	if ids, _ := c.run("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+project); strings.TrimSpace(ids) != "" {
		c.mark("removing containers left by an earlier run")
	}
	c.composeRun("down", "-v", "--remove-orphans", "--timeout", "1")

	t.Cleanup(c.cleanup)
	// An interrupted run (Ctrl-C) takes the cluster down too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	t.Cleanup(func() { signal.Stop(sig); close(done) })
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "%v: taking the compose project %s down\n", s, project)
			c.composeRun("down", "-v", "--remove-orphans", "--timeout", "1")
			os.Exit(1)
		case <-done:
		}
	}()
	return c
}

// requireDocker fails the test in CI, and skips it elsewhere, when the
// engine or the compose tool does not answer.
func (c *composeCluster) requireDocker() {
	missing := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			c.t.Fatalf("CI: %s", msg)
		}
		c.t.Skipf("skipping: %s (in CI this fails)", msg)
	}
	if out, err := c.run("docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		missing("the Docker engine does not answer: %v %s", err, strings.TrimSpace(out))
	}
	switch {
	case exec.Command("docker-compose", "version").Run() == nil:
		c.compose = []string{"docker-compose"}
	case exec.Command("docker", "compose", "version").Run() == nil:
		c.compose = []string{"docker", "compose"}
	default:
		missing("neither docker-compose nor `docker compose` is installed")
	}
	c.compose = append(c.compose, "-p", project, "-f", "compose.yaml")
}

func (c *composeCluster) up() {
	c.t.Helper()
	if out, err := c.composeRun("up", "-d"); err != nil {
		c.t.Fatalf("compose up: %v\n%s", err, out)
	}
	c.mark("compose up: 3 aggregators, 3 agents, 3 media servers (agg HTTP on 127.0.0.1:%s, :%s, :%s)",
		c.aggPort["agg1"], c.aggPort["agg2"], c.aggPort["agg3"])
}

// cleanup prints what the containers said when the test failed, takes the
// project down with its volumes, checks nothing of it is left, and prints
// the timeline.
func (c *composeCluster) cleanup() {
	if c.t.Failed() {
		out, _ := c.composeRun("ps")
		c.t.Logf("--- compose ps ---\n%s", out)
		out, _ = c.composeRun("logs", "--no-color", "--tail", "25")
		c.t.Logf("--- compose logs (tail) ---\n%s", out)
	}
	if out, err := c.composeRun("down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
		c.t.Errorf("compose down: %v\n%s", err, out)
	}
	var left []string
	for _, kind := range []string{"container", "network", "volume"} {
		args := []string{kind, "ls", "-q", "--filter", "label=com.docker.compose.project=" + project}
		if kind == "container" {
			args = []string{"ps", "-aq", "--filter", "label=com.docker.compose.project=" + project}
		}
		if out, err := c.run("docker", args...); err != nil || strings.TrimSpace(out) != "" {
			left = append(left, fmt.Sprintf("%ss: %s %v", kind, strings.Join(strings.Fields(out), " "), err))
		}
	}
	if len(left) > 0 {
		c.t.Errorf("left behind after compose down -v: %s", strings.Join(left, "; "))
	} else {
		c.mark("compose down -v: no container, network or volume of %s left", project)
	}
	c.t.Logf("timeline:\n  %s\nfigures:\n  %s", strings.Join(c.tl.lines(), "\n  "), strings.Join(c.figures, "\n  "))
}

// waitLeader waits until all three servers are ready and name one leader
// among three voters.
func (c *composeCluster) waitLeader(after string) string {
	c.t.Helper()
	var leader string
	c.waitFor(opLimit, "a leader known to all three servers, three voters", func() error {
		var err error
		leader, err = c.commonLeader(aggregators)
		return err
	})
	c.mark("%s: leader %s, 3 voters, every server ready", after, leader)
	return leader
}

// commonLeader returns the leader the given servers all name, once each is
// ready (GET /healthz) and sees three voters.
func (c *composeCluster) commonLeader(servers []string) (string, error) {
	leader := ""
	for _, a := range servers {
		if code, body, err := c.call("GET", c.aggURL(a, "/healthz"), nil); err != nil || code != 200 {
			return "", fmt.Errorf("%s not ready: %d %s %v", a, code, body, err)
		}
		st, err := c.aggStatus(a)
		if err != nil {
			return "", err
		}
		if st.LeaderID == "" || len(st.Voters) != 3 {
			return "", fmt.Errorf("%s: leader %q, voters %v", a, st.LeaderID, st.Voters)
		}
		if leader != "" && st.LeaderID != leader {
			return "", fmt.Errorf("servers disagree on the leader: %s and %s", leader, st.LeaderID)
		}
		leader = st.LeaderID
	}
	return leader, nil
}

// waitTraffic waits until every media server holds sessions and every agent
// has had a batch acknowledged.
func (c *composeCluster) waitTraffic() {
	c.t.Helper()
	c.waitFor(opLimit, "every media server holding sessions, every agent acknowledged", func() error {
		for _, m := range medias {
			st, err := c.simStatus(m)
			if err != nil {
				return err
			}
			if st.Open == 0 {
				return fmt.Errorf("%s holds no session yet", m)
			}
		}
		for _, a := range agents {
			st, err := c.agentStatus(a)
			if err != nil {
				return err
			}
			if !st.Connected || st.LastAck.At == nil {
				return fmt.Errorf("%s: connected %v, no acknowledgement yet", a, st.Connected)
			}
		}
		return nil
	})
	total := 0
	for _, m := range medias {
		st, _ := c.simStatus(m)
		total += st.Open
	}
	c.mark("traffic: %d sessions open across the 3 media servers, every agent acknowledged", total)
}

// killLeader kills the leader's container, measures how long the other two
// take to agree on a new leader, waits for every agent to be acknowledged
// by it, and starts the killed server again.
func (c *composeCluster) killLeader() {
	c.t.Helper()
	old := c.waitLeader("before the kill")
	var rest []string
	for _, a := range aggregators {
		if a != old {
			rest = append(rest, a)
		}
	}
	if out, err := c.run("docker", "kill", c.container(old)); err != nil {
		c.t.Fatalf("docker kill %s: %v %s", old, err, out)
	}
	killed := time.Now()
	c.mark("docker kill %s (the leader)", old)
	var leader string
	c.waitForEvery(30*time.Second, 20*time.Millisecond, "a new leader among "+strings.Join(rest, ", "), func() error {
		l, err := c.aliveLeader(rest)
		leader = l
		return err
	})
	failover := time.Since(killed)
	c.mark("new leader %s: failover took %.2f s", leader, failover.Seconds())
	c.figure("leader failover after docker kill: %.2f s (%s to %s)", failover.Seconds(), old, leader)

	took, slowest := c.waitAgentsAcked(killed, "after the failover")
	c.mark("every agent acknowledged by %s again: first acknowledgements %s after the kill", leader, took)
	c.figure("agents acknowledged again after the leader's kill: %s", took)
	if slowest.d > 2*time.Second { // not a failure; the agent's log says where the time went
		out, _ := c.run("docker", "logs", "--since", killed.Add(-time.Second).Format(time.RFC3339Nano), c.container(slowest.agent))
		c.t.Logf("%s took %.2f s; its log since the kill:\n%s", slowest.agent, slowest.d.Seconds(), firstLines(out, 20))
	}

	if out, err := c.run("docker", "start", c.container(old)); err != nil {
		c.t.Fatalf("docker start %s: %v %s", old, err, out)
	}
	c.mark("docker start %s", old)
	c.waitCaughtUp(old, leader)
}

// aliveLeader returns the leader both servers name, which must be one of them.
func (c *composeCluster) aliveLeader(servers []string) (string, error) {
	leader := ""
	for _, a := range servers {
		st, err := c.aggStatus(a)
		if err != nil {
			return "", err
		}
		if st.LeaderID == "" || (leader != "" && st.LeaderID != leader) {
			return "", fmt.Errorf("%s names leader %q", a, st.LeaderID)
		}
		leader = st.LeaderID
	}
	for _, a := range servers {
		if a == leader {
			return leader, nil
		}
	}
	return "", fmt.Errorf("the servers still name %s", leader)
}

// waitAgentsAcked waits until every agent is connected and had a batch
// acknowledged after since, and returns, agent by agent, how long after
// since the first such acknowledgement came (as the agent's status gives
// its time; the containers share the host's clock).
func (c *composeCluster) waitAgentsAcked(since time.Time, what string) (string, agentDelay) {
	c.t.Helper()
	first := map[string]time.Time{}
	c.waitFor(opLimit, "every agent acknowledged "+what, func() error {
		var err error
		for _, a := range agents {
			if _, ok := first[a]; ok {
				continue
			}
			st, e := c.agentStatus(a)
			switch {
			case e != nil:
				err = e
			case !st.Connected || st.LastAck.At == nil || !st.LastAck.At.After(since):
				err = fmt.Errorf("%s: connected %v, last acknowledgement %v", a, st.Connected, st.LastAck.At)
			default:
				first[a] = *st.LastAck.At
			}
		}
		return err
	})
	var parts []string
	var slowest agentDelay
	for _, a := range agents {
		d := first[a].Sub(since)
		parts = append(parts, fmt.Sprintf("%.2f s", d.Seconds()))
		if d > slowest.d {
			slowest = agentDelay{a, d}
		}
	}
	return strings.Join(parts, ", "), slowest
}

type agentDelay struct {
	agent string
	d     time.Duration
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("... (%d lines more)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}

// waitCaughtUp waits until server is ready and has applied everything the
// leader had committed when the wait began.
func (c *composeCluster) waitCaughtUp(server, leader string) {
	c.t.Helper()
	ls, err := c.aggStatus(leader)
	if err != nil {
		c.t.Fatalf("leader %s: %v", leader, err)
	}
	begin := time.Now()
	var st aggStatus
	c.waitFor(opLimit, server+" caught up with "+leader, func() error {
		if code, body, err := c.call("GET", c.aggURL(server, "/healthz"), nil); err != nil || code != 200 {
			return fmt.Errorf("%s not ready: %d %s %v", server, code, body, err)
		}
		st, err = c.aggStatus(server)
		if err != nil {
			return err
		}
		if st.AppliedIndex < ls.CommitIndex || st.LeaderID != leader {
			return fmt.Errorf("%s applied %d of %d, leader %q", server, st.AppliedIndex, ls.CommitIndex, st.LeaderID)
		}
		return nil
	})
	c.mark("%s ready and caught up: applied index %d ≥ the leader's commit index %d, in %.2f s", server, st.AppliedIndex, ls.CommitIndex, time.Since(begin).Seconds())
}

// partitionFollower disconnects a follower from the cluster's network for
// d while traffic goes on, then reconnects it at the same address.
func (c *composeCluster) partitionFollower(d time.Duration) {
	c.t.Helper()
	leader := c.waitLeader("before the partition")
	var f string
	for _, a := range aggregators {
		if a != leader {
			f = a
			break
		}
	}
	netName, ip := c.network(f)
	before, err := c.aggStatus(leader)
	if err != nil {
		c.t.Fatal(err)
	}
	if out, err := c.run("docker", "network", "disconnect", netName, c.container(f)); err != nil {
		c.t.Fatalf("docker network disconnect %s: %v %s", f, err, out)
	}
	cut := time.Now()
	c.mark("docker network disconnect %s (a follower, %s) for %s", f, ip, d)
	// The cut lasts d; meanwhile the other two must keep a leader and commit.
	var lastErr error
	for time.Since(cut) < d {
		if st, err := c.aggStatus(leader); err != nil || st.State != "leader" {
			lastErr = fmt.Errorf("%s during the partition: %+v %v", leader, st, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if lastErr != nil {
		c.t.Errorf("the majority side lost its leader: %v", lastErr)
	}
	after, err := c.aggStatus(leader)
	if err != nil {
		c.t.Fatal(err)
	}
	if out, err := c.run("docker", "network", "connect", "--ip", ip, "--alias", f, netName, c.container(f)); err != nil {
		c.t.Fatalf("docker network connect %s: %v %s", f, err, out)
	}
	c.mark("docker network connect %s: the leader committed %d entries meanwhile", f, after.CommitIndex-before.CommitIndex)
	begin := time.Now()
	c.waitCaughtUp(f, leader)
	c.figure("catch-up of %s after a %s partition (%d entries behind): %.2f s", f, d, after.CommitIndex-before.CommitIndex, time.Since(begin).Seconds())
}

// restartAgent restarts an agent's container: the agent stops its API,
// persists and drains; back, it must keep its identity and epoch (its
// memory), and nothing may be counted twice (the agree step after it).
func (c *composeCluster) restartAgent(a string) {
	c.t.Helper()
	before, err := c.agentStatus(a)
	if err != nil {
		c.t.Fatal(err)
	}
	begin := time.Now()
	if out, err := c.run("docker", "restart", c.container(a)); err != nil {
		c.t.Fatalf("docker restart %s: %v %s", a, err, out)
	}
	restarted := time.Now()
	c.mark("docker restart %s (%d sessions open on it) took %.2f s", a, before.OpenSessions, restarted.Sub(begin).Seconds())
	var st agentStatus
	c.waitFor(opLimit, a+" back and acknowledged", func() error {
		c.forget(a)
		st, err = c.agentStatus(a)
		if err != nil {
			return err
		}
		if !st.Connected || st.LastAck.At == nil || !st.LastAck.At.After(restarted) {
			return fmt.Errorf("%s: connected %v, last acknowledgement %v", a, st.Connected, st.LastAck.At)
		}
		return nil
	})
	if st.ID != before.ID || st.Epoch != before.Epoch {
		c.t.Errorf("%s came back as %s epoch %d, was %s epoch %d: it lost its memory", a, st.ID, st.Epoch, before.ID, before.Epoch)
	}
	c.mark("%s back with the same id and epoch and %d sessions, acknowledged %.2f s after docker restart returned",
		a, st.OpenSessions, st.LastAck.At.Sub(restarted).Seconds())
}

// planChange puts a tenant of its own on starter (strict, ceiling 100)
// with the CLI against a published port, fills the ceiling across the three
// agents, then moves it to growth and back, and checks each agent enforces
// each plan.
func (c *composeCluster) planChange() {
	c.t.Helper()
	const tenant = "e2e-probe"
	addr := "127.0.0.1:" + c.aggPort["agg1"]
	c.cli("tenant", "set-plan", "--addr", addr, "--at", "now", tenant, "starter")
	c.mark("headroom tenant set-plan --addr %s %s starter", addr, tenant)

	var mu sync.Mutex
	open := map[string][]string{} // agent -> session ids it admitted
	n := 0
	openOne := func(a string) (bool, string, error) {
		mu.Lock()
		n++
		id := fmt.Sprintf("%s-%s-%d", tenant, a, n)
		mu.Unlock()
		ok, reason, err := c.openSession(a, tenant, id)
		if ok {
			mu.Lock()
			open[a] = append(open[a], id)
			mu.Unlock()
		}
		return ok, reason, err
	}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		s := 0
		for _, ids := range open {
			s += len(ids)
		}
		return s
	}
	// Fill the ceiling, a session on each agent in turn; an agent waiting
	// for its share (grant-timeout) or for the plan (unknown-tenant) is asked
	// again.
	refusals := map[string]int{}
	fillStart := time.Now()
	c.waitFor(opLimit, "100 sessions admitted on starter", func() error {
		for total() < 100 {
			a := agents[total()%len(agents)]
			ok, reason, err := openOne(a)
			if err != nil {
				return err
			}
			if !ok {
				refusals[a+" "+reason]++
				return fmt.Errorf("%s refused (%s) at %d open", a, reason, total())
			}
		}
		return nil
	})
	c.mark("100 starter sessions admitted in %.2f s; refusals on the way: %v", time.Since(fillStart).Seconds(), refusals)
	for _, a := range agents {
		if ok, reason, err := openOne(a); err != nil || ok {
			c.t.Fatalf("%s admitted session 101 of a starter tenant (ceiling 100): %v %s", a, err, reason)
		}
	}
	c.waitTenantTotal(tenant, total())
	c.mark("%s on starter: 100 admitted (%d, %d, %d by agent), the 101st refused by every agent, every server counts 100",
		tenant, len(open["agent1"]), len(open["agent2"]), len(open["agent3"]))

	// Upgrade: every agent must admit above the old ceiling.
	c.cli("tenant", "set-plan", "--addr", addr, tenant, "growth")
	changed := time.Now()
	c.mark("headroom tenant set-plan --addr %s %s growth", addr, tenant)
	took := c.eachAgent(func(a string) error {
		ok, reason, err := openOne(a)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s still refuses (%s)", a, reason)
		}
		return nil
	}, changed)
	c.mark("growth enforced by every agent: each admitted above 100 within %s", took)
	c.figure("upgrade starter→growth seen by agent1, agent2, agent3 after %s", took)

	// Downgrade at once: above the new ceiling, every agent must refuse.
	c.cli("tenant", "set-plan", "--addr", addr, "--at", "now", tenant, "starter")
	changed = time.Now()
	c.mark("headroom tenant set-plan --addr %s --at now %s starter (%d open)", addr, tenant, total())
	took = c.eachAgent(func(a string) error {
		ok, reason, err := openOne(a)
		if err != nil {
			return err
		}
		if ok || reason != "ceiling" {
			return fmt.Errorf("%s admitted %v (%s)", a, ok, reason)
		}
		return nil
	}, changed)
	c.mark("starter enforced again by every agent (refused: ceiling) within %s; %d open", took, total())
	c.figure("downgrade growth→starter seen by agent1, agent2, agent3 after %s", took)
	c.waitTenantTotal(tenant, total())

	for a, ids := range open {
		for _, id := range ids {
			if code, body, err := c.call("DELETE", c.agentURL(a, "/v1/sessions/"+id), nil); err != nil || code != 200 {
				c.t.Fatalf("closing %s on %s: %d %s %v", id, a, code, body, err)
			}
		}
	}
	c.waitTenantTotal(tenant, 0)
	c.mark("%s: every session closed, every server counts 0", tenant)
}

// eachAgent polls cond for every agent, concurrently, until it holds, and
// returns how long each took since since.
func (c *composeCluster) eachAgent(cond func(a string) error, since time.Time) string {
	c.t.Helper()
	var mu sync.Mutex
	took := map[string]time.Duration{}
	errs := map[string]error{}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := poll(30*time.Second, 20*time.Millisecond, func() error { return cond(a) })
			mu.Lock()
			took[a], errs[a] = time.Since(since), err
			mu.Unlock()
		}()
	}
	wg.Wait()
	var parts []string
	for _, a := range agents {
		if errs[a] != nil {
			c.t.Fatalf("%s: not within 30 s: %v", a, errs[a])
		}
		parts = append(parts, fmt.Sprintf("%.2f s", took[a].Seconds()))
	}
	return strings.Join(parts, ", ")
}

func (c *composeCluster) waitTenantTotal(tenant string, want int) {
	c.t.Helper()
	c.waitFor(opLimit, fmt.Sprintf("every server counting %d sessions of %s", want, tenant), func() error {
		for _, a := range aggregators {
			var tj tenantJSON
			if err := c.getJSON(c.aggURL(a, "/v1/tenants/"+tenant), &tj); err != nil {
				return err
			}
			if tj.Concurrency.Total != uint64(want) {
				return fmt.Errorf("%s counts %d", a, tj.Concurrency.Total)
			}
		}
		return nil
	})
}

// agree pauses the media servers (their counts then are exactly what their
// agents hold) and waits until every server's figures per tenant and class
// equal those counts; resume restarts the traffic.
func (c *composeCluster) agree(when string, resume bool) {
	c.t.Helper()
	for _, m := range medias {
		if code, body, err := c.call("POST", c.simURL(m, "/v1/pause"), nil); err != nil || code != 200 {
			c.t.Fatalf("pausing %s: %d %s %v", m, code, body, err)
		}
	}
	want := map[string]map[string]int{} // tenant -> class -> open
	sum := 0
	for _, m := range medias {
		st, err := c.simStatus(m)
		if err != nil || !st.Paused {
			c.t.Fatalf("%s: %+v %v", m, st, err)
		}
		for _, tn := range st.Tenants {
			if want[tn.Tenant] == nil {
				want[tn.Tenant] = map[string]int{}
			}
			for cl, n := range tn.ByClass {
				want[tn.Tenant][cl] += n
				sum += n
			}
		}
	}
	c.waitFor(opLimit, when+": every server's figures equal to the media servers' counts", func() error {
		for _, a := range aggregators {
			for tenant, classes := range want {
				var tj tenantJSON
				if err := c.getJSON(c.aggURL(a, "/v1/tenants/"+tenant), &tj); err != nil {
					return err
				}
				wantTotal := 0
				for cl, n := range classes {
					wantTotal += n
					if tj.Concurrency.ByClass[cl] != uint64(n) {
						return fmt.Errorf("%s: %s %s: %d, the media servers hold %d", a, tenant, cl, tj.Concurrency.ByClass[cl], n)
					}
				}
				if tj.Concurrency.Total != uint64(wantTotal) {
					return fmt.Errorf("%s: %s: %d, the media servers hold %d", a, tenant, tj.Concurrency.Total, wantTotal)
				}
			}
		}
		return nil
	})
	tenants := make([]string, 0, len(want))
	for tenant, classes := range want {
		n := 0
		for _, k := range classes {
			n += k
		}
		tenants = append(tenants, fmt.Sprintf("%s %d", tenant, n))
	}
	sort.Strings(tenants)
	c.mark("%s: the 3 servers agree with the media servers: %d sessions (%s)", when, sum, strings.Join(tenants, ", "))
	if resume {
		for _, m := range medias {
			if code, body, err := c.call("POST", c.simURL(m, "/v1/resume"), nil); err != nil || code != 200 {
				c.t.Fatalf("resuming %s: %d %s %v", m, code, body, err)
			}
		}
	}
}

// compareAgents checks each agent holds exactly its media server's sessions.
func (c *composeCluster) compareAgents() {
	c.t.Helper()
	var parts []string
	for i, a := range agents {
		as, err := c.agentStatus(a)
		if err != nil {
			c.t.Fatal(err)
		}
		ms, err := c.simStatus(medias[i])
		if err != nil {
			c.t.Fatal(err)
		}
		if as.OpenSessions != ms.Open {
			c.t.Errorf("%s holds %d sessions, %s counts %d", a, as.OpenSessions, medias[i], ms.Open)
		}
		parts = append(parts, fmt.Sprintf("%s %d", a, as.OpenSessions))
	}
	c.mark("every agent holds exactly its media server's sessions (%s)", strings.Join(parts, ", "))
}

// --- Docker and HTTP plumbing ---

// run runs a command with a bounded time and returns its combined output.
func (c *composeCluster) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *composeCluster) composeRun(args ...string) (string, error) {
	return c.run(c.compose[0], append(append([]string{}, c.compose[1:]...), args...)...)
}

// cli runs the headroom CLI on the host.
func (c *composeCluster) cli(args ...string) {
	c.t.Helper()
	if out, err := c.run(c.bin, args...); err != nil {
		c.t.Fatalf("headroom %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// container is the id of a service's container (the same across docker
// kill, start and restart).
func (c *composeCluster) container(service string) string {
	c.t.Helper()
	if id := c.ids[service]; id != "" {
		return id
	}
	out, err := c.composeRun("ps", "-q", service)
	id := strings.TrimSpace(out)
	if err != nil || id == "" || strings.Contains(id, "\n") {
		c.t.Fatalf("container of %s: %q %v", service, out, err)
	}
	c.ids[service] = id
	return id
}

// network returns the name of the network a service's container is on
// and its address there.
func (c *composeCluster) network(service string) (string, string) {
	c.t.Helper()
	out, err := c.run("docker", "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}{{end}}", c.container(service))
	f := strings.Fields(out)
	if err != nil || len(f) != 2 {
		c.t.Fatalf("network of %s: %q %v", service, out, err)
	}
	return f[0], f[1]
}

// published returns the loopback address a service's port is published on.
// It is looked up once, and again after forget: a restarted container may be
// given another port.
func (c *composeCluster) published(service, port string) (string, error) {
	key := service + " " + port
	c.pubMu.Lock()
	addr := c.pub[key]
	c.pubMu.Unlock()
	if addr != "" {
		return addr, nil
	}
	out, err := c.run("docker", "port", c.container(service), port+"/tcp")
	for _, l := range strings.Fields(out) {
		if strings.HasPrefix(l, "127.0.0.1:") && !strings.HasSuffix(l, ":0") {
			addr = l
		}
	}
	if err != nil || addr == "" {
		return "", fmt.Errorf("port %s of %s: %q %v", port, service, out, err)
	}
	c.pubMu.Lock()
	c.pub[key] = addr
	c.pubMu.Unlock()
	return addr, nil
}

func (c *composeCluster) forget(service string) {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	for k := range c.pub {
		if strings.HasPrefix(k, service+" ") {
			delete(c.pub, k)
		}
	}
}

func (c *composeCluster) aggURL(a, path string) string {
	return "http://127.0.0.1:" + c.aggPort[a] + path
}

// agentURL and simURL look the published port up each time: a restarted
// container may be given another one.
func (c *composeCluster) agentURL(a, path string) string {
	addr, err := c.published(a, "9380")
	if err != nil {
		return "http://unpublished.invalid" + path
	}
	return "http://" + addr + path
}

func (c *composeCluster) simURL(m, path string) string {
	addr, err := c.published(m, "9390")
	if err != nil {
		return "http://unpublished.invalid" + path
	}
	return "http://" + addr + path
}

func (c *composeCluster) call(method, url string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, data, err
}

func (c *composeCluster) getJSON(url string, v any) error {
	code, body, err := c.call("GET", url, nil)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	return json.Unmarshal(body, v)
}

// openSession opens a session on an agent: admitted, or the refusal's reason.
func (c *composeCluster) openSession(a, tenant, id string) (bool, string, error) {
	code, body, err := c.call("POST", c.agentURL(a, "/v1/sessions"), map[string]string{"tenant": tenant, "class": "audio", "session": id})
	if err != nil {
		return false, "", err
	}
	var r struct {
		Admitted bool   `json:"admitted"`
		Reason   string `json:"reason"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return false, "", fmt.Errorf("%s: %d %s", a, code, body)
	}
	switch code {
	case 201, 200, 429:
		return r.Admitted, r.Reason, nil
	}
	return false, "", fmt.Errorf("%s: %d %s", a, code, body)
}

type aggStatus struct {
	ID           string   `json:"id"`
	State        string   `json:"state"`
	LeaderID     string   `json:"leader_id"`
	AppliedIndex uint64   `json:"applied_index"`
	CommitIndex  uint64   `json:"commit_index"`
	Voters       []string `json:"voters"`
}

func (c *composeCluster) aggStatus(a string) (aggStatus, error) {
	var st aggStatus
	return st, c.getJSON(c.aggURL(a, "/v1/status"), &st)
}

type agentStatus struct {
	ID             string `json:"id"`
	Epoch          uint64 `json:"epoch"`
	Connected      bool   `json:"connected"`
	UnackedBatches int    `json:"unacked_batches"`
	OpenSessions   int    `json:"open_sessions"`
	LastAck        struct {
		At *time.Time `json:"at"`
	} `json:"last_ack"`
}

func (c *composeCluster) agentStatus(a string) (agentStatus, error) {
	var st agentStatus
	return st, c.getJSON(c.agentURL(a, "/v1/status"), &st)
}

type simStatus struct {
	Paused  bool `json:"paused"`
	Open    int  `json:"open"`
	Tenants []struct {
		Tenant  string         `json:"tenant"`
		ByClass map[string]int `json:"by_class"`
	} `json:"tenants"`
}

func (c *composeCluster) simStatus(m string) (simStatus, error) {
	var st simStatus
	return st, c.getJSON(c.simURL(m, "/v1/status"), &st)
}

type tenantJSON struct {
	Concurrency struct {
		Total   uint64            `json:"total"`
		ByClass map[string]uint64 `json:"by_class"`
	} `json:"concurrency"`
}

// waitFor polls cond every 100 ms until it holds, failing the test with
// cond's last error after limit.
func (c *composeCluster) waitFor(limit time.Duration, what string, cond func() error) {
	c.t.Helper()
	c.waitForEvery(limit, 100*time.Millisecond, what, cond)
}

func (c *composeCluster) waitForEvery(limit, every time.Duration, what string, cond func() error) {
	c.t.Helper()
	if err := poll(limit, every, cond); err != nil {
		c.t.Fatalf("%s: not within %s: %v", what, limit, err)
	}
}

func poll(limit, every time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

func (c *composeCluster) mark(format string, args ...any) {
	c.t.Helper()
	line := c.tl.add(fmt.Sprintf(format, args...))
	c.t.Log(line)
}

func (c *composeCluster) figure(format string, args ...any) {
	c.figures = append(c.figures, fmt.Sprintf(format, args...))
}

type timeline struct {
	begin time.Time
	mu    sync.Mutex
	all   []string
}

func (tl *timeline) add(s string) string {
	line := fmt.Sprintf("[%6.2fs] %s", time.Since(tl.begin).Seconds(), s)
	tl.mu.Lock()
	tl.all = append(tl.all, line)
	tl.mu.Unlock()
	return line
}

func (tl *timeline) lines() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]string(nil), tl.all...)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// freePorts returns n distinct loopback ports nothing listens on now.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are picked, so none comes twice
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports
}
