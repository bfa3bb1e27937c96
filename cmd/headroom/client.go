package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
	"github.com/headroom-rtc/headroom/plans"
)

// clientFlags are accepted both before the subcommand and on each leaf
// command; a fresh set each time, so each command owns its flag values.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:9370", Usage: "aggregator HTTP address", EnvVars: []string{"HEADROOM_ADDR"}},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
	}
}

// flagValue returns a client flag from the nearest command that set it
// (leaf first), or its default.
func flagValue(c *cli.Context, name string) string {
	for _, x := range c.Lineage() {
		if x.Command != nil && x.IsSet(name) {
			return x.String(name)
		}
	}
	for _, x := range c.Lineage() {
		if x.IsSet(name) {
			return x.String(name)
		}
	}
	return c.String(name)
}

type client struct {
	base   string
	output string
	http   *http.Client
}

func newClient(c *cli.Context) (*client, error) {
	out := flagValue(c, "output")
	if out != "table" && out != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", out)
	}
	addr := flagValue(c, "addr")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--addr %q: want host:port or a URL", flagValue(c, "addr"))
	}
	return &client{base: strings.TrimRight(addr, "/"), output: out, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// do sends a request and decodes a JSON answer into out (if not nil); a
// non-2xx answer becomes an error carrying the server's message.
func (cl *client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := cl.raw(method, path, rd)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}

// raw sends a request and returns a 2xx answer for the caller to read and
// close; any other answer becomes an error carrying the server's message.
func (cl *client) raw(method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, cl.base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if u, err := os.Hostname(); err == nil {
		req.Header.Set("X-Headroom-Operator", os.Getenv("USER")+"@"+u)
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the aggregator at %s: %w", cl.base, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
	}
	return nil, fmt.Errorf("HTTP %d from %s %s", resp.StatusCode, method, path)
}

// print writes v as JSON, or calls table with a tab writer.
func (cl *client) print(v any, table func(w io.Writer)) error {
	if cl.output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func leaf(name, usage, argsUsage string, action func(*cli.Context, *client, []string) error, nargs int, extra ...cli.Flag) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: argsUsage, Flags: append(clientFlags(), extra...),
		Action: func(c *cli.Context) error {
			args, err := positional(c, nargs)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			return action(c, cl, args)
		},
	}
}

func classList(m map[string]uint64) string {
	var parts []string
	for _, c := range plans.AllClasses {
		if v := m[c.String()]; v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", c, v))
		}
	}
	return strings.Join(parts, " ")
}

func tenantCommand() *cli.Command {
	return &cli.Command{
		Name:  "tenant",
		Usage: "list tenants, show one, put one on a plan",
		Subcommands: []*cli.Command{
			leaf("list", "list every tenant with its concurrency against its ceiling", "", func(c *cli.Context, cl *client, _ []string) error {
				var ts []aggregator.TenantJSON
				if err := cl.do("GET", "/v1/tenants", nil, &ts); err != nil {
					return err
				}
				return cl.print(ts, func(w io.Writer) {
					fmt.Fprintln(w, "TENANT\tPLAN\tMODE\tCONCURRENCY\tCEILING\tBY CLASS")
					for _, t := range ts {
						fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", t.Tenant, t.Plan, t.Mode, t.Concurrency.Total, t.Ceiling, classList(t.Concurrency.ByClass))
					}
				})
			}, 0),
			leaf("show", "show a tenant's figures and usage this period", "[--period YYYY-MM] TENANT", func(c *cli.Context, cl *client, args []string) error {
				var t aggregator.TenantJSON
				path := "/v1/tenants/" + url.PathEscape(args[0])
				if p := c.String("period"); p != "" {
					path += "?period=" + url.QueryEscape(p)
				}
				if err := cl.do("GET", path, nil, &t); err != nil {
					return err
				}
				return cl.print(t, func(w io.Writer) {
					fmt.Fprintf(w, "tenant\t%s\n", t.Tenant)
					fmt.Fprintf(w, "plan\t%s (%s)\n", t.Plan, t.Mode)
					fmt.Fprintf(w, "concurrency\t%d / %d\t%s\n", t.Concurrency.Total, t.Ceiling, classList(t.Concurrency.ByClass))
					if u := t.Usage; u != nil {
						fmt.Fprintf(w, "period\t%s\n", u.Period)
						fmt.Fprintf(w, "unit-minutes\t%.1f\n", u.UnitMinutes)
						fmt.Fprintf(w, "pcu\t%d\t%s\n", u.PCU, classList(u.PCUByClass))
						keys := make([]string, 0, len(u.SecondsByClass))
						for k, v := range u.SecondsByClass {
							if v > 0 {
								keys = append(keys, k)
							}
						}
						sort.Strings(keys)
						for _, k := range keys {
							fmt.Fprintf(w, "minutes %s\t%.1f\n", k, u.SecondsByClass[k]/60)
						}
						if r := classList(u.RefusedByClass); r != "" {
							fmt.Fprintf(w, "refused\t%s\n", r)
						}
					}
				})
			}, 1, &cli.StringFlag{Name: "period", Usage: "billing period YYYY-MM (default: the current one)"}),
			leaf("set-plan", "put a tenant on a plan (creates the tenant if absent)", "TENANT PLAN", func(c *cli.Context, cl *client, args []string) error {
				var t aggregator.TenantJSON
				if err := cl.do("PUT", "/v1/tenants/"+url.PathEscape(args[0])+"/plan", map[string]string{"plan": args[1]}, &t); err != nil {
					return err
				}
				return cl.print(t, func(w io.Writer) {
					fmt.Fprintf(w, "%s is now on %s (ceiling %d, %s)\n", t.Tenant, t.Plan, t.Ceiling, t.Mode)
				})
			}, 2),
		},
	}
}

func planCommand() *cli.Command {
	return &cli.Command{
		Name:  "plan",
		Usage: "the plan catalogue",
		Subcommands: []*cli.Command{
			leaf("list", "list the plans", "", func(c *cli.Context, cl *client, _ []string) error {
				var ps []plans.Plan
				if err := cl.do("GET", "/v1/plans", nil, &ps); err != nil {
					return err
				}
				return cl.print(ps, func(w io.Writer) {
					fmt.Fprintln(w, "PLAN\tFEE/MONTH\tCEILING\tMODE\tINCLUDED UNIT-MIN\tOVERAGE/1000")
					for _, p := range ps {
						mode := string(p.Mode)
						if p.BurstPct > 0 {
							mode += fmt.Sprintf(" +%d%%", p.BurstPct)
						}
						fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%s\n", p.Name, money(p.FeeMonthly), p.Ceiling, mode, p.IncludedUnitMinutes, money(p.OveragePer1000))
					}
				})
			}, 0),
		},
	}
}

func money(m plans.Micro) string { return fmt.Sprintf("%.2f", float64(m)/1e6) }
