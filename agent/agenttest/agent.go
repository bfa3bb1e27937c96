package agenttest

import (
	"context"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/wire"
)

// StartAgent starts a stand-in cluster holding tenants and a real agent
// streaming to it (10 ms flushes, a data directory of t's), and returns
// once the agent is connected and knows every tenant; both stop when t
// ends.
func StartAgent(t testing.TB, tenants ...wire.TenantInfo) (*agent.Agent, *Server) {
	t.Helper()
	cluster, err := NewServer(tenants...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	a, err := agent.New(agent.Config{DataDir: t.TempDir(), Servers: []string{cluster.Addr()}, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := WaitFor(10*time.Second, func() bool { st := a.Status(); return st.TenantsKnown == len(tenants) && st.Connected }); err != nil {
		t.Fatal("the agent did not get the plans")
	}
	return a, cluster
}
