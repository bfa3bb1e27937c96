package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator/api"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/atomicfile"
)

func membersCommand() *cli.Command {
	return leaf("members", "the servers as gossip sees them", "", func(c *cli.Context, cl *client, _ []string) error {
		var ms []api.MemberJSON
		if err := cl.do("GET", "/v1/members", nil, &ms); err != nil {
			return err
		}
		return cl.print(ms, func(w io.Writer) {
			fmt.Fprintln(w, "ID\tSTATUS\tGOSSIP\tHTTP\tWIRE\tRAFT")
			for _, m := range ms {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Status, m.Gossip, m.HTTP, m.Wire, m.Raft)
			}
		})
	}, 0)
}

func raftCommand() *cli.Command {
	return &cli.Command{
		Name:  "raft",
		Usage: "the Raft configuration",
		Subcommands: []*cli.Command{
			leaf("peers", "the Raft servers, voters and leader", "", func(c *cli.Context, cl *client, _ []string) error {
				var ps []api.PeerJSON
				if err := cl.do("GET", "/v1/raft/peers", nil, &ps); err != nil {
					return err
				}
				return cl.print(ps, func(w io.Writer) {
					fmt.Fprintln(w, "ID\tADDRESS\tVOTER\tLEADER")
					for _, p := range ps {
						fmt.Fprintf(w, "%s\t%s\t%v\t%v\n", p.ID, p.Address, p.Voter, p.Leader)
					}
				})
			}, 0),
			raftRecoverCommand(),
			leaf("remove-peer", "remove a server from the Raft configuration (a dead one that will not come back)", "ID", func(c *cli.Context, cl *client, args []string) error {
				var out map[string]string
				if err := cl.do("DELETE", "/v1/raft/peers/"+url.PathEscape(args[0]), nil, &out); err != nil {
					return err
				}
				return cl.print(out, func(w io.Writer) { fmt.Fprintf(w, "removed %s\n", args[0]) })
			}, 1),
		},
	}
}

func leaveCommand() *cli.Command {
	return leaf("leave", "take the server at --addr out of the cluster at once; it stops", "", func(c *cli.Context, cl *client, _ []string) error {
		fmt.Fprintf(os.Stderr, "asking %s to leave the cluster...\n", cl.base)
		var out map[string]string
		if err := cl.do("POST", "/v1/leave", nil, &out); err != nil {
			return err
		}
		return cl.print(out, func(w io.Writer) { fmt.Fprintf(w, "%s left the cluster\n", out["left"]) })
	}, 0)
}

func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save the cluster's state to a checksummed file, look inside one offline, or replace the state from one",
		Subcommands: []*cli.Command{
			leaf("save", "save the state of the server at --addr (a Raft snapshot as of its applied index) to FILE", "FILE", func(c *cli.Context, cl *client, args []string) error {
				cl.http.Timeout = time.Hour // a large state takes a while
				resp, err := cl.raw("GET", "/v1/snapshot", nil)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				var info *fsm.SnapshotInfo
				var size int64
				// The file is checked as it arrives and kept only if it
				// passes: its checksum, and a state that decodes.
				err = atomicfile.Write(args[0], 0o600, func(w io.Writer) error {
					cw := &countWriter{w: w}
					var err error
					info, err = fsm.InspectSnapshot(io.TeeReader(&progress{r: resp.Body, total: resp.ContentLength}, cw))
					size = cw.n
					return err
				})
				if err != nil {
					return fmt.Errorf("saving the snapshot to %s: %w (no file written)", args[0], err)
				}
				fmt.Fprintf(os.Stderr, "\rsaved %d bytes at raft index %d, term %d, sha256 %s to %s\n", size, info.Index, info.Term, info.SHA256, args[0])
				return nil
			}, 1),
			leaf("inspect", "offline: a snapshot file's index, term, time, size, checksum, and the tenants, plans, tokens (accessors) and open sessions it holds", "FILE", func(c *cli.Context, cl *client, args []string) error {
				info, err := inspectFile(args[0])
				if info != nil {
					if perr := cl.print(info, func(w io.Writer) { printSnapshotInfo(w, args[0], info) }); perr != nil {
						return perr
					}
				}
				return err
			}, 1),
			leaf("restore", "replace the whole cluster's state with a snapshot file (refused, changing nothing, unless it passes its checksum)", "FILE", func(c *cli.Context, cl *client, args []string) error {
				info, err := inspectFile(args[0])
				if err != nil {
					return fmt.Errorf("refused, nothing changed: %w", err)
				}
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				cl.http.Timeout = time.Hour
				resp, err := cl.raw("PUT", "/v1/snapshot", &progress{r: f, total: st.Size()})
				if err != nil {
					return err
				}
				resp.Body.Close()
				fmt.Fprintf(os.Stderr, "\rrestored %d bytes from %s (raft index %d of the cluster it was saved from, checksum %s)\n", st.Size(), args[0], info.Index, info.Checksum)
				return nil
			}, 1),
		},
	}
}

// inspectFile reads a snapshot file offline; a damaged one is an error
// naming the file.
func inspectFile(path string) (*fsm.SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := fsm.InspectSnapshot(f)
	if err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

func printSnapshotInfo(w io.Writer, path string, info *fsm.SnapshotInfo) {
	fmt.Fprintf(w, "file:\t%s\n", path)
	fmt.Fprintf(w, "format:\t%s\n", info.Format)
	fmt.Fprintf(w, "index:\t%d\n", info.Index)
	fmt.Fprintf(w, "term:\t%d\n", info.Term)
	if info.Time != "" {
		fmt.Fprintf(w, "time:\t%s (by %s)\n", info.Time, info.Server)
	}
	fmt.Fprintf(w, "state:\t%d bytes\n", info.StateBytes)
	fmt.Fprintf(w, "checksum:\t%s %s\n", info.Checksum, info.SHA256)
	if len(info.Configuration) > 0 {
		fmt.Fprintf(w, "raft servers:\t%s\n", describeServers(info.Configuration))
	}
	fmt.Fprintf(w, "holds:\t%d tenants, %d plans, %d tokens, %d agents, %d open sessions\n",
		info.Counts.Tenants, info.Counts.Plans, info.Counts.Tokens, info.Counts.Agents, info.Counts.OpenSessions)
	if len(info.Plans) > 0 {
		fmt.Fprintln(w, "\nPLAN\tMODE\tCEILING\tTENANTS")
		for _, p := range info.Plans {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", p.Name, p.Mode, p.Ceiling, p.Tenants)
		}
	}
	if len(info.Tenants) > 0 {
		fmt.Fprintln(w, "\nTENANT\tPLAN\tOPEN SESSIONS\tSUSPENDED")
		for _, t := range info.Tenants {
			fmt.Fprintf(w, "%s\t%s\t%d\t%v\n", t.Tenant, t.Plan, t.OpenSessions, t.Suspended)
		}
	}
	if len(info.Tokens) > 0 {
		fmt.Fprintln(w, "\nTOKEN ACCESSOR\tROLE\tTENANT")
		for _, t := range info.Tokens {
			fmt.Fprintf(w, "%s\t%s\t%s\n", t.Accessor, t.Role, t.Tenant)
		}
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progress prints how much of a long transfer is done.
type progress struct {
	r     io.Reader
	total int64
	done  int64
	shown int64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.done-p.shown >= 4<<20 {
		p.shown = p.done
		if p.total > 0 {
			fmt.Fprintf(os.Stderr, "\r%d / %d MiB", p.done>>20, p.total>>20)
		} else {
			fmt.Fprintf(os.Stderr, "\r%d MiB", p.done>>20)
		}
	}
	return n, err
}
