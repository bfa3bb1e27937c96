package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// healthCommand checks a local server: the container image's HEALTHCHECK,
// a systemd ExecStartPost, or an operator's first question. Every headroom
// server answers GET /healthz: an aggregator with 200 once it knows a leader
// and has applied everything committed (503 with the reason before), an
// agent and a simulator with 200 once their API listens.
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "check that a local server is ready (GET /healthz); exits 1 when it is not",
		UsageText: "headroom health [--addr HOST:PORT] [--timeout D]\n" +
			"   headroom health --addr 127.0.0.1:9380   # an agent",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:9370", Usage: "HTTP address of the server: an aggregator's --http-addr, an agent's --api-addr or a simulator's --status-addr", EnvVars: []string{"HEADROOM_HEALTH_ADDR"}},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "give up after this long"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing when the server is ready"},
		}, clientTLSFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			tr, https, err := clientTransport(c)
			if err != nil {
				return fmt.Errorf("TLS: %w", err)
			}
			addr := c.String("addr")
			if https && !strings.Contains(addr, "://") {
				addr = "https://" + addr
			}
			msg, err := checkHealth(ctx, addr, tr)
			if err != nil {
				return fmt.Errorf("not ready: %w", err)
			}
			if !c.Bool("quiet") {
				fmt.Fprintln(c.App.Writer, msg)
			}
			return nil
		},
	}
}

// checkHealth asks the server at addr (host:port or an http:// URL) for
// GET /healthz. It returns a line saying the server is ready, or an error
// saying why not in an operator's words: nothing listening, a timeout, or
// the server's own reason.
func checkHealth(ctx context.Context, addr string, tr http.RoundTripper) (string, error) {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return "", fmt.Errorf("--addr %q: %w", addr, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return "", fmt.Errorf("no answer from %s in time", addr)
		case strings.Contains(err.Error(), "connection refused"):
			return "", fmt.Errorf("nothing listens on %s (connection refused)", addr)
		}
		return "", fmt.Errorf("cannot reach %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		msg := "ok: " + addr + " is ready"
		if l := resp.Header.Get("X-Headroom-Leader"); l != "" {
			msg += " (leader " + l + ")"
		}
		return msg, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return "", fmt.Errorf("%s answered %d: %s", addr, resp.StatusCode, e.Error)
	}
	return "", fmt.Errorf("%s answered %s to GET /healthz", addr, resp.Status)
}
