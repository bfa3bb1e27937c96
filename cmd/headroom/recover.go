package main

import (
	"fmt"
	"io"

	"strings"

	"github.com/hashicorp/raft"
	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// raftRecoverCommand is `headroom raft recover`: offline, on a stopped
// server's data directory, the way out of a lost quorum (README: Outage
// recovery).
func raftRecoverCommand() *cli.Command {
	return leaf("recover",
		"offline, on a stopped server: rewrite its Raft configuration to the given voters, keeping every entry it has (a lost quorum; README: Outage recovery)",
		"--data-dir D --voter ID=RAFT_ADDR [--voter ...]",
		func(c *cli.Context, cl *client, _ []string) error {
			dir := c.String("data-dir")
			if dir == "" {
				return fmt.Errorf("--data-dir: the stopped server's data directory is needed")
			}
			var voters []raft.Server
			for _, v := range splitList(c.StringSlice("voter")) {
				id, addr, ok := strings.Cut(v, "=")
				if !ok || id == "" || addr == "" {
					return fmt.Errorf("--voter %q: want ID=RAFT_ADDR, as in --voter agg1=10.0.0.11:9372", v)
				}
				voters = append(voters, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
			}
			if len(voters) == 0 {
				return fmt.Errorf("--voter: at least one voter (ID=RAFT_ADDR) is needed, this server first")
			}
			log, err := newLogger(c, "recover")
			if err != nil {
				return err
			}
			rep, err := aggregator.Recover(dir, voters, log)
			if err != nil {
				return fmt.Errorf("raft recover: %w (nothing was changed)", err)
			}
			out := recoverJSON{
				DataDir: dir, Store: rep.StorePath,
				LogFirst: rep.LogFirst, LogLast: rep.LogLast,
				SnapshotIndex: rep.SnapshotIndex, SnapshotTerm: rep.SnapshotTerm,
				LastIndex: rep.LastIndex, LastTerm: rep.LastTerm, CurrentTerm: rep.CurrentTerm,
				OldConfiguration: fsm.SnapshotServers(rep.OldConfiguration), OldConfigurationIndex: rep.OldConfigurationIndex,
				NewConfiguration: fsm.SnapshotServers(rep.NewConfiguration),
				WrittenSnapshot:  rep.WrittenSnapshot, WrittenIndex: rep.WrittenIndex, WrittenTerm: rep.WrittenTerm,
			}
			return cl.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "data directory:\t%s\n", dir)
				if rep.LogLast > 0 {
					fmt.Fprintf(w, "found log:\tentries %d to %d\n", rep.LogFirst, rep.LogLast)
				} else {
					fmt.Fprintf(w, "found log:\tempty\n")
				}
				if rep.SnapshotIndex > 0 {
					fmt.Fprintf(w, "found snapshot:\tindex %d, term %d\n", rep.SnapshotIndex, rep.SnapshotTerm)
				}
				fmt.Fprintf(w, "found last entry:\tindex %d, term %d (current term %d)\n", rep.LastIndex, rep.LastTerm, rep.CurrentTerm)
				fmt.Fprintf(w, "old configuration:\t%s (as of index %d)\n", describeServers(out.OldConfiguration), rep.OldConfigurationIndex)
				fmt.Fprintf(w, "new configuration:\t%s\n", describeServers(out.NewConfiguration))
				fmt.Fprintf(w, "wrote:\tsnapshot %s at index %d, term %d, holding every entry above; the log was compacted\n", rep.WrittenSnapshot, rep.WrittenIndex, rep.WrittenTerm)
			})
		}, 0,
		&cli.StringFlag{Name: "data-dir", Usage: "the stopped server's data directory"},
		&cli.StringSliceFlag{Name: "voter", Usage: "ID=RAFT_ADDR of a voter of the recovered cluster, this server among them (repeatable)"},
		&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "trace, debug, info, warn or error"},
		&cli.BoolFlag{Name: "log-json", Usage: "log JSON lines instead of text"},
	)
}

type recoverJSON struct {
	DataDir               string       `json:"data_dir"`
	Store                 string       `json:"store"`
	LogFirst              uint64       `json:"log_first"`
	LogLast               uint64       `json:"log_last"`
	SnapshotIndex         uint64       `json:"snapshot_index"`
	SnapshotTerm          uint64       `json:"snapshot_term"`
	LastIndex             uint64       `json:"last_index"`
	LastTerm              uint64       `json:"last_term"`
	CurrentTerm           uint64       `json:"current_term"`
	OldConfiguration      []serverJSON `json:"old_configuration"`
	OldConfigurationIndex uint64       `json:"old_configuration_index"`
	NewConfiguration      []serverJSON `json:"new_configuration"`
	WrittenSnapshot       string       `json:"written_snapshot"`
	WrittenIndex          uint64       `json:"written_index"`
	WrittenTerm           uint64       `json:"written_term"`
}

type serverJSON = fsm.SnapshotServer

func describeServers(ss []serverJSON) string {
	if len(ss) == 0 {
		return "none"
	}
	parts := make([]string, len(ss))
	for i, s := range ss {
		role := "voter"
		if !s.Voter {
			role = "non-voter"
		}
		parts[i] = fmt.Sprintf("%s=%s (%s)", s.ID, s.Address, role)
	}
	return strings.Join(parts, ", ")
}
