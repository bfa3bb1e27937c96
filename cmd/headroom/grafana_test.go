package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/aggregator"
)

// TestGrafanaDashboardMetricsExist checks that every metric the Grafana
// dashboard (deploy/grafana/headroom.json) queries is served by an
// aggregator's or an agent's /metrics.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "headroom.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	if len(exprs) < 20 {
		t.Fatalf("only %d queries found", len(exprs))
	}

	dir := t.TempDir()
	srv, err := aggregator.New(aggregator.Config{DataDir: filepath.Join(dir, "agg"), HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0",
		RaftAddr: freeAddr(t), Bootstrap: true, Logger: nullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := waitReady(context.Background(), srv.Ready, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A tenant on a plan with a class ceiling, for the tenant series.
	base := "http://" + srv.HTTPAddr()
	plan := map[string]any{"name": "capped", "ceiling": 10, "mode": "soft", "class_ceilings": []map[string]any{{"class": "audio", "ceiling": 5}}}
	if code, body, err := call("POST", base+"/v1/plans", plan); err != nil || code != 201 {
		t.Fatalf("create plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", base+"/v1/tenants/acme/plan", map[string]string{"plan": "capped"}); err != nil || code != 200 {
		t.Fatalf("set plan: %d %s %v", code, body, err)
	}
	_, aggText, err := call("GET", "http://"+srv.HTTPAddr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.WireAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	served := map[string]bool{}
	for _, text := range []string{string(aggText), rec.Body.String()} {
		for _, line := range strings.Split(text, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
				served[f[2]] = true
				if len(f) == 4 && f[3] == "histogram" {
					served[f[2]+"_bucket"], served[f[2]+"_count"], served[f[2]+"_sum"] = true, true, true
				}
			}
		}
	}
	name := regexp.MustCompile(`\b(headroom_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)`)
	for _, e := range exprs {
		for _, m := range name.FindAllString(e, -1) {
			if !served[m] {
				t.Errorf("the dashboard queries %s, which no /metrics serves (in %s)", m, e)
			}
		}
	}
}
