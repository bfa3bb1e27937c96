package main

import (
	"fmt"
	"io"
	"net/url"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
	"github.com/headroom-rtc/headroom/plans"
)

func periodQuery(c *cli.Context) string {
	if p := c.String("period"); p != "" {
		return "?period=" + url.QueryEscape(p)
	}
	return ""
}

func periodFlag() cli.Flag {
	return &cli.StringFlag{Name: "period", Usage: "billing period YYYY-MM (default: the current one)"}
}

func usageCommand() *cli.Command {
	return leaf("usage", "a tenant's usage of a period, day by day, and its cost line by line", "[--period YYYY-MM] TENANT", func(c *cli.Context, cl *client, args []string) error {
		var u aggregator.UsageReportJSON
		if err := cl.do("GET", "/v1/tenants/"+url.PathEscape(args[0])+"/usage"+periodQuery(c), nil, &u); err != nil {
			return err
		}
		return cl.print(u, func(w io.Writer) {
			fmt.Fprintf(w, "%s, %s: %.1f unit-minutes, peak %d\n\n", u.Tenant, u.Period, u.UnitMinutes, u.PCU)
			fmt.Fprintln(w, "DAY\tPEAK\tMINUTES\tREFUSED")
			for _, d := range u.Days {
				var secs float64
				for _, v := range d.SecondsByClass {
					secs += v
				}
				fmt.Fprintf(w, "%s\t%d\t%.1f\t%d\n", d.Date, d.Peak, secs/60, d.Refused)
			}
			fmt.Fprintln(w)
			if u.Invoice == nil {
				fmt.Fprintf(w, "no invoice: %s\n", u.InvoiceError)
				return
			}
			fmt.Fprintln(w, "LINE\tPLAN\tCLASS\tQUANTITY\tAMOUNT\tDETAIL")
			for _, l := range u.Invoice.Lines {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d %s\t%s\t%s\n", l.Kind, l.Plan, l.Class, l.Quantity, l.Unit, plans.FormatMicro(l.Amount), l.Detail)
			}
			fmt.Fprintf(w, "total\t\t\t\t%s\t\n", plans.FormatMicro(u.Invoice.Total))
		})
	}, 1, periodFlag())
}

func adviseCommand() *cli.Command {
	return leaf("advise", "does the tenant's plan fit? every plan's cost and fit, and the cheapest that fits", "[--period YYYY-MM] TENANT", func(c *cli.Context, cl *client, args []string) error {
		var a plans.Advice
		if err := cl.do("GET", "/v1/tenants/"+url.PathEscape(args[0])+"/advice"+periodQuery(c), nil, &a); err != nil {
			return err
		}
		return cl.print(a, func(w io.Writer) {
			fmt.Fprintf(w, "%s: on %s, recommended %s (%s", a.Period, a.Current, a.Recommended, a.Move)
			if a.Effective != "" {
				fmt.Fprintf(w, ", %s", a.Effective)
			}
			fmt.Fprintln(w, ")")
			for _, r := range a.Reasons {
				fmt.Fprintf(w, "  - %s\n", r)
			}
			fmt.Fprintln(w, "\nPLAN\tCEILING\tNEED\tFITS\tUTILIZATION\tCOST SO FAR\tPROJECTED")
			for _, o := range a.Options {
				fmt.Fprintf(w, "%s\t%d\t%d\t%v\t%.0f%%\t%s\t%s\n", o.Plan, o.Ceiling, o.Need, o.Fits, o.UtilizationPct, plans.FormatMicro(o.Cost), plans.FormatMicro(o.Projected))
			}
			for _, b := range a.BreakEven {
				if b.Never {
					fmt.Fprintf(w, "%s is never cheaper than %s at this class mix\n", b.Package, b.Payg)
				} else {
					fmt.Fprintf(w, "%s is cheaper than %s above %d minutes a month\n", b.Package, b.Payg, b.Minutes)
				}
			}
		})
	}, 1, periodFlag())
}
