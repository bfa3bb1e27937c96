package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/aggregator"
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
		Bootstrap: true, Logger: log.Named("aggregator"),
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

	agentCtx, cancelAgent := context.WithCancel(ctx)
	defer cancelAgent()
	ready := make(chan string, 1)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- runAgent(agentCtx, agent.Config{
			DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.WireAddr()},
			Logger: log.Named("agent"),
		}, c.String("api-addr"), log.Named("agent"), ready)
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

	if !c.Bool("no-sim") {
		sim := newSim(c, apiAddr, srv.HTTPAddr())
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
