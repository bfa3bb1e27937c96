package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
)

func aggregatorCommand() *cli.Command {
	return &cli.Command{
		Name:      "aggregator",
		Usage:     "run an aggregator server (Raft state machine, agent streams, HTTP API)",
		UsageText: "headroom aggregator [--data-dir D] [--http-addr A] [--wire-addr A] [--raft-addr A] [--bootstrap]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./headroom-data", Usage: "Raft log, snapshots and node id"},
			&cli.StringFlag{Name: "node-id", Usage: "Raft server id (default: kept in the data directory, random on first start)"},
			&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:9370", Usage: "HTTP API listen address"},
			&cli.StringFlag{Name: "wire-addr", Value: "127.0.0.1:9371", Usage: "agent stream listen address"},
			&cli.StringFlag{Name: "raft-addr", Value: "127.0.0.1:9372", Usage: "Raft listen address"},
			&cli.BoolFlag{Name: "bootstrap", Usage: "form a single-server cluster on an empty data directory (a no-op on one that holds a cluster)"},
			&cli.StringFlag{Name: "default-plan", Usage: "put tenants first seen in agent batches on this plan (default: refuse them as unknown)"},
			&cli.DurationFlag{Name: "agent-grace", Value: 15 * time.Second, Usage: "an agent silent this long has its sessions expired from the global figures"},
			&cli.DurationFlag{Name: "agent-forget", Value: 24 * time.Hour, Usage: "an expired agent gone this long has its record and dedup state dropped"},
		}, logFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			log, err := newLogger(c, "aggregator")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(log)
			defer stop()
			srv, err := aggregator.New(aggregator.Config{
				DataDir: c.String("data-dir"), NodeID: c.String("node-id"),
				HTTPAddr: c.String("http-addr"), WireAddr: c.String("wire-addr"), RaftAddr: c.String("raft-addr"),
				Bootstrap: c.Bool("bootstrap"), DefaultPlan: c.String("default-plan"), Logger: log,
				AgentGrace: c.Duration("agent-grace"), AgentForget: c.Duration("agent-forget"),
			})
			if err != nil {
				return err
			}
			<-ctx.Done()
			return srv.Close()
		},
	}
}
