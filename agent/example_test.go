package agent_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/agenttest"
	"github.com/headroom-rtc/headroom/wire"
)

// A media server written in Go (pion, a LiveKit fork, ion-sfu) embeds the
// agent instead of calling its HTTP API: New loads (or creates) the agent's
// state, Run ships to the aggregators, and the media server calls Open when
// a user asks to join, Keepalive while a session with a TTL lives, Close
// when it ends, and Reconcile with its full list of live sessions after a
// restart. Here a stand-in of the aggregator cluster (agenttest) plays the
// cluster's part and pushes one plan: tenant acme, soft, ceiling 2.
func Example() {
	cluster, err := agenttest.NewServer(wire.TenantInfo{Tenant: "acme", Plan: "duo", Mode: "soft", Ceiling: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cluster.Close()
	dir, _ := os.MkdirTemp("", "agent-example")
	defer os.RemoveAll(dir)

	a, err := agent.New(agent.Config{DataDir: dir, Servers: []string{cluster.Addr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { stop(); <-done }()

	// Before the cluster's plans arrive, every tenant is unknown.
	agenttest.WaitFor(10*time.Second, func() bool { return a.Status().TenantsKnown == 1 })

	for _, call := range []string{"call-1", "call-2", "call-3"} {
		res, err := a.Open("acme", "video-hd", call, 0)
		fmt.Println("open", call, res.Admitted, res.Reason, err)
	}
	fmt.Println("keepalive call-1:", a.Keepalive("call-1"))
	if _, err := a.Close("call-2"); err != nil {
		fmt.Println(err)
	}
	_, err = a.Close("call-2")
	fmt.Println("close call-2 again:", err)

	// The media server restarted and lists what really runs: call-1 is
	// gone, call-4 runs (counted without an admission decision).
	opened, closed, err := a.Reconcile([]agent.SessionSpec{{Tenant: "acme", Class: "audio", Session: "call-4"}})
	fmt.Println("reconcile opened", opened, "closed", closed, err)

	// What the cluster was shipped: call-4 open.
	agenttest.WaitFor(10*time.Second, func() bool { return cluster.Open("acme") == 1 })
	fmt.Println("open at the cluster:", cluster.Open("acme"))
	// Output:
	// open call-1 true  <nil>
	// open call-2 true  <nil>
	// open call-3 false ceiling <nil>
	// keepalive call-1: <nil>
	// close call-2 again: unknown session
	// reconcile opened [call-4] closed [call-1] <nil>
	// open at the cluster: 1
}
