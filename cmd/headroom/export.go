package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "figures for billing systems and finance",
		Subcommands: []*cli.Command{
			leaf("invoices", "every tenant's invoice lines of a period (the same lines and amounts as `headroom usage`), CSV with a header row or JSON, to standard output",
				"[--period YYYY-MM] [--format csv|json]", func(c *cli.Context, cl *client, _ []string) error {
					format := c.String("format")
					if format == "" {
						format = "csv"
						if cl.output == "json" {
							format = "json"
						}
					}
					if format != "csv" && format != "json" {
						return fmt.Errorf("--format %q: want csv or json", format)
					}
					q := url.Values{"format": {format}}
					if p := c.String("period"); p != "" {
						q.Set("period", p)
					}
					cl.http.Timeout = time.Hour // every tenant: a large export takes a while
					resp, err := cl.raw("GET", "/v1/export/invoices?"+q.Encode(), nil)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
						return fmt.Errorf("reading the export: %w", err)
					}
					if resp.Header.Get("X-Headroom-Period-Closed") == "false" {
						fmt.Fprintln(os.Stderr, "note: the period is not closed yet: its invoices can still change (headroom usage says when it closes)")
					}
					return nil
				}, 0, periodFlag(), &cli.StringFlag{Name: "format", Usage: "csv or json (default csv; json with -o json)"}),
		},
	}
}
