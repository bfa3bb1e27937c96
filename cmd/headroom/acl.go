package main

import (
	"fmt"
	"io"
	"net/url"

	"github.com/headroom-rtc/headroom/aggregator/api"
	"github.com/urfave/cli/v2"
)

// ACL commands: bootstrap the first operator token, then create, list and
// revoke tokens. Secrets are printed once, when created.

func aclCommand() *cli.Command {
	return &cli.Command{
		Name:  "acl",
		Usage: "access control",
		Subcommands: []*cli.Command{
			leaf("bootstrap", "create the first operator token (once per cluster) and print its secret", "", func(c *cli.Context, cl *client, _ []string) error {
				var tk api.TokenJSON
				if err := cl.do("POST", "/v1/acl/bootstrap", nil, &tk); err != nil {
					return err
				}
				return printToken(cl, tk)
			}, 0),
		},
	}
}

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "create, list and revoke ACL tokens",
		Subcommands: []*cli.Command{
			leaf("create", "create a token and print its secret (shown only now)", "--role operator|reader|tenant|agent [--tenant T] [--description D]", func(c *cli.Context, cl *client, _ []string) error {
				body := map[string]string{"role": c.String("role"), "tenant": c.String("tenant"), "description": c.String("description")}
				var tk api.TokenJSON
				if err := cl.do("POST", "/v1/tokens", body, &tk); err != nil {
					return err
				}
				return printToken(cl, tk)
			}, 0,
				&cli.StringFlag{Name: "role", Required: true, Usage: "operator (everything), reader (every read and the dashboard), tenant (one tenant's figures), agent (agent streams)"},
				&cli.StringFlag{Name: "tenant", Usage: "the tenant a tenant token reads"},
				&cli.StringFlag{Name: "description", Usage: "what the token is for"}),
			leaf("list", "list tokens (accessors, never secrets)", "", func(c *cli.Context, cl *client, _ []string) error {
				var ts []api.TokenJSON
				if err := cl.do("GET", "/v1/tokens", nil, &ts); err != nil {
					return err
				}
				return cl.print(ts, func(w io.Writer) {
					fmt.Fprintln(w, "ACCESSOR\tROLE\tTENANT\tCREATED\tDESCRIPTION")
					for _, t := range ts {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Accessor, t.Role, t.Tenant, t.Created, t.Description)
					}
				})
			}, 0),
			leaf("revoke", "revoke a token by its accessor", "ACCESSOR", func(c *cli.Context, cl *client, args []string) error {
				if err := cl.do("DELETE", "/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
					return err
				}
				return cl.print(map[string]string{"revoked": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "revoked\t%s\n", args[0]) })
			}, 1),
		},
	}
}

// printToken prints a new token: with -o json {"accessor","secret",...}.
func printToken(cl *client, tk api.TokenJSON) error {
	return cl.print(tk, func(w io.Writer) {
		fmt.Fprintf(w, "accessor\t%s\nsecret\t%s\nrole\t%s\n", tk.Accessor, tk.Secret, tk.Role)
		if tk.Tenant != "" {
			fmt.Fprintf(w, "tenant\t%s\n", tk.Tenant)
		}
	})
}
