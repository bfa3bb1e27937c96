package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The end-to-end tests of a single aggregator and agent; the helpers they
// share with the cluster tests are in harness_test.go.

type stack struct {
	t                     testing.TB
	dir                   string
	http, wire, raft, api string
	agg, agent            *proc
}

func newStack(t testing.TB) *stack {
	s := &stack{t: t, dir: t.TempDir(), http: freeAddr(t), wire: freeAddr(t), raft: freeAddr(t), api: freeAddr(t)}
	return s
}

func (s *stack) startAggregator(extra ...string) {
	s.agg = start(s.t, "aggregator", append([]string{"aggregator", "--data-dir", filepath.Join(s.dir, "agg"),
		"--http-addr", s.http, "--wire-addr", s.wire, "--raft-addr", s.raft, "--bootstrap", "--log-level", "debug"}, extra...)...)
	waitFor(s.t, 30*time.Second, "aggregator healthy", func() error {
		code, body, err := call("GET", "http://"+s.http+"/healthz", nil)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("healthz %d %s", code, body)
		}
		return nil
	})
}

func (s *stack) startAgent(extra ...string) {
	args := append([]string{"agent", "--data-dir", filepath.Join(s.dir, "agent"), "--api-addr", s.api, "--server", s.wire, "--log-level", "debug"}, extra...)
	s.agent = start(s.t, "agent", args...)
	waitFor(s.t, 30*time.Second, "agent API up", func() error {
		_, _, err := call("GET", "http://"+s.api+"/v1/status", nil)
		return err
	})
}

// agrees checks the aggregator's per-tenant totals against the truth.
func (s *stack) agrees(tr truth, tenants []string) error {
	want := tr.counts()
	for _, tn := range tenants {
		code, body, err := call("GET", "http://"+s.http+"/v1/tenants/"+tn, nil)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("tenant %s: HTTP %d", tn, code)
		}
		var f tenantFig
		if err := json.Unmarshal(body, &f); err != nil {
			return err
		}
		if f.Concurrency.Total != want[tn] {
			return fmt.Errorf("tenant %s: aggregator says %d open, truth is %d", tn, f.Concurrency.Total, want[tn])
		}
	}
	return nil
}

// usage returns the session-seconds of every tenant, all classes together.
func (s *stack) usage(tenants []string) map[string]float64 {
	s.t.Helper()
	out := map[string]float64{}
	for _, tn := range tenants {
		_, body, err := call("GET", "http://"+s.http+"/v1/tenants/"+tn, nil)
		if err != nil {
			s.t.Fatal(err)
		}
		var f tenantFig
		json.Unmarshal(body, &f)
		if f.Usage != nil {
			for _, v := range f.Usage.SecondsByClass {
				out[tn] += v
			}
		}
	}
	return out
}

// openAll opens sessions concurrently, retrying 429 while the agent has not
// yet been told of the tenants.
func (s *stack) openAll(tr truth, ids []string) {
	s.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		tc := tr[id]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			deadline := time.Now().Add(20 * time.Second)
			for {
				code, body, err := call("POST", "http://"+s.api+"/v1/sessions", map[string]string{"tenant": tc[0], "class": tc[1], "session": id})
				if err == nil && (code == 201 || code == 200) {
					return
				}
				if time.Now().After(deadline) || (err == nil && code != 429) {
					errs <- fmt.Errorf("open %s: %d %s %v", id, code, body, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatal(err)
	}
}

func TestEndToEndCountsSurviveKills(t *testing.T) {
	s := newStack(t)
	s.startAggregator()
	s.startAgent()
	classes := []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}
	var tenants []string
	for i := 0; i < 10; i++ {
		tn := fmt.Sprintf("tenant-%02d", i)
		tenants = append(tenants, tn)
		if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/"+tn+"/plan", map[string]string{"plan": "payg"}); err != nil || code != 200 {
			t.Fatalf("set plan: %d %s %v", code, body, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tr := truth{}
	var ids []string
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("s-%04d", i)
		tr[id] = [2]string{tenants[i%10], classes[rng.IntN(len(classes))]}
		ids = append(ids, id)
	}
	s.openAll(tr, ids)
	// Close 300 of them in random order.
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for _, id := range ids[:300] {
		code, body, err := call("DELETE", "http://"+s.api+"/v1/sessions/"+id, nil)
		if err != nil || code != 200 {
			t.Fatalf("close %s: %d %s %v", id, code, body, err)
		}
		delete(tr, id)
	}
	waitFor(t, 20*time.Second, "aggregator equals the truth", func() error { return s.agrees(tr, tenants) })
	u0 := s.usage(tenants)

	// kill -9 the aggregator and restart it with the same command line.
	s.agg.kill()
	s.startAggregator()
	waitFor(t, 30*time.Second, "after aggregator kill -9", func() error { return s.agrees(tr, tenants) })
	u1 := s.usage(tenants)
	noBackwards(t, u0, u1, "aggregator restart")

	// kill -9 the agent and restart it: nothing counted twice.
	s.agent.kill()
	s.startAgent()
	waitFor(t, 30*time.Second, "agent reconnected", func() error {
		_, body, err := call("GET", "http://"+s.api+"/v1/status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Connected bool `json:"connected"`
			Unacked   int  `json:"unacked_batches"`
		}
		json.Unmarshal(body, &st)
		if !st.Connected || st.Unacked != 0 {
			return fmt.Errorf("status %s", body)
		}
		return nil
	})
	if err := s.agrees(tr, tenants); err != nil {
		t.Fatalf("after agent kill -9: %v", err)
	}
	// Sessions the restarted agent remembers can still be closed there.
	for _, id := range ids[300:350] {
		if code, body, _ := call("DELETE", "http://"+s.api+"/v1/sessions/"+id, nil); code != 200 {
			t.Fatalf("close %s after the agent's restart: %d %s", id, code, body)
		}
		delete(tr, id)
	}
	waitFor(t, 20*time.Second, "closes after agent restart", func() error { return s.agrees(tr, tenants) })
	u2 := s.usage(tenants)
	noBackwards(t, u1, u2, "agent restart")

	// An agent killed inside its flush interval loses at most that interval;
	// the media server's reconcile restores the exact truth.
	s.agent.kill()
	s.startAgent("--flush-interval", "2s")
	var fresh []string
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("late-%02d", i)
		tr[id] = [2]string{tenants[i%10], "audio"}
		fresh = append(fresh, id)
	}
	s.openAll(tr, fresh)
	for _, id := range ids[350:370] {
		call("DELETE", "http://"+s.api+"/v1/sessions/"+id, nil)
		delete(tr, id)
	}
	s.agent.kill() // well inside the 2 s interval
	s.startAgent()
	var list []map[string]string
	for id, tc := range tr {
		list = append(list, map[string]string{"tenant": tc[0], "class": tc[1], "session": id})
	}
	sort.Slice(list, func(i, j int) bool { return list[i]["session"] < list[j]["session"] })
	code, body, err := call("PUT", "http://"+s.api+"/v1/sessions", map[string]any{"sessions": list})
	if err != nil || code != 200 {
		t.Fatalf("reconcile: %d %s %v", code, body, err)
	}
	waitFor(t, 20*time.Second, "after reconcile", func() error { return s.agrees(tr, tenants) })
	noBackwards(t, u2, s.usage(tenants), "reconcile")
}

func TestEndToEndBadInput(t *testing.T) {
	s := newStack(t)
	s.startAggregator()
	s.startAgent()
	agentURL := "http://" + s.api
	aggURL := "http://" + s.http
	if code, _, _ := call("PUT", aggURL+"/v1/tenants/t1/plan", map[string]string{"plan": "payg"}); code != 200 {
		t.Fatalf("set plan: %d", code)
	}
	cases := []struct {
		name, method, url string
		body              any
		want              int
	}{
		{"malformed JSON", "POST", agentURL + "/v1/sessions", `{"tenant":`, 400},
		{"unknown class", "POST", agentURL + "/v1/sessions", map[string]string{"tenant": "t1", "class": "laser", "session": "x"}, 400},
		{"empty session id", "POST", agentURL + "/v1/sessions", map[string]string{"tenant": "t1", "class": "audio", "session": ""}, 400},
		{"over-long session id", "POST", agentURL + "/v1/sessions", map[string]string{"tenant": "t1", "class": "audio", "session": strings.Repeat("x", 500)}, 400},
		{"empty tenant", "POST", agentURL + "/v1/sessions", map[string]string{"tenant": "", "class": "audio", "session": "x"}, 400},
		{"unknown tenant", "POST", agentURL + "/v1/sessions", map[string]string{"tenant": "nobody", "class": "audio", "session": "x"}, 429},
		{"close unknown session", "DELETE", agentURL + "/v1/sessions/nosuch", nil, 404},
		{"keepalive unknown session", "POST", agentURL + "/v1/sessions/nosuch/keepalive", nil, 404},
		{"reconcile with a bad entry", "PUT", agentURL + "/v1/sessions", `{"sessions":[{"tenant":"t1","class":"laser","session":"a"}]}`, 400},
		{"unknown plan", "PUT", aggURL + "/v1/tenants/t1/plan", map[string]string{"plan": "platinum"}, 400},
		{"plan body not JSON", "PUT", aggURL + "/v1/tenants/t1/plan", `plan=growth`, 400},
		{"unknown tenant read", "GET", aggURL + "/v1/tenants/nobody", nil, 404},
		{"bad period", "GET", aggURL + "/v1/tenants/t1?period=last-month", nil, 400},
	}
	for _, tc := range cases {
		code, body, err := call(tc.method, tc.url, tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if code != tc.want {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, code, body, tc.want)
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("%s: body %q is not JSON", tc.name, body)
		} else if _, ok := e["error"]; !ok && code != 429 {
			t.Errorf("%s: body %s has no error field", tc.name, body)
		} else if code == 429 && e["reason"] != "unknown-tenant" {
			t.Errorf("%s: refusal %s, want reason unknown-tenant", tc.name, body)
		}
	}
	// The same session id with another class is a conflict.
	waitFor(t, 20*time.Second, "first admission", func() error {
		code, body, err := call("POST", agentURL+"/v1/sessions", map[string]string{"tenant": "t1", "class": "audio", "session": "dup"})
		if err != nil || code != 201 {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		return nil
	})
	if code, _, _ := call("POST", agentURL+"/v1/sessions", map[string]string{"tenant": "t1", "class": "audio", "session": "dup"}); code != 200 {
		t.Errorf("retried open: %d, want 200", code)
	}
	if code, _, _ := call("POST", agentURL+"/v1/sessions", map[string]string{"tenant": "t1", "class": "video-hd", "session": "dup"}); code != 409 {
		t.Errorf("same id, other class: %d, want 409", code)
	}

	// Garbage and an oversized frame on the wire port close that connection
	// only; the agent's own stream keeps counting.
	for _, payload := range [][]byte{
		[]byte("garbage\x00\x01\x02\xff\xff\xff\xff"),
		binary.BigEndian.AppendUint32(nil, 1<<30),
		append(binary.BigEndian.AppendUint32(nil, 14), 0x92, 0x03, 0xdd, 0x02, 0xfa, 0xf0, 0x80, 0, 0, 0, 0, 0, 0, 0),
	} {
		c, err := net.Dial("tcp", s.wire)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(payload)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c) // returns once the server closes the connection
		c.Close()
	}
	if code, body, _ := call("GET", aggURL+"/healthz", nil); code != 200 {
		t.Fatalf("aggregator unhealthy after garbage: %d %s", code, body)
	}
	if code, body, _ := call("POST", agentURL+"/v1/sessions", map[string]string{"tenant": "t1", "class": "audio", "session": "after"}); code != 201 {
		t.Fatalf("admission after garbage: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "agent still shipping", func() error {
		return s.agrees(truth{"dup": {"t1", "audio"}, "after": {"t1", "audio"}}, []string{"t1"})
	})
}

func TestCLIFlagsBeforeAndAfterSubcommand(t *testing.T) {
	s := newStack(t)
	s.startAggregator()
	run := func(args ...string) (string, error) {
		out, err := exec.Command(binPath, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("--addr", s.http, "tenant", "set-plan", "acme", "growth"); err != nil || !strings.Contains(out, "acme is now on growth") {
		t.Fatalf("set-plan: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"--addr", s.http, "-o", "json", "tenant", "list"},
		{"tenant", "list", "--addr", s.http, "-o", "json"},
		{"-o", "table", "tenant", "list", "--addr", s.http, "-o", "json"}, // the leaf's own value wins
	} {
		out, err := run(args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		var ts []tenantFig
		if err := json.Unmarshal([]byte(out), &ts); err != nil || len(ts) != 1 || ts[0].Tenant != "acme" {
			t.Fatalf("%v: want a JSON list with acme, got %v\n%s", args, err, out)
		}
	}
	t.Setenv("HEADROOM_ADDR", s.http)
	if out, err := run("plan", "list"); err != nil || !strings.Contains(out, "starter") {
		t.Fatalf("plan list through HEADROOM_ADDR: %v\n%s", err, out)
	}
	// A flag after the positional arguments is an error, never ignored.
	out, err := run("tenant", "set-plan", "acme", "starter", "--addr", "127.0.0.1:1")
	if err == nil || !strings.Contains(out, "put flags before arguments") {
		t.Fatalf("flag after arguments: %v\n%s", err, out)
	}
	if out, err := run("tenant", "show", "acme", "extra"); err == nil || !strings.Contains(out, "want 1 argument") {
		t.Fatalf("extra argument: %v\n%s", err, out)
	}
	if out, err := run("-o", "yaml", "tenant", "list"); err == nil || !strings.Contains(out, "want table or json") {
		t.Fatalf("bad -o: %v\n%s", err, out)
	}
}
