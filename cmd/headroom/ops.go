package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
)

func membersCommand() *cli.Command {
	return leaf("members", "the servers as gossip sees them", "", func(c *cli.Context, cl *client, _ []string) error {
		var ms []aggregator.MemberJSON
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
				var ps []aggregator.PeerJSON
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
		Usage: "save the cluster's state to a file, or replace it from one",
		Subcommands: []*cli.Command{
			leaf("save", "save the state of the server at --addr (as of its applied index)", "FILE", func(c *cli.Context, cl *client, args []string) error {
				cl.http.Timeout = time.Hour // a large state takes a while
				resp, err := cl.raw("GET", "/v1/snapshot", nil)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				dir := filepath.Dir(args[0])
				tmp, err := os.CreateTemp(dir, ".snapshot-*")
				if err != nil {
					return err
				}
				defer os.Remove(tmp.Name())
				n, err := io.Copy(tmp, &progress{r: resp.Body, total: resp.ContentLength})
				if err == nil {
					err = tmp.Sync()
				}
				if cerr := tmp.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return fmt.Errorf("saving the snapshot: %w", err)
				}
				if err := os.Rename(tmp.Name(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "\rsaved %d bytes at raft index %s to %s\n", n, resp.Header.Get("X-Headroom-Index"), args[0])
				return nil
			}, 1),
			leaf("restore", "replace the whole cluster's state with a saved snapshot", "FILE", func(c *cli.Context, cl *client, args []string) error {
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
				fmt.Fprintf(os.Stderr, "\rrestored %d bytes from %s\n", st.Size(), args[0])
				return nil
			}, 1),
		},
	}
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
