package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
	"github.com/headroom-rtc/headroom/aggregator/api"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/plans"
)

func aggregatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "aggregator",
		Usage: "run an aggregator server (Raft state machine, agent streams, HTTP API)",
		UsageText: "headroom aggregator [--data-dir D] [--http-addr A] [--wire-addr A] [--raft-addr A] --bootstrap\n" +
			"   headroom aggregator --gossip-addr A --join A[,A...] --bootstrap-expect N [--advertise-addr HOST] ...",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./headroom-data", Usage: "Raft log, snapshots, node id and known members"},
			&cli.StringFlag{Name: "node-id", Usage: "server id, for Raft and gossip (default: kept in the data directory, random on first start)"},
			&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:9370", Usage: "HTTP API listen address"},
			&cli.StringFlag{Name: "wire-addr", Value: "127.0.0.1:9371", Usage: "agent stream listen address"},
			&cli.StringFlag{Name: "raft-addr", Value: "127.0.0.1:9372", Usage: "Raft listen address"},
			&cli.StringFlag{Name: "gossip-addr", Usage: "gossip (memberlist) listen address, e.g. 0.0.0.0:9373; needed for a cluster"},
			&cli.StringSliceFlag{Name: "join", Usage: "gossip address(es) of servers to join, retried with backoff"},
			&cli.IntFlag{Name: "bootstrap-expect", Usage: "once this many servers see each other, one bootstraps Raft with all of them as voters (a no-op on a data directory that holds a cluster)"},
			&cli.StringFlag{Name: "advertise-addr", Usage: "host others use to reach this server, for all its addresses (default: the bound host, or the first private address when bound to 0.0.0.0)"},
			&cli.BoolFlag{Name: "bootstrap", Usage: "form a single-server cluster on an empty data directory (a no-op on one that holds a cluster)"},
			&cli.StringFlag{Name: "plans", Usage: "JSON or YAML file {\"plans\":[...]} of plans the leader creates when the catalogue lacks them (never overwriting)"},
			&cli.StringFlag{Name: "default-plan", Usage: "put tenants first seen in agent batches on this plan (default: refuse them as unknown)"},
			&cli.DurationFlag{Name: "grant-lease", Value: fsm.DefaultGrantLease, Usage: "how long a share of a strict ceiling leased to an agent lasts without renewal"},
			&cli.DurationFlag{Name: "grant-margin", Value: fsm.DefaultGrantMargin, Usage: "how much longer than its lease the leader waits before it gives a silent agent's share to another (covers clock skew between servers)"},
			&cli.BoolFlag{Name: "acl", Usage: "require a token on every request and agent stream (bootstrap the first one with `headroom acl bootstrap`)"},
			&cli.DurationFlag{Name: "agent-grace", Value: 15 * time.Second, Usage: "an agent silent this long has its sessions expired from the global figures"},
			&cli.DurationFlag{Name: "agent-forget", Value: 24 * time.Hour, Usage: "an expired agent gone this long has its record and dedup state dropped"},
			&cli.DurationFlag{Name: "usage-grace", Value: fsm.DefaultUsageGrace, Usage: "a billing period closes this long after its end; batches cut in it that arrive later go to the open period, flagged late"},
			&cli.DurationFlag{Name: "dead-server-reap", Value: 5 * time.Minute, Usage: "a failed server stays a Raft voter this long before the leader removes it"},
			&cli.Uint64Flag{Name: "raft-snapshot-threshold", Usage: "log entries between snapshots (default 16384)"},
			&cli.Uint64Flag{Name: "raft-trailing-logs", Usage: "log entries kept behind a snapshot for slow followers (default 10240)"},
			&cli.StringFlag{Name: "alert-webhook", Usage: "URL the leader POSTs each alert to as JSON, retried with backoff (default: alerts are only logged)"},
			&cli.StringFlag{Name: "alert-thresholds", Value: "70,90,100", Usage: "utilization percentages of the ceiling, of the included unit-minutes and of the included monthly active users that alert, ascending, 1 to 1000"},
			&cli.IntFlag{Name: "metrics-max-tenants", Value: api.DefaultMetricsMaxTenants, Usage: "tenants /metrics labels one by one, the busiest by open sessions; the others are summed under tenant=\"_other\""},
			&cli.DurationFlag{Name: "backup-interval", Usage: "the leader writes a snapshot file to --backup-dir this often (e.g. 1h; default off)"},
			&cli.StringFlag{Name: "backup-dir", Usage: "where the leader's backups go (headroom-TIME-INDEX.snap), best on another disk than --data-dir"},
			&cli.IntFlag{Name: "backup-retain", Value: aggregator.DefaultBackupRetain, Usage: "how many backups --backup-dir keeps, the oldest removed first"},
			&cli.IntFlag{Name: "history-max-tenants", Value: api.DefaultHistoryMaxTenants, Usage: "tenants whose per-minute peaks of the last 6 h this server keeps (GET /v1/tenants/{id}/history), the busiest"},
			&cli.StringFlag{Name: "export-url", Usage: "the leader POSTs usage increments to this URL as CloudEvents batches (OpenMeter's ingest shape), at least once; a receiver drops the ids it has (default: no export)"},
			&cli.StringFlag{Name: "export-token", Usage: "sent to --export-url as a Bearer token", EnvVars: []string{"HEADROOM_EXPORT_TOKEN"}},
			&cli.DurationFlag{Name: "export-window", Value: api.DefaultExportWindow, Usage: "the export's window: usage is cut and sent at each multiple of it"},
			&cli.IntFlag{Name: "export-batch", Value: api.DefaultExportBatch, Usage: "the most events one POST to --export-url carries"},
			&cli.StringFlag{Name: "export-source", Usage: "the events' CloudEvents source; the same on every server (default: headroom/ and a random id kept in the state)"},
			&cli.StringFlag{Name: "gossip-key", Usage: "encrypt gossip with this key (base64 of 16, 24 or 32 bytes; `headroom keyring generate`) until the data directory holds a keyring", EnvVars: []string{"HEADROOM_GOSSIP_KEY"}},
		}, append(tlsFlags(true), logFlags()...)...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			log, err := newLogger(c, "aggregator")
			if err != nil {
				return err
			}
			var seed []plans.Plan
			if path := c.String("plans"); path != "" {
				f, err := os.Open(path)
				if err != nil {
					return fmt.Errorf("--plans: %w", err)
				}
				seed, err = plans.ReadCatalogue(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("--plans %s: %w", path, err)
				}
			}
			thresholds, err := api.ParseAlertThresholds(c.String("alert-thresholds"))
			if err != nil {
				return fmt.Errorf("--alert-thresholds %s: %w", c.String("alert-thresholds"), err)
			}
			if n := c.Int("metrics-max-tenants"); n < 1 || n > api.MaxMetricsMaxTenants {
				return fmt.Errorf("--metrics-max-tenants %d: want 1 to %d", n, api.MaxMetricsMaxTenants)
			}
			tlsCfg, err := serverTLS(c)
			if err != nil {
				return err
			}
			var gossipKey []byte
			if k := c.String("gossip-key"); k != "" {
				if gossipKey, err = cluster.ParseGossipKey(k); err != nil {
					return fmt.Errorf("--gossip-key: %w", err)
				}
			}
			ctx, stop := signalContext(log)
			defer stop()
			srv, err := aggregator.New(aggregator.Config{
				AlertWebhook: c.String("alert-webhook"), AlertThresholds: thresholds, MetricsMaxTenants: c.Int("metrics-max-tenants"),
				Plans:   seed,
				DataDir: c.String("data-dir"), NodeID: c.String("node-id"),
				HTTPAddr: c.String("http-addr"), WireAddr: c.String("wire-addr"), RaftAddr: c.String("raft-addr"),
				GossipAddr: c.String("gossip-addr"), Join: splitList(c.StringSlice("join")),
				BootstrapExpect: c.Int("bootstrap-expect"), AdvertiseAddr: c.String("advertise-addr"),
				Bootstrap: c.Bool("bootstrap"), DefaultPlan: c.String("default-plan"), Logger: log,
				AgentGrace: c.Duration("agent-grace"), AgentForget: c.Duration("agent-forget"),
				UsageGrace: c.Duration("usage-grace"),
				GrantLease: c.Duration("grant-lease"), GrantMargin: c.Duration("grant-margin"),
				TLS: tlsCfg, GossipKey: gossipKey,
				HistoryMaxTenants: c.Int("history-max-tenants"),
				ExportURL:         c.String("export-url"), ExportToken: c.String("export-token"), ExportWindow: c.Duration("export-window"),
				ExportBatch: c.Int("export-batch"), ExportSource: c.String("export-source"),
				ACL:                   c.Bool("acl"),
				DeadServerReap:        c.Duration("dead-server-reap"),
				RaftSnapshotThreshold: c.Uint64("raft-snapshot-threshold"), RaftTrailingLogs: c.Uint64("raft-trailing-logs"),
				BackupInterval: c.Duration("backup-interval"), BackupDir: c.String("backup-dir"), BackupRetain: c.Int("backup-retain"),
			})
			if err != nil {
				return err
			}
			select {
			case <-ctx.Done():
			case <-srv.Done():
				log.Info("left the cluster; stopping")
			}
			return srv.Close()
		},
	}
}
