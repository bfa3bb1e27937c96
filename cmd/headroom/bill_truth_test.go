package main

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"
)

// Bills equal the truth through an agent's crash: the aggregator and the
// agent as processes, sessions open on the agent's media server (the test)
// while the agent is killed with -9 and restarted; what is billed equals
// what the closes answered, and the test's own clock.

// timedSession is one session as the test saw it: its open between
// openFrom and openTo, its close between closeFrom and closeTo.
type timedSession struct {
	id                                   string
	openFrom, openTo, closeFrom, closeTo time.Time
	duration                             float64 // what the close answered
}

func TestBillsThroughAgentCrash(t *testing.T) {
	for _, omit := range []int{0, 2} {
		t.Run(fmt.Sprintf("reconcile omits %d", omit), func(t *testing.T) { billsThroughCrash(t, omit) })
	}
}

func billsThroughCrash(t *testing.T, omit int) {
	const class = "video-fhd"
	s := newStack(t)
	s.startAggregator()
	s.startAgent()
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/acme/plan", map[string]string{"plan": "payg"}); err != nil || code != 200 {
		t.Fatalf("set plan: %d %s %v", code, body, err)
	}
	sessions := make([]*timedSession, 5)
	for i := range sessions {
		ts := &timedSession{id: fmt.Sprintf("f%d", i)}
		waitFor(t, 20*time.Second, "open "+ts.id, func() error {
			ts.openFrom = time.Now()
			code, body, err := call("POST", "http://"+s.api+"/v1/sessions", map[string]string{"tenant": "acme", "class": class, "session": ts.id})
			ts.openTo = time.Now()
			if err == nil && code != 201 {
				err = fmt.Errorf("%d %s", code, body)
			}
			return err
		})
		sessions[i] = ts
	}
	time.Sleep(2 * time.Second) // the sessions run: time that must be billed
	killedAt := time.Now()
	s.agent.kill()
	time.Sleep(3 * time.Second) // the agent is down; the media server keeps its sessions
	s.startAgent()
	if omit > 0 {
		// The media server's list after the restart lacks two sessions:
		// they may have ended while the agent was down.
		var list []map[string]string
		for _, ts := range sessions[omit:] {
			list = append(list, map[string]string{"tenant": "acme", "class": class, "session": ts.id})
		}
		code, body, err := call("PUT", "http://"+s.api+"/v1/sessions", map[string]any{"sessions": list})
		if err != nil || code != 200 {
			t.Fatalf("reconcile: %d %s %v", code, body, err)
		}
	}
	time.Sleep(time.Second)
	var answered float64
	for _, ts := range sessions[omit:] {
		ts.closeFrom = time.Now()
		code, body, err := call("DELETE", "http://"+s.api+"/v1/sessions/"+ts.id, nil)
		ts.closeTo = time.Now()
		if err != nil || code != 200 {
			t.Fatalf("close %s after the restart: %d %s %v", ts.id, code, body, err)
		}
		var r struct {
			Duration float64 `json:"duration_seconds"`
		}
		json.Unmarshal(body, &r)
		ts.duration = r.Duration
		answered += r.Duration
		// The test's own clock brackets what the agent measured, within
		// the flush interval (100 ms).
		lo, hi := ts.closeFrom.Sub(ts.openTo).Seconds(), ts.closeTo.Sub(ts.openFrom).Seconds()
		if ts.duration < lo-0.1 || ts.duration > hi+0.1 {
			t.Errorf("%s: the close answered %.3f s; the test's clock says between %.3f and %.3f s", ts.id, ts.duration, lo, hi)
		}
	}
	// The omitted sessions are billed up to the agent's last persist, at
	// most one flush interval before its kill.
	var omittedLo, omittedHi float64
	for _, ts := range sessions[:omit] {
		omittedLo += killedAt.Sub(ts.openTo).Seconds() - 0.1
		omittedHi += killedAt.Sub(ts.openFrom).Seconds()
	}
	billed := func() float64 {
		var f tenantFig
		if err := getJSONInto("http://"+s.http+"/v1/tenants/acme", &f); err != nil || f.Usage == nil {
			return math.NaN()
		}
		return f.Usage.SecondsByClass[class]
	}
	perSession := 0.2 * float64(len(sessions))
	waitFor(t, 20*time.Second, "the bill settled", func() error {
		b := billed()
		if want := answered + omittedLo; !(b >= want-perSession) {
			return fmt.Errorf("billed %.3f s, the closes answered %.3f s, omitted sessions at least %.3f s", b, answered, omittedLo)
		}
		return nil
	})
	b := billed()
	if hi := answered + omittedHi + perSession; b > hi {
		t.Fatalf("billed %.3f s: more than the closes' %.3f s and the omitted sessions' %.3f s up to the kill", b, answered, omittedHi)
	}
	t.Logf("billed %.3f s; closes answered %.3f s; %d omitted sessions billed %.3f–%.3f s up to the last persist", b, answered, omit, omittedLo, omittedHi)
}
