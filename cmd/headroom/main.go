// Command headroom is the one binary of headroom: aggregator server, agent,
// development stack, workload simulator and operator CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "headroom:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "headroom",
		Usage: "concurrency ceilings, live tier changes and metering for real-time media platforms",
		Description: "Flags go before positional arguments: `headroom tenant set-plan --addr A t1 growth`.\n" +
			"Client flags (--addr, -o) are accepted before the subcommand and on the leaf command.",
		Flags:                clientFlags(),
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			aggregatorCommand(),
			agentCommand(),
			devCommand(),
			simCommand(),
			tenantCommand(),
			planCommand(),
			usageCommand(),
			adviseCommand(),
			exportCommand(),
			auditCommand(),
			membersCommand(),
			raftCommand(),
			snapshotCommand(),
			leaveCommand(),
			tlsCommand(),
			keyringCommand(),
			aclCommand(),
			tokenCommand(),
			healthCommand(),
			benchCommand(),
		},
	}
}

// logFlags are the flags of every long-running subcommand.
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "trace, debug, info, warn or error", EnvVars: []string{"HEADROOM_LOG_LEVEL"}},
		&cli.BoolFlag{Name: "log-json", Usage: "log JSON lines instead of text"},
	}
}

func newLogger(c *cli.Context, name string) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(c.String("log-level"))
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", c.String("log-level"))
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, JSONFormat: c.Bool("log-json"), Output: os.Stderr}), nil
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits at once.
func signalContext(log hclog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-ch
		log.Info("stopping; send the signal again to exit at once", "signal", s.String())
		cancel()
		<-ch
		log.Warn("second signal: exiting now")
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// positional returns exactly n positional arguments, refusing a leftover
// argument that looks like a flag: urfave/cli stops reading flags at the
// first positional argument, and a flag silently ignored is worse than an
// error.
func positional(c *cli.Context, n int) ([]string, error) {
	args := c.Args().Slice()
	for _, a := range args {
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			return nil, fmt.Errorf("%q after the arguments: put flags before arguments (usage: %s %s)", a, c.Command.HelpName, c.Command.ArgsUsage)
		}
	}
	if len(args) != n {
		return nil, fmt.Errorf("want %d argument(s), got %d (usage: %s %s)", n, len(args), c.Command.HelpName, c.Command.ArgsUsage)
	}
	return args, nil
}
