package main

import (
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
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
		var u fsm.UsageReportJSON
		if err := cl.do("GET", "/v1/tenants/"+url.PathEscape(args[0])+"/usage"+periodQuery(c), nil, &u); err != nil {
			return err
		}
		return cl.print(u, func(w io.Writer) {
			fmt.Fprintf(w, "%s, %s: %.1f unit-minutes, peak %d\n", u.Tenant, u.Period, u.UnitMinutes, u.PCU)
			state := "open, closes " + u.ClosesAt
			if u.Closed {
				state = "closed: final"
			}
			fmt.Fprintf(w, "period\t%s\n", state)
			fmt.Fprintf(w, "peak basis\t%s: %d (global %d, sum of regional peaks %d)\n", u.PeakBasis, u.PlanPCU, u.PCU, u.RegionalPCU)
			fmt.Fprintf(w, "active users\tMAU %d, peak DAU %d, today %d\n", u.MAU, u.PeakDAU, u.DAU)
			fmt.Fprintf(w, "at or over the ceiling\t%s\n", (time.Duration(u.SecondsOverCeiling * float64(time.Second))).Round(time.Second))
			fmt.Fprintf(w, "late batches\t%d (%.1f session-minutes cut in a closed period)\n", u.LateBatches, u.LateSeconds/60)
			if m := classList(u.SessionMinutesByClass); m != "" {
				fmt.Fprintf(w, "ended sessions, minutes rounded up each\t%s\n", m)
			}
			if len(u.Regions) > 0 {
				fmt.Fprintln(w, "\nREGION\tPEAK\tMINUTES\tUNIT-MINUTES")
				for _, r := range u.Regions {
					name := r.Region
					if name == "" {
						name = "(none)"
					}
					fmt.Fprintf(w, "%s\t%d\t%.1f\t%.1f\n", name, r.PCU, sumSeconds(r.SecondsByClass)/60, r.UnitMinutes)
				}
			}
			fmt.Fprintln(w, "\nDAY\tPEAK\tREGIONAL PEAKS\tMINUTES\tREFUSED\tDAU")
			for _, d := range u.Days {
				fmt.Fprintf(w, "%s\t%d\t%d\t%.1f\t%d\t%d\n", d.Date, d.Peak, d.RegionalPeak, sumSeconds(d.SecondsByClass)/60, d.Refused, d.DAU)
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

func sumSeconds(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
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
