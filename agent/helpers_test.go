package agent

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// fakeClock is a manual clock for Config.clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// newTestAgent returns an agent with a manual clock (clk, or a new one if
// nil), on a fresh directory unless cfg.DataDir is set.
func newTestAgentClock(t testing.TB, cfg Config, clk *fakeClock) (*Agent, *fakeClock) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{"127.0.0.1:1"}
	}
	if clk == nil {
		clk = newFakeClock()
	}
	cfg.clock = clk.now
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.waitCompaction) // no write into the removed directory
	return a, clk
}

func newTestAgent(t testing.TB, cfg Config) (*Agent, *fakeClock) {
	t.Helper()
	return newTestAgentClock(t, cfg, nil)
}

// soft returns a soft-mode tenant info.
func soft(tenant string, ceiling, conc uint64) wire.TenantInfo {
	return wire.TenantInfo{Tenant: tenant, Plan: "p", Ceiling: ceiling, Mode: "soft", Concurrency: conc}
}

func meter(tenant string) wire.TenantInfo {
	return wire.TenantInfo{Tenant: tenant, Plan: "payg", Mode: "meter"}
}

// pushTenants applies a (partial) TenantState as if received from a server.
func pushTenants(t testing.TB, a *Agent, full bool, infos ...wire.TenantInfo) {
	t.Helper()
	if err := a.onTenantState(&wire.TenantState{Full: full, Tenants: infos}); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// sumEntries adds up the entries of batches per tenant/class.
type usageKey struct{ tenant, class string }

func sumEntries(batches []*wire.DeltaBatch) map[usageKey]wire.DeltaEntry {
	out := map[usageKey]wire.DeltaEntry{}
	for _, b := range batches {
		for _, e := range b.Entries {
			k := usageKey{e.Tenant, e.Class}
			s := out[k]
			s.Tenant, s.Class = e.Tenant, e.Class
			s.Opened += e.Opened
			s.Closed += e.Closed
			s.SessionMicros += e.SessionMicros
			s.ClosedMinutes += e.ClosedMinutes
			s.Refused += e.Refused
			s.Peak = max(s.Peak, e.Peak)
			out[k] = s
		}
	}
	return out
}
