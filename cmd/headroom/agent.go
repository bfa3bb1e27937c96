package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/wire"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:      "agent",
		Usage:     "run an agent beside a media server (local admission API, ships deltas to the aggregators)",
		UsageText: "headroom agent --server A[,A...] [--data-dir D] [--api-addr A] [--region R] [--label k=v]...",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./headroom-agent", Usage: "identity, open sessions and unacknowledged batches"},
			&cli.StringFlag{Name: "api-addr", Value: "127.0.0.1:9380", Usage: "local HTTP API listen address"},
			&cli.StringSliceFlag{Name: "server", Usage: "aggregator wire address(es), comma-separated or repeated", Required: true},
			&cli.StringFlag{Name: "id", Usage: "agent id (default: kept in the data directory, random on first start)"},
			&cli.StringFlag{Name: "region", Usage: "region label (usage and peaks are also kept per region)"},
			&cli.StringSliceFlag{Name: "label", Usage: "extra label key=value (repeatable)"},
			&cli.StringFlag{Name: "token", Usage: "token presented to the aggregators", EnvVars: []string{"HEADROOM_AGENT_TOKEN"}},
			&cli.DurationFlag{Name: "flush-interval", Value: 100 * time.Millisecond, Usage: "how often deltas are cut, persisted and shipped"},
			&cli.DurationFlag{Name: "top-up-wait", Value: agent.DefaultTopUpWait, Usage: "how long an admission of a strict tenant waits for a top-up of this agent's share before grant-timeout"},
			&cli.IntFlag{Name: "gc-percent", Value: defaultAgentGCPercent, Usage: "the Go collector's target (GOGC) for the agent: its heap is mostly sessions that live long and it allocates little, so collecting at 25 % growth keeps memory near the live sessions at little cost (GOGC or GOMEMLIMIT in the environment win unless this is set)"},
			wallClockFlag,
		}, append(append(tlsFlags(false), logFlags()...), connectorFlags()...)...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			if err := setAgentGC(c); err != nil {
				return err
			}
			dial, err := agentDialer(c)
			if err != nil {
				return err
			}
			log, err := newLogger(c, "agent")
			if err != nil {
				return err
			}
			labels, err := parseLabels(c.StringSlice("label"), c.String("region"))
			if err != nil {
				return err
			}
			attach, err := connectorsFromFlags(c)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(log)
			defer stop()
			return runAgent(ctx, agent.Config{
				DataDir: c.String("data-dir"), Servers: splitList(c.StringSlice("server")),
				AgentID: c.String("id"), Labels: labels, Token: c.String("token"),
				FlushInterval: c.Duration("flush-interval"), TopUpWait: c.Duration("top-up-wait"), Logger: log,
				Dial: dial, WallClock: offsetClock(ctx, c.String("wall-clock-offset-file")),
			}, c.String("api-addr"), log, nil, attach)
		},
	}
}

// defaultAgentGCPercent is the agent's GOGC unless told otherwise: with a
// million sessions open (about 190 MB live) the runtime's 100 lets the
// heap reach twice that before it collects.
const defaultAgentGCPercent = 25

// setAgentGC sets the collector's target from --gc-percent, unless the
// environment sets GOGC or GOMEMLIMIT and the flag is not given.
func setAgentGC(c *cli.Context) error {
	pct := c.Int("gc-percent")
	if pct < 1 {
		return fmt.Errorf("--gc-percent %d: want 1 or more", pct)
	}
	if c.IsSet("gc-percent") || (os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "") {
		debug.SetGCPercent(pct)
	}
	return nil
}

// splitList flattens comma-separated values.
func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func parseLabels(kvs []string, region string) ([]wire.Label, error) {
	m := map[string]string{}
	for _, kv := range splitList(kvs) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", kv)
		}
		m[k] = v
	}
	if region != "" {
		m["region"] = region
	}
	out := make([]wire.Label, 0, len(m))
	for k, v := range m {
		out = append(out, wire.Label{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// runAgent runs an agent and its local API until ctx ends, then lets the
// agent flush and persist before returning. ready, if not nil, receives the
// API's address once it listens. attach, if not nil, adds media server
// connectors (connectors.go): their hooks on the API listener, their loops
// beside the agent.
func runAgent(ctx context.Context, cfg agent.Config, apiAddr string, log hclog.Logger, ready chan<- string, attach ...attachFunc) error {
	if len(cfg.Servers) == 0 {
		return errors.New("--server: at least one aggregator wire address is needed")
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	// Restoring a large state from disk used memory that is garbage now:
	// give it back to the system at once rather than over minutes.
	debug.FreeOSMemory()
	handler := a.Handler()
	var runners []func(context.Context)
	for _, fn := range attach {
		if fn == nil {
			continue
		}
		at, err := fn(a, log)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		for p, h := range at.routes {
			mux.Handle(p, h)
		}
		handler, runners = mux, append(runners, at.runners...)
	}
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return fmt.Errorf("agent API: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	go srv.Serve(ln)
	log.Info("agent API listening", "addr", ln.Addr().String(), "servers", strings.Join(cfg.Servers, ","))
	if ready != nil {
		ready <- ln.Addr().String()
	}
	// The API stops first, so nothing is admitted after the agent's final
	// cut; then the agent flushes, persists and drains.
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(actx) }()
	var loops sync.WaitGroup
	for _, run := range runners {
		loops.Add(1)
		go func() { defer loops.Done(); run(actx) }()
	}
	defer func() { acancel(); loops.Wait() }() // the loops end with the agent
	var runErr error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		srv.Shutdown(sctx)
		cancel()
		acancel()
		runErr = <-runDone
	case runErr = <-runDone:
		srv.Close()
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return nil
}
