package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/aggregator"
	"github.com/headroom-rtc/headroom/aggregator/api"
)

func nullLogger() hclog.Logger { return hclog.NewNullLogger() }

func devCommand() *cli.Command {
	return &cli.Command{
		Name:      "dev",
		Usage:     "run an aggregator, an agent and a workload simulator in one process",
		UsageText: "headroom dev [--data-dir D] [--no-sim] [--scale F]",
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./.headroom", Usage: "state of the embedded aggregator and agent"},
			&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:9370", Usage: "aggregator HTTP address"},
			&cli.StringFlag{Name: "wire-addr", Value: "127.0.0.1:9371", Usage: "aggregator wire address"},
			&cli.StringFlag{Name: "raft-addr", Value: "127.0.0.1:9372", Usage: "aggregator Raft address"},
			&cli.StringFlag{Name: "api-addr", Value: "127.0.0.1:9380", Usage: "agent API address"},
			&cli.BoolFlag{Name: "no-sim", Usage: "run the stack without the simulator"},
			&cli.BoolFlag{Name: "acl", Usage: "turn ACLs on: bootstrap an operator token (kept in the data directory) and print it"},
		}, simFlags()...), logFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			if !c.IsSet("log-level") {
				c.Set("log-level", "error") // the simulator's lines are the show
			}
			log, err := newLogger(c, "dev")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(log)
			defer stop()
			return runDev(ctx, c, log)
		},
	}
}

func runDev(ctx context.Context, c *cli.Context, log hclog.Logger) error {
	dir := c.String("data-dir")
	srv, err := aggregator.New(aggregator.Config{
		DataDir: filepath.Join(dir, "aggregator"), HTTPAddr: c.String("http-addr"),
		WireAddr: c.String("wire-addr"), RaftAddr: c.String("raft-addr"),
		Bootstrap: true, Logger: log.Named("aggregator"), ACL: c.Bool("acl"),
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Printf("headroom dev: waiting for the aggregator to elect itself")
	if err := waitReady(ctx, srv.Ready, 30*time.Second); err != nil {
		fmt.Println()
		return err
	}
	fmt.Println(" ok")
	var toks devTokens
	if c.Bool("acl") {
		if toks, err = devACL(ctx, srv.HTTPAddr(), dir); err != nil {
			return err
		}
		fmt.Printf("\n  operator token  %s\n  (export HEADROOM_TOKEN=%s; the dashboard asks for it)\n", toks.Operator, toks.Operator)
	}

	agentCtx, cancelAgent := context.WithCancel(ctx)
	defer cancelAgent()
	ready := make(chan string, 1)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- runAgent(agentCtx, agent.Config{
			DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.WireAddr()},
			Logger: log.Named("agent"), Token: toks.Agent,
		}, c.String("api-addr"), log.Named("agent"), ready, devConnectors())
	}()
	var apiAddr string
	select {
	case apiAddr = <-ready:
	case err := <-agentDone:
		return err
	}
	fmt.Printf(`
  dashboard       http://%[1]s/
  API             http://%[1]s/v1/tenants
  agent API       http://%[2]s/v1/status
  CLI             headroom tenant list --addr %[1]s
  data            %[3]s

`, srv.HTTPAddr(), apiAddr, dir)
	fmt.Println(devConnectorHelp(apiAddr))

	if !c.Bool("no-sim") {
		sim := newSim(c, apiAddr, srv.HTTPAddr())
		if toks.Operator != "" {
			sim.token = toks.Operator
		}
		if err := sim.setupPlans(ctx); err != nil {
			return err
		}
		for _, sc := range sim.scen {
			fmt.Printf("  %-10s %-8s %s\n", sc.Tenant, sc.Plan, sc.What)
		}
		fmt.Println()
		go sim.run(agentCtx)
	}
	select {
	case <-ctx.Done():
	case err := <-agentDone:
		return err
	}
	cancelAgent()
	return <-agentDone
}

// waitReady polls ready until it holds, printing a dot a second.
func waitReady(ctx context.Context, ready func() (bool, string), limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastDot := time.Now()
	for {
		ok, why := ready()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %s", limit, why)
		}
		if time.Since(lastDot) > time.Second {
			fmt.Print(".")
			lastDot = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// devTokens are the secrets headroom dev --acl uses: the operator's (for
// the simulator and the person at the keyboard) and its agent's.
type devTokens struct {
	Operator string `json:"operator"`
	Agent    string `json:"agent"`
}

// devACL bootstraps the ACLs of a dev aggregator at addr on its first run
// and keeps the secrets in dir/acl.json (mode 0600) for the next ones.
func devACL(ctx context.Context, addr, dir string) (devTokens, error) {
	var toks devTokens
	path := filepath.Join(dir, "acl.json")
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &toks); err != nil || toks.Operator == "" || toks.Agent == "" {
			return toks, fmt.Errorf("%s: not the tokens headroom dev keeps; remove it together with the data directory", path)
		}
		return toks, nil
	}
	post := func(path, secret string, body any) (api.TokenJSON, error) {
		var out api.TokenJSON
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+path, bytes.NewReader(b))
		if err != nil {
			return out, err
		}
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return out, err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusCreated {
			return out, fmt.Errorf("POST %s: %s: %s (an ACL bootstrapped earlier without headroom dev? remove the data directory)", path, resp.Status, data)
		}
		return out, json.Unmarshal(data, &out)
	}
	op, err := post("/v1/acl/bootstrap", "", nil)
	if err != nil {
		return toks, err
	}
	ag, err := post("/v1/tokens", op.Secret, map[string]string{"role": "agent", "description": "headroom dev's agent"})
	if err != nil {
		return toks, err
	}
	toks = devTokens{Operator: op.Secret, Agent: ag.Secret}
	b, _ := json.Marshal(toks)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return toks, err
	}
	return toks, os.WriteFile(path, b, 0o600)
}
