package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/cluster"
)

func keyringCommand() *cli.Command {
	change := func(op cluster.KeyringOp, usage string) *cli.Command {
		return leaf(string(op), usage, "KEY", func(c *cli.Context, cl *client, args []string) error {
			key, err := cluster.ParseGossipKey(args[0])
			if err != nil {
				return err
			}
			var res cluster.KeyringResult
			body := map[string]string{"op": string(op), "key": base64.StdEncoding.EncodeToString(key)}
			if err := cl.do("POST", cluster.KeyringPath, body, &res); err != nil {
				return err
			}
			return cl.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "%s done on %d servers\n", op, len(res.Servers))
				printKeyrings(w, res)
			})
		}, 1)
	}
	return &cli.Command{
		Name:  "keyring",
		Usage: "the gossip encryption keys of every server (rotate: install NEW, use NEW, remove OLD)",
		Subcommands: []*cli.Command{
			{
				Name:  "generate",
				Usage: "print a new random key (32 bytes, base64) for --gossip-key or keyring install",
				Action: func(c *cli.Context) error {
					if _, err := positional(c, 0); err != nil {
						return err
					}
					k := make([]byte, 32)
					if _, err := rand.Read(k); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, base64.StdEncoding.EncodeToString(k))
					return nil
				},
			},
			leaf("list", "every server's keys and primary key", "", func(c *cli.Context, cl *client, _ []string) error {
				var res cluster.KeyringResult
				if err := cl.do("GET", cluster.KeyringPath, nil, &res); err != nil {
					return err
				}
				return cl.print(res, func(w io.Writer) { printKeyrings(w, res) })
			}, 0),
			change(cluster.KeyringInstall, "add a key to every server's keyring (they decrypt with it)"),
			change(cluster.KeyringUse, "make an installed key every server's primary (they encrypt with it); refused unless every server holds it"),
			change(cluster.KeyringRemove, "remove a key from every server's keyring; refused while a server uses it as its primary"),
		},
	}
}

// printKeyrings shows each key with the servers that hold it and use it.
func printKeyrings(w io.Writer, res cluster.KeyringResult) {
	type use struct{ installed, primary []string }
	keys := map[string]*use{}
	for _, s := range res.Servers {
		for _, k := range s.Keys {
			if keys[k] == nil {
				keys[k] = &use{}
			}
			keys[k].installed = append(keys[k].installed, s.ID)
			if k == s.Primary {
				keys[k].primary = append(keys[k].primary, s.ID)
			}
		}
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "KEY\tINSTALLED\tPRIMARY ON")
	for _, k := range names {
		u := keys[k]
		fmt.Fprintf(w, "%s\t%d/%d\t%s\n", k, len(u.installed), len(res.Servers), strings.Join(u.primary, ","))
	}
	for _, s := range res.Servers {
		if s.Error != "" {
			fmt.Fprintf(w, "%s\terror: %s\n", s.ID, s.Error)
		}
	}
}
