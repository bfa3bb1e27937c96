package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// needRedis returns the redis-server program; without one the test is
// skipped, except in CI (CI=true), where it fails.
func needRedis(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is missing (.ci/run installs Debian's redis-server): %v", err)
		}
		t.Skipf("redis-server is missing (apt-get install redis-server); in CI this fails")
	}
	return p
}

// TestLimiterScript: the Redis baseline is the limiter it claims to be.
func TestLimiterScript(t *testing.T) {
	bin := needRedis(t)
	dir := t.TempDir()
	ps := &procs{}
	t.Cleanup(ps.stop)
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(addr, ":")
	c, err := ps.start(dir, "redis", bin, "--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	if err := waitFor(15*time.Second, "redis answers", c, func() error { return rdb.Ping(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	r := redisTarget{rdb, redis.NewScript(limiterLua), "k", 3}
	for i, want := range []bool{true, true, true, false, false} {
		got, err := r.Admit(ctx, "")
		if err != nil || got != want {
			t.Fatalf("admit %d: %v %v, want %v", i, got, err, want)
		}
	}
	if n, _ := rdb.Get(ctx, "k").Int(); n != 3 {
		t.Errorf("counter %d after refusals, want 3", n)
	}
	if err := r.Close(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Admit(ctx, ""); err != nil || !got {
		t.Errorf("admit after a close: %v %v", got, err)
	}
}

// TestCompareSmoke runs the whole harness briefly: every variant, the
// fleet and the correctness run (which fails the run if either limiter
// ever had more than 100 open at once as the clients counted).
func TestCompareSmoke(t *testing.T) {
	redisBin := needRedis(t)
	if testing.Short() {
		t.Skip("builds headroom and runs a cluster")
	}
	bin := filepath.Join(t.TempDir(), "headroom")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/headroom-rtc/headroom/cmd/headroom").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, config{bin: bin, redisServer: redisBin, seconds: 0.3, workers: []int{1, 4}, hold: time.Millisecond, seed: 7}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"A. Redis (EVALSHA limiter), in memory | 1 |", "appendfsync everysec | 4 |", "B. agent, local HTTP API | 4 |",
		"C. agent, in process (Go library) | 1 |", "fleet: 4 agents", "p99", "seed 7", "| Redis |", "| 4 agents over HTTP"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCPUTime(t *testing.T) {
	d, err := cpuTime(os.Getpid())
	if err != nil || d < 0 {
		t.Fatalf("own CPU time: %v %v", d, err)
	}
	if _, err := cpuTime(1 << 30); err == nil {
		t.Error("CPU time of a pid that does not exist: no error")
	}
}
