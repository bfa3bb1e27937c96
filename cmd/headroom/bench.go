package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/internal/loadgen"
)

// benchCommand is a load generator an operator points at an agent of their
// own: N workers open and close sessions through its local HTTP API.
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load an agent's local HTTP API: N workers open and close sessions; sessions/s and admit latency",
		UsageText: "headroom bench [--agent HOST:PORT] --tenant T [--class C] [--workers N] [--duration D | --ops N]\n" +
			"   headroom bench --agent 127.0.0.1:9380 --tenant loadtest --workers 16 --duration 30s\n\n" +
			"The sessions are real: they count against the tenant's ceiling and are metered like any\n" +
			"other. Point it at a tenant kept for load tests, on a plan whose ceiling fits --workers × --sessions.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Value: "127.0.0.1:9380", Usage: "the agent's --api-addr (host:port or http://host:port)", EnvVars: []string{"HEADROOM_AGENT_ADDR"}},
			&cli.StringFlag{Name: "tenant", Usage: "tenant of the sessions", Required: true},
			&cli.StringFlag{Name: "class", Value: "audio", Usage: "class of the sessions"},
			&cli.IntFlag{Name: "workers", Aliases: []string{"n"}, Value: 16, Usage: "concurrent workers, each on its own keep-alive connection"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 10 * time.Second, Usage: "how long to run"},
			&cli.Int64Flag{Name: "ops", Usage: "stop after this many sessions opened and closed (0: run for --duration)"},
			&cli.IntFlag{Name: "sessions", Value: 1, Usage: "sessions each worker keeps open at once"},
			&cli.DurationFlag{Name: "hold", Usage: "mean time a session is held open before its close (0: closed at once)"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "timeout of one request"},
			&cli.Int64Flag{Name: "max-errors", Value: 10, Usage: "stop after this many failed requests"},
			&cli.StringFlag{Name: "prefix", Usage: "session ids are PREFIX-worker-seq (default: bench- and a random suffix)"},
			&cli.DurationFlag{Name: "progress", Value: time.Second, Usage: "how often a progress line goes to standard error (0: never)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
		},
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			out := c.String("output")
			if out != "table" && out != "json" {
				return fmt.Errorf("--output %q: want table or json", out)
			}
			workers, sessions := c.Int("workers"), c.Int("sessions")
			if workers < 1 || workers > 10_000 {
				return fmt.Errorf("--workers %d: want 1 to 10000", workers)
			}
			if sessions < 1 || sessions > 10_000 {
				return fmt.Errorf("--sessions %d: want 1 to 10000", sessions)
			}
			if c.Duration("timeout") <= 0 {
				return fmt.Errorf("--timeout %v: want a positive duration", c.Duration("timeout"))
			}
			o := loadgen.Options{Workers: workers, Sessions: sessions, Hold: c.Duration("hold"), Ops: c.Int64("ops"),
				MaxErrors: c.Int64("max-errors"), Prefix: c.String("prefix")}
			if o.Ops == 0 {
				o.Duration = c.Duration("duration")
				if o.Duration <= 0 {
					return fmt.Errorf("--duration %v: want a positive duration (or give --ops)", o.Duration)
				}
			}
			if o.MaxErrors < 1 {
				return fmt.Errorf("--max-errors %d: want at least 1", o.MaxErrors)
			}
			if o.Prefix == "" {
				var b [4]byte
				rand.Read(b[:])
				o.Prefix = "bench-" + hex.EncodeToString(b[:])
			}
			if err := o.Validate(); err != nil {
				return err
			}
			t, err := loadgen.NewAgentHTTP(c.String("agent"), c.String("tenant"), c.String("class"), workers*sessions, c.Duration("timeout"))
			if err != nil {
				return err
			}
			defer t.CloseIdle()
			if every := c.Duration("progress"); every > 0 {
				o.Progress, o.ProgressEvery = func(p loadgen.Progress) { fmt.Fprintln(c.App.ErrWriter, progressLine(p)) }, every
			}
			res, runErr := loadgen.Run(c.Context, t, o)
			if res.Latency != nil {
				if err := writeBench(c.App.Writer, out, c.String("agent"), res); err != nil {
					return err
				}
			}
			return runErr
		},
	}
}

func progressLine(p loadgen.Progress) string {
	return fmt.Sprintf("%6.1fs  %d sessions  %.0f/s now  %d open  %d refused  %d errors",
		p.Elapsed.Seconds(), p.Ops, p.LastRate, p.Open, p.Refused, p.Errors)
}

// benchJSON is `headroom bench -o json`.
type benchJSON struct {
	Agent             string  `json:"agent"`
	Workers           int     `json:"workers"`
	Seconds           float64 `json:"seconds"`
	Sessions          int64   `json:"sessions"`
	SessionsPerSecond float64 `json:"sessions_per_second"`
	Refused           int64   `json:"refused"`
	Errors            int64   `json:"errors"`
	FirstError        string  `json:"first_error,omitempty"`
	MostOpen          int64   `json:"most_open_at_once"`
	AdmitP50Micros    float64 `json:"admit_p50_us"`
	AdmitP90Micros    float64 `json:"admit_p90_us"`
	AdmitP99Micros    float64 `json:"admit_p99_us"`
	AdmitP999Micros   float64 `json:"admit_p999_us"`
	AdmitMaxMicros    float64 `json:"admit_max_us"`
}

func writeBench(w io.Writer, format, agentAddr string, r loadgen.Result) error {
	us := func(q float64) float64 { return float64(r.Latency.Quantile(q).Nanoseconds()) / 1e3 }
	j := benchJSON{Agent: agentAddr, Workers: r.Workers, Seconds: r.Elapsed.Seconds(), Sessions: r.Ops,
		SessionsPerSecond: r.OpsPerSecond(), Refused: r.Refused, Errors: r.Errors, MostOpen: r.MaxOpen,
		AdmitP50Micros: us(0.5), AdmitP90Micros: us(0.9), AdmitP99Micros: us(0.99), AdmitP999Micros: us(0.999), AdmitMaxMicros: us(1)}
	if r.FirstError != nil {
		j.FirstError = r.FirstError.Error()
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(j)
	}
	fmt.Fprintf(w, "agent %s, %d workers, %.1f s\n", agentAddr, j.Workers, j.Seconds)
	fmt.Fprintf(w, "sessions opened and closed  %d (%.0f/s)\n", j.Sessions, j.SessionsPerSecond)
	fmt.Fprintf(w, "refused                     %d\n", j.Refused)
	fmt.Fprintf(w, "errors                      %d\n", j.Errors)
	if j.FirstError != "" {
		fmt.Fprintf(w, "first error                 %s\n", j.FirstError)
	}
	fmt.Fprintf(w, "most open at once           %d\n", j.MostOpen)
	fmt.Fprintf(w, "admit latency               p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		r.Latency.Quantile(0.5), r.Latency.Quantile(0.9), r.Latency.Quantile(0.99), r.Latency.Quantile(0.999), r.Latency.Max())
	return nil
}
