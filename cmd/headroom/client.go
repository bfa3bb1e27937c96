package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator/api"
	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/plans"
)

// operatorName names who runs the CLI, for the audit log: user@host.
func operatorName() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

// clientFlags are accepted both before the subcommand and on each leaf
// command; a fresh set each time, so each command owns its flag values.
func clientFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:9370", Usage: "aggregator HTTP address", EnvVars: []string{"HEADROOM_ADDR"}},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
		&cli.StringFlag{Name: "token", Usage: "secret of an ACL token, sent as a Bearer token", EnvVars: []string{"HEADROOM_TOKEN"}},
	}, clientTLSFlags()...)
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
	token  string // Bearer secret, if any
	http   *http.Client
}

func newClient(c *cli.Context) (*client, error) {
	out := flagValue(c, "output")
	if out != "table" && out != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", out)
	}
	tr, https, err := clientTransport(c)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	addr := flagValue(c, "addr")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
		if https {
			addr = "https://" + flagValue(c, "addr")
		}
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--addr %q: want host:port or a URL", flagValue(c, "addr"))
	}
	return &client{token: flagValue(c, "token"), base: strings.TrimRight(addr, "/"), output: out, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}, nil
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
	if cl.token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Headroom-Operator", operatorName())
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
	if resp.StatusCode == http.StatusBadRequest && bytes.Contains(data, []byte("HTTP request to an HTTPS server")) {
		return nil, fmt.Errorf("the aggregator at %s speaks HTTPS: give --tls-ca (env HEADROOM_CACERT), and a client certificate if it asks for one", cl.base)
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
				var ts []fsm.TenantJSON
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
				var t fsm.TenantJSON
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
					for _, g := range t.Grants {
						fmt.Fprintf(w, "leased %s\t%d / %d to %d agents\t%d free\n", g.Pool, g.Leased, g.Ceiling, len(g.Agents), g.Free)
					}
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
			leaf("set-plan", "put a tenant on a plan (creates the tenant if absent); an upgrade defaults to now, a downgrade to the period's end",
				"[--at now|period-end|RFC3339] TENANT PLAN", func(c *cli.Context, cl *client, args []string) error {
					var t fsm.TenantJSON
					body := map[string]string{"plan": args[1], "at": c.String("at")}
					if err := cl.do("PUT", "/v1/tenants/"+url.PathEscape(args[0])+"/plan", body, &t); err != nil {
						return err
					}
					return cl.print(t, func(w io.Writer) {
						if sc := t.Scheduled; sc != nil && sc.Plan == args[1] {
							fmt.Fprintf(w, "%s stays on %s until %s, then moves to %s (change %d; cancel with: headroom tenant cancel %s)\n", t.Tenant, t.Plan, sc.At, sc.Plan, sc.ID, t.Tenant)
							return
						}
						fmt.Fprintf(w, "%s is now on %s (ceiling %d, %s)\n", t.Tenant, t.Plan, t.Ceiling, t.Mode)
					})
				}, 2, &cli.StringFlag{Name: "at", Usage: "now, period-end or an RFC 3339 time (default: now for an upgrade, period-end for a downgrade)"}),
			leaf("schedule", "show a tenant's scheduled plan change", "TENANT", func(c *cli.Context, cl *client, args []string) error {
				var ss []fsm.ScheduledJSON
				if err := cl.do("GET", "/v1/tenants/"+url.PathEscape(args[0])+"/schedule", nil, &ss); err != nil {
					return err
				}
				return cl.print(ss, func(w io.Writer) {
					fmt.Fprintln(w, "ID\tPLAN\tAT\tSCHEDULED\tBY")
					for _, s := range ss {
						fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", s.ID, s.Plan, s.At, s.Created, s.Operator)
					}
				})
			}, 1),
			leaf("cancel", "cancel a tenant's scheduled plan change", "[--id N] TENANT", func(c *cli.Context, cl *client, args []string) error {
				path := "/v1/tenants/" + url.PathEscape(args[0]) + "/schedule"
				if id := c.Uint64("id"); id != 0 {
					path += fmt.Sprintf("?id=%d", id)
				}
				var t fsm.TenantJSON
				if err := cl.do("DELETE", path, nil, &t); err != nil {
					return err
				}
				return cl.print(t, func(w io.Writer) { fmt.Fprintf(w, "cancelled; %s stays on %s\n", t.Tenant, t.Plan) })
			}, 1, &cli.Uint64Flag{Name: "id", Usage: "the change's id (default: whatever is pending)"}),
			tenantOp("suspend", "refuse a tenant's new sessions (running ones go on)", "POST", "/suspend"),
			tenantOp("resume", "admit a suspended tenant's sessions again", "POST", "/resume"),
			tenantOp("delete", "delete a tenant (refused while it has open sessions or unbilled usage)", "DELETE", ""),
		},
	}
}

func tenantOp(name, usage, method, suffix string) *cli.Command {
	return leaf(name, usage, "TENANT", func(c *cli.Context, cl *client, args []string) error {
		var out map[string]any
		if err := cl.do(method, "/v1/tenants/"+url.PathEscape(args[0])+suffix, nil, &out); err != nil {
			return err
		}
		return cl.print(out, func(w io.Writer) { fmt.Fprintf(w, "%s: %s done\n", args[0], name) })
	}, 1)
}

func auditCommand() *cli.Command {
	return leaf("audit", "every change of plans and tenants, newest first", "[--tenant T] [--limit N]", func(c *cli.Context, cl *client, _ []string) error {
		q := url.Values{}
		if t := c.String("tenant"); t != "" {
			q.Set("tenant", t)
		}
		if n := c.Int("limit"); n > 0 {
			q.Set("limit", fmt.Sprint(n))
		}
		var es []api.AuditJSON
		if err := cl.do("GET", "/v1/audit?"+q.Encode(), nil, &es); err != nil {
			return err
		}
		return cl.print(es, func(w io.Writer) {
			fmt.Fprintln(w, "TIME\tTENANT\tCHANGE\tOPERATOR\tBEFORE\tAFTER")
			for _, e := range es {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time, e.Tenant, e.Kind, e.Operator, e.Before, e.After)
			}
		})
	}, 0, &cli.StringFlag{Name: "tenant", Usage: "only this tenant's changes"}, &cli.IntFlag{Name: "limit", Usage: "at most this many entries (default 1000)"})
}

// planFlags set a plan's terms; update changes only the flags given.
func planFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "billing", Usage: "payg or package"},
		&cli.StringFlag{Name: "fee", Usage: "monthly fee, e.g. 1499 or 199.00"},
		&cli.Uint64Flag{Name: "ceiling", Usage: "most concurrent sessions (0 with --mode meter)"},
		&cli.StringFlag{Name: "mode", Usage: "strict, soft or meter"},
		&cli.UintFlag{Name: "burst", Usage: "how far above the ceiling a soft plan admits, in percent"},
		&cli.Uint64Flag{Name: "included", Usage: "unit-minutes included in the fee"},
		&cli.StringFlag{Name: "overage", Usage: "price per 1,000 unit-minutes beyond the included ones"},
		&cli.Uint64Flag{Name: "included-mau", Usage: "monthly active users included in the fee (IM-style plans)"},
		&cli.StringFlag{Name: "overage-per-mau", Usage: "price of each monthly active user beyond the included ones"},
	}
}

func applyPlanFlags(c *cli.Context, p *plans.Plan) error {
	if c.IsSet("billing") {
		p.Billing = plans.Billing(c.String("billing"))
	}
	for _, m := range []struct {
		flag string
		to   *plans.Micro
	}{{"fee", &p.FeeMonthly}, {"overage", &p.OveragePer1000}, {"overage-per-mau", &p.OveragePerMAU}} {
		if c.IsSet(m.flag) {
			v, err := plans.ParseMicro(c.String(m.flag))
			if err != nil {
				return fmt.Errorf("--%s: %w", m.flag, err)
			}
			*m.to = v
		}
	}
	if c.IsSet("ceiling") {
		p.Ceiling = c.Uint64("ceiling")
	}
	if c.IsSet("mode") {
		p.Mode = plans.Mode(c.String("mode"))
	}
	if c.IsSet("burst") {
		p.BurstPct = uint32(c.Uint("burst"))
	}
	if c.IsSet("included") {
		p.IncludedUnitMinutes = c.Uint64("included")
	}
	if c.IsSet("included-mau") {
		p.IncludedMAU = c.Uint64("included-mau")
	}
	return p.Validate()
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
			leaf("show", "show one plan", "PLAN", func(c *cli.Context, cl *client, args []string) error {
				var p plans.Plan
				if err := cl.do("GET", "/v1/plans/"+url.PathEscape(args[0]), nil, &p); err != nil {
					return err
				}
				return cl.print(p, func(w io.Writer) {
					fmt.Fprintf(w, "plan\t%s\nbilling\t%s\nfee/month\t%s\nceiling\t%d\nmode\t%s\nburst\t%d%%\nincluded unit-minutes\t%d\noverage/1000\t%s\n",
						p.Name, p.Normalized().Billing, money(p.FeeMonthly), p.Ceiling, p.Mode, p.BurstPct, p.IncludedUnitMinutes, money(p.OveragePer1000))
					if p.PricesUsers() {
						fmt.Fprintf(w, "included MAU\t%d\noverage/MAU\t%s\n", p.IncludedMAU, money(p.OveragePerMAU))
					}
				})
			}, 1),
			leaf("create", "add a plan to the catalogue", "--fee F --ceiling N --mode M [...] PLAN", func(c *cli.Context, cl *client, args []string) error {
				p := plans.Plan{Name: args[0]}
				if err := applyPlanFlags(c, &p); err != nil {
					return err
				}
				if err := cl.do("POST", "/v1/plans", p, &p); err != nil {
					return err
				}
				return cl.print(p, func(w io.Writer) { fmt.Fprintf(w, "created %s\n", p.Name) })
			}, 1, planFlags()...),
			leaf("update", "change a plan's terms (only the flags given); tenants on it follow at once", "[--fee F] [--ceiling N] [...] PLAN", func(c *cli.Context, cl *client, args []string) error {
				var p plans.Plan
				if err := cl.do("GET", "/v1/plans/"+url.PathEscape(args[0]), nil, &p); err != nil {
					return err
				}
				if err := applyPlanFlags(c, &p); err != nil {
					return err
				}
				if err := cl.do("PUT", "/v1/plans/"+url.PathEscape(args[0]), p, &p); err != nil {
					return err
				}
				return cl.print(p, func(w io.Writer) { fmt.Fprintf(w, "updated %s\n", p.Name) })
			}, 1, planFlags()...),
			leaf("delete", "remove a plan no tenant uses", "PLAN", func(c *cli.Context, cl *client, args []string) error {
				var out map[string]string
				if err := cl.do("DELETE", "/v1/plans/"+url.PathEscape(args[0]), nil, &out); err != nil {
					return err
				}
				return cl.print(out, func(w io.Writer) { fmt.Fprintf(w, "deleted %s\n", args[0]) })
			}, 1),
		},
	}
}

func money(m plans.Micro) string { return fmt.Sprintf("%.2f", float64(m)/1e6) }
