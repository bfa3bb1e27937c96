package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process tests of disaster recovery (README: Outage recovery, Backups,
// Corrupt storage): the real binary, as an operator runs it.

// TestOutageRecovery: three servers, a backup, a change newer than it; two
// servers lost for good with their disks; writes fail; `raft recover` on the
// survivor (refused while it runs); it leads alone with the newer change;
// two new empty servers join and become voters; an agent's sessions and
// usage flow through it all.
func TestOutageRecovery(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	s1, s2, s3 := c.servers[0], c.servers[1], c.servers[2]
	tenants := tenantNames("dr", 3)
	c.setPlans(tenants, "payg")
	a := c.addAgent("dr-agent", nil, c.wires(c.servers))
	ctx := context.Background()
	tr := truth{}
	n := 0
	openSome := func(k int) {
		t.Helper()
		for i := 0; i < k; i++ {
			id := fmt.Sprintf("dr-%03d", n)
			tn, cl := tenants[n%len(tenants)], sessionClasses[n%len(sessionClasses)]
			n++
			if err := a.open(ctx, 30*time.Second, tn, cl, id); err != nil {
				t.Fatal(err)
			}
			tr[id] = [2]string{tn, cl}
		}
	}
	closeSome := func(k int) {
		t.Helper()
		for _, id := range keys(tr)[:k] {
			if err := a.close(ctx, 30*time.Second, id); err != nil {
				t.Fatal(err)
			}
			delete(tr, id)
		}
	}
	openSome(12)
	if err := c.setPlan(30*time.Second, "acme", "starter", c.servers); err != nil {
		t.Fatal(err)
	}
	c.waitAgree(30*time.Second, "3 servers", tr, tenants, c.servers)

	backup := filepath.Join(t.TempDir(), "backup.snap")
	if out, err := runCLI("snapshot", "save", "--addr", s1.http, backup); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	// Newer than the backup: recovery must keep them.
	if out, err := runCLI("tenant", "set-plan", "--addr", s1.http, "--at", "now", "acme", "growth"); err != nil {
		t.Fatalf("set-plan: %v\n%s", err, out)
	}
	if out, err := runCLI("plan", "create", "--addr", s1.http, "--fee", "7", "--ceiling", "7", "--mode", "soft", "after-backup"); err != nil {
		t.Fatalf("plan create: %v\n%s", err, out)
	}
	openSome(6)
	closeSome(4)
	c.waitAgentsSettled(30*time.Second, a)
	c.waitAgree(30*time.Second, "3 servers after the backup", tr, tenants, c.servers)
	before := usageOf(t, s1, tenants)
	c.tl.mark("backup taken, acme moved to growth after it, %d sessions open", len(tr))

	// Two servers lost for good, disks and all.
	for _, s := range []*hServer{s2, s3} {
		s.p.kill()
		if err := os.RemoveAll(filepath.Join(c.dir, s.name)); err != nil {
			t.Fatal(err)
		}
	}
	c.tl.mark("%s and %s killed, their data directories removed", s2.name, s3.name)
	// Once the survivor knows it has lost its quorum, writes fail. (One
	// sent before it stepped down may be in its log, outcome unknown, and
	// recovery would apply it: README, Outage recovery.)
	waitFor(t, 30*time.Second, s1.name+" steps down", func() error {
		st, err := s1.status()
		if err != nil || st.State == "leader" {
			return fmt.Errorf("state %q %v", st.State, err)
		}
		return nil
	})
	code, body, _, err := callWith(httpcFor(s1), "PUT", s1.url("/v1/tenants/acme/plan"), map[string]string{"plan": "scale", "at": "now"})
	if err == nil && code == 200 {
		t.Fatal("a write succeeded with one of three servers alive")
	}
	c.tl.mark("a write with 1 of 3 alive: %d %s %v", code, bytes100(body), err)
	// The agent admits on soft plans meanwhile, keeping what it cannot ship.
	openSome(3)

	voter := s1.name + "=" + s1.raft
	out, err := runCLI("raft", "recover", "--data-dir", filepath.Join(c.dir, s1.name), "--voter", voter)
	if err == nil || !strings.Contains(out, "in use by a running server") {
		t.Fatalf("raft recover while the server runs: %v\n%s", err, out)
	}
	if !s1.p.running() {
		t.Fatal("a refused recover stopped the server")
	}
	s1.p.signal(syscall.SIGTERM)
	if err := s1.p.waitExit(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI("raft", "recover", "--data-dir", filepath.Join(c.dir, s1.name), "--voter", voter)
	if err != nil {
		t.Fatalf("raft recover: %v\n%s", err, out)
	}
	for _, want := range []string{s2.name + "=" + s2.raft, "new configuration:  " + s1.name + "=" + s1.raft, "wrote:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("raft recover does not say %q:\n%s", want, out)
		}
	}
	c.tl.mark("raft recover:\n%s", out)
	s1.p.restart() // its usual command line
	lead, _ := c.waitLeader(60*time.Second, []*hServer{s1})
	c.waitHealthy(30*time.Second, s1)
	c.tl.mark("%s leads alone", lead.name)
	if f, _, err := s1.tenant("acme"); err != nil || f.Plan != "growth" {
		t.Fatalf("after recovery acme is on %q (%v); the survivor had it on growth, newer than the backup", f.Plan, err)
	}
	if code, body, err := call("GET", s1.url("/v1/plans/after-backup"), nil); err != nil || code != 200 {
		t.Fatalf("the plan created after the backup: %d %s %v", code, body, err)
	}
	if err := c.setPlan(30*time.Second, "acme", "scale", []*hServer{s1}); err != nil {
		t.Fatalf("the recovered server takes no writes: %v", err)
	}
	c.waitAgentsSettled(60*time.Second, a)
	c.waitAgree(30*time.Second, "the recovered server", tr, tenants, []*hServer{s1})
	noBackwards(t, before, usageOf(t, s1, tenants), "after recovery")

	// Back to three voters with new, empty servers.
	s4, s5 := c.addServer(), c.addServer()
	waitFor(t, 120*time.Second, "three voters again", func() error {
		ps, err := c.raftPeers(s1)
		if err != nil {
			return err
		}
		if v := voters(ps); !slices.Equal(v, []string{s1.name, s4.name, s5.name}) {
			return fmt.Errorf("voters %v", v)
		}
		return nil
	})
	c.tl.mark("%s and %s joined and are voters", s4.name, s5.name)
	openSome(6)
	closeSome(5)
	c.waitAgentsSettled(60*time.Second, a)
	grown := []*hServer{s1, s4, s5}
	c.waitHealthy(60*time.Second, grown...)
	c.waitAgree(60*time.Second, "three servers after recovery", tr, tenants, grown)
	if err := sameUsage(grown, tenants); err != nil {
		t.Error(err)
	}
	c.tl.summary()
}

// usageOf is each tenant's session-seconds as s shows them.
func usageOf(t *testing.T, s *hServer, tenants []string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, tn := range tenants {
		f, _, err := s.tenant(tn)
		if err != nil {
			t.Fatal(err)
		}
		out[tn] = f.seconds()
	}
	return out
}

// runExit runs the binary to its end (60 s at most) and returns its output
// and exit status.
func runExit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return string(out), ee.ExitCode()
	}
	t.Fatalf("headroom %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", 0
}

// wantCleanFailure checks a process that met damaged storage: exit status
// 1, one message naming the file and the word corrupt, no panic.
func wantCleanFailure(t *testing.T, what, out string, code int, file string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("%s: exit status %d, want 1\n%s", what, code, tail(out, 3000))
	}
	if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic:") {
		t.Fatalf("%s: a panic:\n%s", what, tail(out, 3000))
	}
	last := lastLines(out, 1)
	if !strings.Contains(last, file) || !strings.Contains(last, "corrupt") {
		t.Fatalf("%s: the last line does not name %s as corrupt:\n%s", what, file, tail(out, 3000))
	}
}

// damagePagesWith flips the first bytes of every 4 KiB page of file that
// holds pattern (every copy of that data, live or freed by bolt).
func damagePagesWith(t *testing.T, file string, pattern []byte) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	hit := false
	for off := 0; ; {
		i := bytes.Index(b[off:], pattern)
		if i < 0 {
			break
		}
		p := (off + i) / 4096 * 4096
		for j := p; j < p+64; j++ {
			b[j] ^= 0x5a
		}
		hit, off = true, p+4096
	}
	if !hit {
		t.Fatalf("%q not found in %s", pattern, file)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func flipAt(t *testing.T, file string, at func(size int) int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[at(len(b))] ^= 0xff
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v %s", from, to, err, out)
	}
}

// TestDamagedStorageStopsCleanly: an aggregator on a damaged Raft store
// (log pages, the stable store's page, truncation), with a damaged
// snapshot, and an agent with a damaged state file each stop at start with
// exit status 1 and one message naming the file, never a panic.
func TestDamagedStorageStopsCleanly(t *testing.T) {
	st := newStack(t)
	st.startAggregator()
	st.startAgent("--flush-interval", "50ms")
	for i := 0; i < 40; i++ {
		if code, body, err := call("PUT", "http://"+st.http+"/v1/tenants/damage-tenant-"+fmt.Sprint(i)+"/plan", map[string]string{"plan": "payg"}); err != nil || code != 200 {
			t.Fatalf("set-plan: %d %s %v", code, body, err)
		}
	}
	if out, err := runCLI("snapshot", "save", "--addr", st.http, filepath.Join(t.TempDir(), "b.snap")); err != nil {
		t.Fatalf("snapshot save (which also takes a Raft snapshot): %v\n%s", err, out)
	}
	tr := truth{"damage-session-1": {"damage-tenant-1", "audio"}}
	st.openAll(tr, []string{"damage-session-1"})
	waitFor(t, 30*time.Second, "the session counted", func() error { return st.agrees(tr, []string{"damage-tenant-1"}) })
	st.agent.signal(syscall.SIGTERM)
	st.agg.signal(syscall.SIGTERM)
	if err := st.agent.waitExit(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := st.agg.waitExit(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	aggDir, agentDir := filepath.Join(st.dir, "agg"), filepath.Join(st.dir, "agent")

	snapshotState := func(dir string) string {
		es, err := os.ReadDir(filepath.Join(dir, "raft", "snapshots"))
		if err != nil || len(es) == 0 {
			t.Fatalf("no snapshot in %s: %v", dir, err)
		}
		return filepath.Join(dir, "raft", "snapshots", es[len(es)-1].Name(), "state.bin")
	}
	for name, damage := range map[string]func(dir string) string{
		"raft store, log pages": func(dir string) string {
			f := filepath.Join(dir, "raft", "raft.db")
			damagePagesWith(t, f, []byte("damage-tenant-3"))
			return f
		},
		"stable store": func(dir string) string {
			f := filepath.Join(dir, "raft", "raft.db")
			damagePagesWith(t, f, []byte("CurrentTerm"))
			return f
		},
		"raft store truncated": func(dir string) string {
			f := filepath.Join(dir, "raft", "raft.db")
			fi, _ := os.Stat(f)
			os.Truncate(f, fi.Size()/2)
			return f
		},
		"snapshot flipped": func(dir string) string {
			f := snapshotState(dir)
			flipAt(t, f, func(n int) int { return n / 2 })
			return filepath.Dir(f)
		},
		"snapshot truncated": func(dir string) string {
			f := snapshotState(dir)
			fi, _ := os.Stat(f)
			os.Truncate(f, fi.Size()/2)
			return filepath.Dir(f)
		},
	} {
		dir := filepath.Join(t.TempDir(), "agg")
		copyTree(t, aggDir, dir)
		file := damage(dir)
		out, code := runExit(t, "aggregator", "--data-dir", dir, "--http-addr", freeAddr(t), "--wire-addr", freeAddr(t),
			"--raft-addr", st.raft, "--bootstrap")
		wantCleanFailure(t, name, out, code, file)
		t.Logf("%s: %s", name, lastLines(out, 1))
	}
	// The agent's state: its marker (agent.state), and its journal, whose
	// truncation after the clean shutdown (agent.clean) is damage, not a
	// crash's torn write.
	flip := func(f string) { flipAt(t, f, func(n int) int { return n / 2 }) }
	cut := func(f string) {
		fi, _ := os.Stat(f)
		os.Truncate(f, fi.Size()*2/3)
	}
	journal := func(dir string) string {
		m, _ := filepath.Glob(filepath.Join(dir, "agent.journal.*"))
		if len(m) != 1 {
			t.Fatalf("agent journals: %v", m)
		}
		return m[0]
	}
	marker := func(dir string) string { return filepath.Join(dir, "agent.state") }
	for name, tc := range map[string]struct {
		file   func(dir string) string
		damage func(f string)
	}{
		"agent state flipped":     {marker, flip},
		"agent state truncated":   {marker, cut},
		"agent journal flipped":   {journal, flip},
		"agent journal truncated": {journal, cut},
	} {
		dir := filepath.Join(t.TempDir(), "agent")
		copyTree(t, agentDir, dir)
		file := tc.file(dir)
		tc.damage(file)
		out, code := runExit(t, "agent", "--data-dir", dir, "--api-addr", freeAddr(t), "--server", st.wire)
		wantCleanFailure(t, name, out, code, file)
		t.Logf("%s: %s", name, lastLines(out, 1))
	}
	// The undamaged copies start: the damage, not the copying, was refused.
	st.agg.restart()
	waitFor(t, 30*time.Second, "the undamaged aggregator healthy again", func() error {
		if code, _, err := call("GET", "http://"+st.http+"/healthz", nil); err != nil || code != 200 {
			return fmt.Errorf("healthz %d %v", code, err)
		}
		return nil
	})
}

// TestBackupsAndInspect: --backup-interval writes backups the leader keeps
// --backup-retain of; `snapshot inspect` reads one offline and refuses a
// damaged one; `snapshot restore` refuses a damaged one, changing nothing,
// and restores a good one.
func TestBackupsAndInspect(t *testing.T) {
	st := newStack(t)
	backups := filepath.Join(t.TempDir(), "backups")
	st.agg = start(t, "aggregator", "aggregator", "--data-dir", filepath.Join(st.dir, "agg"),
		"--http-addr", st.http, "--wire-addr", st.wire, "--raft-addr", st.raft, "--bootstrap",
		"--backup-interval", "1s", "--backup-retain", "2", "--backup-dir", backups)
	if err := poll(30*time.Second, 100*time.Millisecond, func() error {
		code, body, err := call("PUT", "http://"+st.http+"/v1/tenants/backed-up/plan", map[string]string{"plan": "starter"})
		if err != nil || code != 200 {
			return fmt.Errorf("set-plan: %d %s %v", code, body, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var files []string
	waitFor(t, 60*time.Second, "four backups written, two kept", func() error {
		if k := strings.Count(st.agg.logText(), "backup written"); k < 4 {
			return fmt.Errorf("%d backups written", k)
		}
		var err error
		files, err = filepath.Glob(filepath.Join(backups, "headroom-*.snap"))
		if err != nil || len(files) != 2 {
			return fmt.Errorf("backup directory holds %v %v", files, err)
		}
		return nil
	})
	newest := files[len(files)-1]
	out, code := runExit(t, "snapshot", "inspect", "-o", "json", newest)
	var info struct {
		Index    uint64 `json:"index"`
		Term     uint64 `json:"term"`
		Checksum string `json:"checksum"`
		Tenants  []struct {
			Tenant, Plan string
		} `json:"tenants"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Index == 0 || info.Term == 0 || info.Checksum != "ok" ||
		len(info.Tenants) != 1 || info.Tenants[0].Tenant != "backed-up" || info.Tenants[0].Plan != "starter" {
		t.Fatalf("snapshot inspect %s: exit %d\n%s", newest, code, out)
	}
	damaged := filepath.Join(t.TempDir(), "damaged.snap")
	copyTree(t, newest, damaged)
	flipAt(t, damaged, func(n int) int { return n / 2 })
	out, code = runExit(t, "snapshot", "inspect", damaged)
	if code != 1 || !strings.Contains(out, "checksum mismatch") || !strings.Contains(out, damaged) {
		t.Fatalf("snapshot inspect of a damaged file: exit %d\n%s", code, out)
	}

	// A change after the backup; a damaged restore leaves it, a good one
	// takes the state back.
	if code, body, err := call("PUT", "http://"+st.http+"/v1/tenants/backed-up/plan", map[string]string{"plan": "growth", "at": "now"}); err != nil || code != 200 {
		t.Fatalf("set-plan: %d %s %v", code, body, err)
	}
	out, code = runExit(t, "snapshot", "restore", "--addr", st.http, damaged)
	if code != 1 || !strings.Contains(out, "refused, nothing changed") {
		t.Fatalf("restore of a damaged file: exit %d\n%s", code, out)
	}
	planNow := func() string {
		_, body, err := call("GET", "http://"+st.http+"/v1/tenants/backed-up", nil)
		var f tenantFig
		if err != nil || json.Unmarshal(body, &f) != nil {
			t.Fatalf("GET tenant: %v %s", err, body)
		}
		return f.Plan
	}
	if p := planNow(); p != "growth" {
		t.Fatalf("after a refused restore the tenant is on %s, want growth", p)
	}
	if out, code := runExit(t, "snapshot", "restore", "--addr", st.http, newest); code != 0 {
		t.Fatalf("restore of a good backup: exit %d\n%s", code, out)
	}
	if p := planNow(); p != "starter" {
		t.Fatalf("after restoring the backup the tenant is on %s, want starter", p)
	}
}
