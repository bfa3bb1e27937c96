package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"
)

// TestActiveUsersThroughFailures: 999 users with sessions on two agents of a
// three-server cluster (the same users on both agents, some more than
// once); one agent is killed with -9 while sessions keep coming and is
// restarted and reconciled, the leader is killed with -9. Every server
// counts the tenant's monthly and daily active users exactly: never fewer
// than there were (the users of batches not yet acknowledged are persisted
// with them), never more.
func TestActiveUsersThroughFailures(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.waitLeader(60*time.Second, c.servers)
	c.waitHealthy(30*time.Second, c.servers...)
	c.setPlans([]string{"im"}, "scale") // ceiling 10,000: the test holds more than payg's 1,000 open
	a := c.addAgent("mau-a", nil, c.wires(c.servers))
	b := c.addAgent("mau-b", nil, c.wires(c.servers))

	type sess struct {
		agent *hAgent
		user  string
	}
	open := map[string]sess{} // the media servers' truth: session → where and whose
	users := map[string]bool{}
	n := 0
	openOn := func(ag *hAgent, user string) {
		n++
		id := fmt.Sprintf("s-%04d", n)
		code, body, _, err := callWith(ag.client, "POST", ag.url("/v1/sessions"), map[string]string{"tenant": "im", "class": "audio", "session": id, "user": user})
		if err != nil || (code != 201 && code != 200) {
			waitFor(t, 30*time.Second, "open "+id, func() error {
				code, body, _, err = callWith(ag.client, "POST", ag.url("/v1/sessions"), map[string]string{"tenant": "im", "class": "audio", "session": id, "user": user})
				if err == nil && code != 201 && code != 200 {
					err = fmt.Errorf("%d %s", code, body)
				}
				return err
			})
		}
		open[id] = sess{ag, user}
		users[user] = true
	}
	for i := 0; i < 600; i++ {
		user := fmt.Sprintf("user-%03d", i)
		openOn([]*hAgent{a, b}[i%2], user)
		if i%5 == 0 {
			openOn([]*hAgent{a, b}[(i+1)%2], user) // on the other agent too
		}
	}
	// Agent a dies with -9 while it still takes sessions; its media server
	// keeps them and reconciles them back after the restart.
	for i := 600; i < 800; i++ {
		openOn(a, fmt.Sprintf("user-%03d", i))
	}
	a.p.kill()
	a.p.restart()
	waitFor(t, 30*time.Second, "mau-a back", func() error { _, err := a.status(); return err })
	// reconcile gives an agent its media server's list (the sessions lost
	// with its last flush interval come back, with their users).
	reconcile := func(ag *hAgent) {
		var list []map[string]string
		for id, s := range open {
			if s.agent == ag {
				list = append(list, map[string]string{"tenant": "im", "class": "audio", "session": id, "user": s.user})
			}
		}
		sort.Slice(list, func(i, j int) bool { return list[i]["session"] < list[j]["session"] })
		if code, body, _, err := callWith(ag.client, "PUT", ag.url("/v1/sessions"), map[string]any{"sessions": list}); err != nil || code != 200 {
			t.Fatalf("reconcile of %s: %d %s %v", ag.name, code, body, err)
		}
	}
	reconcile(a)
	// The leader dies with -9 while sessions keep coming on b, which cannot
	// ship them until a new leader is elected, and b dies with -9 too: the
	// users it had not cut into a batch are in its state file.
	lead, _ := c.waitLeader(30*time.Second, c.servers)
	lead.p.kill()
	for i := 800; i < 999; i++ {
		openOn(b, fmt.Sprintf("user-%03d", i))
	}
	b.p.kill()
	b.p.restart()
	waitFor(t, 30*time.Second, "mau-b back", func() error { _, err := b.status(); return err })
	reconcile(a)
	reconcile(b)
	lead.p.restart()
	want := uint64(len(users))
	if want != 999 {
		t.Fatalf("test set-up: %d users", want)
	}
	waitFor(t, 60*time.Second, "every server counting 999 active users", func() error {
		for _, s := range c.servers {
			var f struct {
				Usage struct {
					MAU     uint64 `json:"mau"`
					DAU     uint64 `json:"dau"`
					PeakDAU uint64 `json:"peak_dau"`
				} `json:"usage"`
			}
			_, body, _, err := callWith(s.client, "GET", s.url("/v1/tenants/im"), nil)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(body, &f); err != nil {
				return err
			}
			if u := f.Usage; u.MAU != want || u.PeakDAU != want || u.DAU != want {
				return fmt.Errorf("%s: MAU %d, DAU %d, peak DAU %d; want %d", s.name, u.MAU, u.DAU, u.PeakDAU, want)
			}
		}
		return nil
	})
}
