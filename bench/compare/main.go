// Command compare is `make bench-compare`: a Redis concurrency limiter and
// headroom's agent side by side, in one run on one machine.
//
// It starts its own redis-server on loopback twice (in memory: --save ""
// --appendonly no; durable: --appendonly yes --appendfsync everysec), an
// aggregator and four agents as processes of the headroom binary, and one
// agent in its own process (the Go library). One operation is admit + close
// of one session; each variant runs with N = 1, 16 and 64 workers:
//
//	A. Redis: go-redis, EVALSHA of the standard limiter (INCR, compare with
//	   the ceiling, DECR on refusal; DECR on close);
//	B. the agent's local HTTP API over keep-alive connections, with a
//	   synchronous HTTP/1.1 client (request and answer on the worker's
//	   goroutine, as go-redis does) and with Go's net/http client;
//	C. the agent in process.
//
// Then the fleet (four agents at once, 16 workers each, against one Redis
// with 64) and the correctness run (ceiling 100, 64 workers holding
// sessions; the most open at once as the clients count them must never pass
// 100). The table goes to standard output as Markdown; progress to standard
// error. It exits non-zero when a ceiling was passed or anything failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/internal/loadgen"
)

// limiterLua is the standard Redis concurrency limiter: count the session
// in, and take it back out when that passes the ceiling.
const limiterLua = `local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1`

const (
	benchTenant   = "bench"
	benchCeiling  = 1_000_000
	ceilingTenant = "c100"
	ceiling       = 100
	fleetAgents   = 4
	// perWorker sessions held by each worker of the correctness run: 64
	// workers want 256 at once, well past the ceiling.
	perWorker = 4
)

type config struct {
	bin, redisServer string
	seconds          float64
	workers          []int
	hold             time.Duration
	seed             uint64
	keep             bool
	correctnessOnly  bool
}

func main() {
	var cfg config
	var workers string
	secDefault := 5.0
	if s := os.Getenv("BENCH_SECONDS"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "bench-compare: BENCH_SECONDS=%q: want a positive number of seconds\n", s)
			os.Exit(2)
		}
		secDefault = v
	}
	flag.StringVar(&cfg.bin, "bin", "", "the headroom binary (default: built from ./cmd/headroom into a temporary directory)")
	flag.StringVar(&cfg.redisServer, "redis-server", "redis-server", "the redis-server program")
	flag.Float64Var(&cfg.seconds, "seconds", secDefault, "seconds per measured run (env BENCH_SECONDS)")
	flag.StringVar(&workers, "workers", "1,16,64", "comma-separated numbers of concurrent workers")
	flag.DurationVar(&cfg.hold, "hold", 2*time.Millisecond, "mean time a session is held in the correctness run")
	flag.Uint64Var(&cfg.seed, "seed", 0, "seed of the correctness run's hold times (0: random, printed)")
	flag.BoolVar(&cfg.correctnessOnly, "correctness-only", false, "run only the correctness part (ceiling 100)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (logs, data) and print its path")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench-compare: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if cfg.seconds <= 0 {
		fmt.Fprintln(os.Stderr, "bench-compare: -seconds must be positive")
		os.Exit(2)
	}
	for _, w := range strings.Split(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 || n > 4096 {
			fmt.Fprintf(os.Stderr, "bench-compare: -workers %q: want numbers from 1 to 4096\n", workers)
			os.Exit(2)
		}
		cfg.workers = append(cfg.workers, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare: FAIL:", err)
		os.Exit(1)
	}
}

// row is one line of the table.
type row struct {
	variant string
	n       int
	res     loadgen.Result
	cpu     time.Duration // the server's CPU over the run
	aggCPU  time.Duration // the aggregator's, for headroom's rows
	hasAgg  bool
	note    string
}

func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "headroom-bench-compare-")
	if err != nil {
		return err
	}
	ps := &procs{}
	defer func() {
		ps.stop()
		if cfg.keep {
			fmt.Fprintln(os.Stderr, "bench-compare: kept", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench-compare: "+format+"\n", args...) }
	load0 := loadAvg()

	redisPath, err := exec.LookPath(cfg.redisServer)
	if err != nil {
		return fmt.Errorf("redis-server not found (%v): install Debian's redis-server (make bench-compare does when it can)", err)
	}
	redisVersion := "?"
	if b, err := exec.Command(redisPath, "--version").Output(); err == nil {
		redisVersion = strings.TrimSpace(string(b))
	}
	if cfg.bin == "" {
		cfg.bin = filepath.Join(dir, "headroom")
		logf("building ./cmd/headroom")
		if b, err := exec.Command("go", "build", "-o", cfg.bin, "github.com/headroom-rtc/headroom/cmd/headroom").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/headroom: %v\n%s", err, b)
		}
	}

	// Redis, twice.
	type redisInst struct {
		name string
		c    *child
		rdb  *redis.Client
	}
	startRedis := func(name string, extra ...string) (*redisInst, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, port, _ := strings.Cut(addr, ":")
		rdir := filepath.Join(dir, name)
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			return nil, err
		}
		argv := append([]string{redisPath, "--port", port, "--bind", "127.0.0.1", "--dir", rdir, "--protected-mode", "no", "--daemonize", "no"}, extra...)
		c, err := ps.start(dir, name, argv...)
		if err != nil {
			return nil, err
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 2 * maxInt(cfg.workers...), MinIdleConns: 1})
		if err := waitFor(15*time.Second, name+" answers PING", c, func() error { return rdb.Ping(ctx).Err() }); err != nil {
			return nil, err
		}
		return &redisInst{name: name, c: c, rdb: rdb}, nil
	}
	rMem, err := startRedis("redis", "--save", "", "--appendonly", "no")
	if err != nil {
		return err
	}
	defer rMem.rdb.Close()
	rDur, err := startRedis("redis-durable", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
	if err != nil {
		return err
	}
	defer rDur.rdb.Close()

	// The aggregator and the agents.
	var aggHTTP, aggWire, aggRaft string
	for _, p := range []*string{&aggHTTP, &aggWire, &aggRaft} {
		if *p, err = freeAddr(); err != nil {
			return err
		}
	}
	agg, err := ps.start(dir, "aggregator", cfg.bin, "aggregator", "--data-dir", filepath.Join(dir, "agg"),
		"--http-addr", aggHTTP, "--wire-addr", aggWire, "--raft-addr", aggRaft, "--bootstrap", "--log-level", "warn")
	if err != nil {
		return err
	}
	aggURL := "http://" + aggHTTP
	if err := waitFor(60*time.Second, "aggregator healthy", agg, func() error {
		code, body, err := call("GET", aggURL+"/healthz", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("healthz %d %s", code, body)
		}
		return err
	}); err != nil {
		return err
	}
	for _, p := range []struct {
		name    string
		ceiling int
		tenant  string
	}{{"bench-million", benchCeiling, benchTenant}, {"bench-hundred", ceiling, ceilingTenant}} {
		if code, body, err := call("POST", aggURL+"/v1/plans", map[string]any{"name": p.name, "fee_monthly_micros": 1_000_000, "ceiling": p.ceiling, "mode": "strict"}); err != nil || code != 201 {
			return fmt.Errorf("creating plan %s: %d %s %v", p.name, code, body, err)
		}
		if code, body, err := call("PUT", aggURL+"/v1/tenants/"+p.tenant+"/plan", map[string]string{"plan": p.name}); err != nil || code != 200 {
			return fmt.Errorf("putting %s on %s: %d %s %v", p.tenant, p.name, code, body, err)
		}
	}
	type agentProc struct {
		c   *child
		api string
	}
	var agents []agentProc
	for i := range fleetAgents {
		api, err := freeAddr()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("agent-%d", i+1)
		c, err := ps.start(dir, name, cfg.bin, "agent", "--data-dir", filepath.Join(dir, name), "--api-addr", api,
			"--server", aggWire, "--id", name, "--log-level", "warn")
		if err != nil {
			return err
		}
		agents = append(agents, agentProc{c, api})
	}
	for _, a := range agents {
		if err := waitFor(30*time.Second, a.c.name+" API up", a.c, func() error {
			_, _, err := call("GET", "http://"+a.api+"/v1/status", nil)
			return err
		}); err != nil {
			return err
		}
	}
	inproc, err := agent.New(agent.Config{DataDir: filepath.Join(dir, "agent-inproc"), Servers: []string{aggWire}, AgentID: "agent-inproc"})
	if err != nil {
		return err
	}
	actx, acancel := context.WithCancel(context.WithoutCancel(ctx))
	var awg sync.WaitGroup
	awg.Add(1)
	go func() { defer awg.Done(); inproc.Run(actx) }()
	defer func() { acancel(); awg.Wait() }()

	timeout := 10 * time.Second
	httpTarget := func(i, conns int, tenant string) (*loadgen.AgentHTTP, error) {
		return loadgen.NewAgentHTTP(agents[i].api, tenant, "audio", conns, timeout)
	}
	// Every agent admits a session of both tenants before anything is
	// measured: the tenants' plans have reached it and it holds a share.
	warm := func(name string, t loadgen.Target) error {
		n := 0
		return waitFor(60*time.Second, name+" admits", nil, func() error {
			n++
			id := fmt.Sprintf("warm-%d", n)
			ok, err := t.Admit(ctx, id)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("refused")
			}
			return t.Close(ctx, id)
		})
	}
	for _, tenant := range []string{benchTenant, ceilingTenant} {
		for i := range agents {
			t, err := httpTarget(i, 1, tenant)
			if err != nil {
				return err
			}
			if err := warm(fmt.Sprintf("%s for %s", agents[i].c.name, tenant), t); err != nil {
				return err
			}
			t.CloseIdle()
		}
		if err := warm("the in-process agent for "+tenant, inprocTarget{inproc, tenant}); err != nil {
			return err
		}
	}
	for _, r := range []*redisInst{rMem, rDur} {
		r.rdb.Del(ctx, benchTenant, ceilingTenant)
	}

	dur := time.Duration(cfg.seconds * float64(time.Second))
	progress := func(name string) func(loadgen.Progress) {
		return func(p loadgen.Progress) {
			fmt.Fprintf(os.Stderr, "bench-compare:   %s: %4.0fs %d ops, %.0f ops/s now, %d refused, %d errors\n",
				name, p.Elapsed.Seconds(), p.Ops, p.LastRate, p.Refused, p.Errors)
		}
	}
	measure := func(name string, n int, t loadgen.Target, pids []int, aggPid int, o loadgen.Options) (row, error) {
		o.Workers, o.Duration, o.Progress, o.ProgressEvery = n, dur, progress(fmt.Sprintf("%s N=%d", name, n)), 5*time.Second
		runtime.GC()
		cpu0, agg0 := cpuOf(pids), cpuOf([]int{aggPid})
		res, err := loadgen.Run(ctx, t, o)
		cpu1, agg1 := cpuOf(pids), cpuOf([]int{aggPid})
		r := row{variant: name, n: n, res: res, cpu: cpu1 - cpu0}
		if aggPid != 0 {
			r.aggCPU, r.hasAgg = agg1-agg0, true
		}
		if err != nil {
			return r, fmt.Errorf("%s, N=%d: %w", name, n, err)
		}
		logf("%s N=%d: %.0f ops/s, p99 %v", name, n, res.OpsPerSecond(), res.Latency.Quantile(0.99))
		return r, nil
	}
	self := os.Getpid()
	aggPid := agg.cmd.Process.Pid
	var rows []row
	byKey := map[string]row{}
	add := func(r row) { rows = append(rows, r); byKey[fmt.Sprintf("%s/%d", r.variant, r.n)] = r }
	const (
		vRedis   = "A. Redis (EVALSHA limiter), in memory"
		vRedisD  = "A. Redis (EVALSHA limiter), appendfsync everysec"
		vHTTP    = "B. agent, local HTTP API"
		vNetHTTP = "B. agent, local HTTP API, Go net/http client"
		vInproc  = "C. agent, in process (Go library)"
		vFleetH  = "fleet: 4 agents over HTTP, 16 workers each"
		vFleetR  = "fleet: 1 Redis (in memory), 64 workers"
		fleetPer = 16
	)
	workersToRun := cfg.workers
	if cfg.correctnessOnly {
		workersToRun = nil
	}
	for _, n := range workersToRun {
		for _, v := range []struct {
			name string
			mk   func() (loadgen.Target, []int, int, func(), error)
		}{
			{vRedis, func() (loadgen.Target, []int, int, func(), error) {
				return redisTarget{rMem.rdb, redis.NewScript(limiterLua), benchTenant, benchCeiling}, []int{rMem.c.cmd.Process.Pid}, 0, func() {}, nil
			}},
			{vRedisD, func() (loadgen.Target, []int, int, func(), error) {
				return redisTarget{rDur.rdb, redis.NewScript(limiterLua), benchTenant, benchCeiling}, []int{rDur.c.cmd.Process.Pid}, 0, func() {}, nil
			}},
			{vHTTP, func() (loadgen.Target, []int, int, func(), error) {
				t, err := httpTarget(0, n, benchTenant)
				if err != nil {
					return nil, nil, 0, nil, err
				}
				return t, []int{agents[0].c.cmd.Process.Pid}, aggPid, t.CloseIdle, nil
			}},
			{vNetHTTP, func() (loadgen.Target, []int, int, func(), error) {
				t, err := loadgen.NewAgentNetHTTP(agents[0].api, benchTenant, "audio", n, timeout)
				if err != nil {
					return nil, nil, 0, nil, err
				}
				return t, []int{agents[0].c.cmd.Process.Pid}, aggPid, t.CloseIdle, nil
			}},
			{vInproc, func() (loadgen.Target, []int, int, func(), error) {
				return inprocTarget{inproc, benchTenant}, []int{self}, aggPid, func() {}, nil
			}},
		} {
			t, pids, ap, done, err := v.mk()
			if err != nil {
				return err
			}
			r, err := measure(v.name, n, t, pids, ap, loadgen.Options{Prefix: fmt.Sprintf("m%d", n)})
			done()
			if err != nil {
				return err
			}
			if v.name == vInproc {
				r.note = "CPU of the whole process, load generator included"
			}
			add(r)
		}
	}

	if cfg.correctnessOnly {
		cres, err := runCorrectness(ctx, cfg, aggURL, len(agents), httpTarget, rMem.rdb)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "## bench-compare -correctness-only %s\n\n%s; load average before %s, after %s; %v\n", time.Now().UTC().Format("2006-01-02 15:04 MST"),
			runtime.Version(), load0, loadAvg(), dur)
		writeCorrectness(out, cres)
		return cres.verdict()
	}
	// The fleet: four agents at once against one Redis.
	logf("fleet: %d agents, %d workers each, at once", fleetAgents, fleetPer)
	var fleetPids []int
	for _, a := range agents {
		fleetPids = append(fleetPids, a.c.cmd.Process.Pid)
	}
	fcpu0, fagg0 := cpuOf(fleetPids), cpuOf([]int{aggPid})
	fleet, err := runFleet(ctx, len(agents), func(i int) (loadgen.Target, func(), error) {
		t, err := httpTarget(i, fleetPer, benchTenant)
		if err != nil {
			return nil, nil, err
		}
		return t, t.CloseIdle, nil
	}, loadgen.Options{Workers: fleetPer, Duration: dur, Prefix: "fleet"})
	if err != nil {
		return err
	}
	fleetRow := row{variant: vFleetH, n: fleetAgents * fleetPer, res: fleet, cpu: cpuOf(fleetPids) - fcpu0, aggCPU: cpuOf([]int{aggPid}) - fagg0, hasAgg: true}
	redisFleet, ok := byKey[fmt.Sprintf("%s/%d", vRedis, fleetAgents*fleetPer)]
	if !ok {
		r, err := measure(vRedis, fleetAgents*fleetPer, redisTarget{rMem.rdb, redis.NewScript(limiterLua), benchTenant, benchCeiling},
			[]int{rMem.c.cmd.Process.Pid}, 0, loadgen.Options{Prefix: "fleetr"})
		if err != nil {
			return err
		}
		redisFleet = r
	}

	var cres *corrResult
	if cres, err = runCorrectness(ctx, cfg, aggURL, len(agents), httpTarget, rMem.rdb); err != nil {
		return err
	}
	load1 := loadAvg()

	// The table.
	w := func(format string, args ...any) { fmt.Fprintf(out, format, args...) }
	host, _ := os.Hostname()
	w("## bench-compare %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	w("machine: %s, %d CPUs (%s); %s; %s; go-redis %s; load average before %s, after %s; %v a run\n\n",
		host, runtime.NumCPU(), cpuModel(), runtime.Version(), redisVersion, redis.Version(), load0, load1, dur)
	w("| variant | N | ops/s | admit p50 | p99 | p99.9 | server CPU/op | aggregator CPU/op | refused |\n")
	w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		agg := "—"
		if r.hasAgg {
			agg = perOp(r.aggCPU, r.res.Ops)
		}
		note := ""
		if r.note != "" {
			note = " (" + r.note + ")"
		}
		w("| %s | %d | %s | %s | %s | %s | %s%s | %s | %d |\n", r.variant, r.n, ops(r.res.OpsPerSecond()),
			lat(r.res.Latency.Quantile(0.5)), lat(r.res.Latency.Quantile(0.99)), lat(r.res.Latency.Quantile(0.999)),
			perOp(r.cpu, r.res.Ops), note, agg, r.res.Refused)
	}
	w("| %s | %d | %s | %s | %s | %s | %s (4 agents) | %s | %d |\n", fleetRow.variant, fleetRow.n, ops(fleet.OpsPerSecond()),
		lat(fleet.Latency.Quantile(0.5)), lat(fleet.Latency.Quantile(0.99)), lat(fleet.Latency.Quantile(0.999)),
		perOp(fleetRow.cpu, fleet.Ops), perOp(fleetRow.aggCPU, fleet.Ops), fleet.Refused)
	w("| %s | %d | %s | %s | %s | %s | %s | — | %d |\n", vFleetR, redisFleet.n, ops(redisFleet.res.OpsPerSecond()),
		lat(redisFleet.res.Latency.Quantile(0.5)), lat(redisFleet.res.Latency.Quantile(0.99)), lat(redisFleet.res.Latency.Quantile(0.999)),
		perOp(redisFleet.cpu, redisFleet.res.Ops), redisFleet.res.Refused)

	w("\nRatios to Redis (in memory) at the same N; goals: in process p99 ≥ 1000× below Redis's, HTTP p99 ≤ Redis's, fleet ≥ 2× Redis's ops/s:\n\n")
	w("| N | Redis p99 / in-process p99 | HTTP p99 / Redis p99 | HTTP ops/s / Redis ops/s | in-process ops/s / Redis ops/s |\n| --- | --- | --- | --- | --- |\n")
	for _, n := range cfg.workers {
		rd, h, c := byKey[fmt.Sprintf("%s/%d", vRedis, n)], byKey[fmt.Sprintf("%s/%d", vHTTP, n)], byKey[fmt.Sprintf("%s/%d", vInproc, n)]
		rp, hp, cp := rd.res.Latency.Quantile(0.99), h.res.Latency.Quantile(0.99), c.res.Latency.Quantile(0.99)
		w("| %d | %s %s | %s %s | %.2f | %.1f |\n", n, ratio(rp, cp), mark(float64(rp) >= 1000*float64(cp)),
			ratio(hp, rp), mark(hp <= rp), h.res.OpsPerSecond()/rd.res.OpsPerSecond(), c.res.OpsPerSecond()/rd.res.OpsPerSecond())
	}
	fr := fleet.OpsPerSecond() / redisFleet.res.OpsPerSecond()
	w("\nfleet: 4 agents %s ops/s against one Redis %s ops/s: %.2f× %s\n", ops(fleet.OpsPerSecond()), ops(redisFleet.res.OpsPerSecond()), fr, mark(fr >= 2))

	writeCorrectness(out, cres)
	return cres.verdict()
}

// runFleet runs o on n targets at once and adds their results up: ops and
// latencies together, elapsed the longest, the most open at once summed per
// sample is not known, so MaxOpen is the client count of all of them together.
func runFleet(ctx context.Context, n int, mk func(int) (loadgen.Target, func(), error), o loadgen.Options) (loadgen.Result, error) {
	targets := make([]loadgen.Target, n)
	for i := range n {
		t, done, err := mk(i)
		if err != nil {
			return loadgen.Result{}, err
		}
		defer done()
		targets[i] = t
	}
	// One shared counter of open sessions across the fleet: every target is
	// wrapped so that the count is the fleet's, not one agent's.
	ft := &fleetCount{}
	res := make([]loadgen.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oi := o
			oi.Prefix = fmt.Sprintf("%s%d", o.Prefix, i)
			res[i], errs[i] = loadgen.Run(ctx, ft.wrap(targets[i], o.Hold > 0), oi)
		}()
	}
	wg.Wait()
	all := loadgen.Result{Latency: loadgen.NewHistogram()}
	for i, r := range res {
		if errs[i] != nil {
			return all, errs[i]
		}
		all.Workers += r.Workers
		all.Ops += r.Ops
		all.Refused += r.Refused
		all.Errors += r.Errors
		all.Latency.Merge(r.Latency)
		all.Elapsed = max(all.Elapsed, r.Elapsed)
		all.Seed = r.Seed
	}
	all.MaxOpen = ft.max
	return all, nil
}

// fleetCount counts the sessions open across a fleet as the clients see
// them: up when an admission's answer arrives, down before the close is
// sent (so never above what the agents really hold).
type fleetCount struct {
	mu        sync.Mutex
	open, max int64
}

type countedTarget struct {
	t  loadgen.Target
	fc *fleetCount
}

func (f *fleetCount) wrap(t loadgen.Target, on bool) loadgen.Target {
	if !on {
		return t
	}
	return countedTarget{t, f}
}

func (c countedTarget) Admit(ctx context.Context, s string) (bool, error) {
	ok, err := c.t.Admit(ctx, s)
	if ok && err == nil {
		c.fc.mu.Lock()
		c.fc.open++
		c.fc.max = max(c.fc.max, c.fc.open)
		c.fc.mu.Unlock()
	}
	return ok, err
}

func (c countedTarget) Close(ctx context.Context, s string) error {
	c.fc.mu.Lock()
	c.fc.open--
	c.fc.mu.Unlock()
	return c.t.Close(ctx, s)
}

// redisTarget is the standard limiter: EVALSHA of limiterLua to admit, DECR
// to close.
type redisTarget struct {
	rdb     *redis.Client
	script  *redis.Script
	key     string
	ceiling int
}

func (r redisTarget) Admit(ctx context.Context, _ string) (bool, error) {
	n, err := r.script.Run(ctx, r.rdb, []string{r.key}, r.ceiling).Int()
	return n == 1, err
}

func (r redisTarget) Close(ctx context.Context, _ string) error { return r.rdb.Decr(ctx, r.key).Err() }

// inprocTarget is the agent's Go library.
type inprocTarget struct {
	a      *agent.Agent
	tenant string
}

func (t inprocTarget) Admit(_ context.Context, s string) (bool, error) {
	res, err := t.a.Open(t.tenant, "audio", s, 0)
	return res.Admitted, err
}

func (t inprocTarget) Close(_ context.Context, s string) error { _, err := t.a.Close(s); return err }

func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if p == 0 {
			continue
		}
		d, err := cpuTime(p)
		if err == nil {
			sum += d
		}
	}
	return sum
}

func maxInt(v ...int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func ops(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

func lat(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

func perOp(cpu time.Duration, n int64) string {
	if n == 0 {
		return "—"
	}
	return lat(cpu / time.Duration(n))
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "∞"
	}
	return fmt.Sprintf("%.1f×", float64(a)/float64(b))
}

func mark(ok bool) string {
	if ok {
		return "(met)"
	}
	return "(missed)"
}
