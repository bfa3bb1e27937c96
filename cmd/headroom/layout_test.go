package main

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the package graph of DESIGN.md: each
// package may import only the headroom packages listed for it.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/headroom-rtc/headroom/"
	allowed := map[string][]string{
		"wire":                 {},
		"plans":                {},
		"internal/jsonhttp":    {},
		"internal/tlsconf":     {},
		"internal/atomicfile":  {},
		"internal/exporttest":  {},
		"internal/loadgen":     {},
		"cluster":              {"wire"},
		"internal/loop":        {},
		"internal/metricstest": {},
		"aggregator":           {"wire", "plans", "cluster", "internal/jsonhttp", "internal/atomicfile", "internal/loop", "aggregator/fsm", "aggregator/stream", "aggregator/api", "aggregator/web"},
		// The state machine is pure: the rest of the aggregator wraps it
		// (aggregator/deps_test.go holds the finer rules).
		"aggregator/fsm":    {"wire", "plans"},
		"aggregator/stream": {"wire", "plans", "internal/loop", "aggregator/fsm"},
		"aggregator/api":    {"wire", "plans", "cluster", "internal/jsonhttp", "internal/loop", "aggregator/fsm", "aggregator/web"},
		"aggregator/web":    {"internal/jsonhttp"},
		"agent":             {"wire", "plans", "internal/jsonhttp"},
		// Connectors and the stand-in server build on the agent, never the
		// other way round.
		"agent/agenttest":                   {"agent", "wire", "plans", "internal/jsonhttp"},
		"agent/connect":                     {"agent", "wire", "plans", "internal/jsonhttp"},
		"agent/connect/nginxrtmp":           {"agent", "agent/connect", "wire", "plans", "internal/jsonhttp"},
		"agent/connect/livekit":             {"agent", "agent/connect", "wire", "plans", "internal/jsonhttp"},
		"agent/connect/livekit/livekittest": {},
		// The side-by-side harness drives the agent as a library and over
		// its API; nothing imports it.
		"bench/compare": {"agent", "wire", "plans", "internal/jsonhttp", "internal/loadgen"},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		var bad []string
		for _, dep := range strings.Fields(string(out)) {
			if !strings.HasPrefix(dep, mod) {
				continue
			}
			name := strings.TrimPrefix(dep, mod)
			if name == pkg {
				continue
			}
			found := false
			for _, a := range ok {
				found = found || a == name
			}
			if !found {
				bad = append(bad, name)
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("%s imports %v; it may import only %v", pkg, bad, ok)
		}
	}
}
