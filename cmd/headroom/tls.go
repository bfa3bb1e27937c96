package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/internal/tlsconf"
)

// tlsFlags are the TLS flags of `headroom aggregator` (server true) and
// `headroom agent`.
func tlsFlags(server bool) []cli.Flag {
	fl := []cli.Flag{
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM file of the CA that signs the servers' certificates; turns TLS on (agent streams, HTTP, Raft)"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM file of this process's certificate (`headroom tls cert create`)"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM file of this process's private key"},
		&cli.StringFlag{Name: "tls-server-name", Value: tlsconf.ServerName, Usage: "the name every server certificate carries and every client verifies"},
	}
	if server {
		fl = append(fl, &cli.BoolFlag{Name: "tls-verify-incoming", Usage: "require client certificates signed by --tls-ca on every listener (mutual TLS); Raft and the server-to-server calls then take only servers' certificates"})
	}
	return fl
}

func tlsFiles(c *cli.Context) tlsconf.Files {
	return tlsconf.Files{CA: c.String("tls-ca"), Cert: c.String("tls-cert"), Key: c.String("tls-key"),
		VerifyIncoming: c.Bool("tls-verify-incoming"), ServerName: c.String("tls-server-name")}
}

// serverTLS loads an aggregator's TLS files (nil without any).
func serverTLS(c *cli.Context) (*cluster.TLS, error) {
	f := tlsFiles(c)
	if !f.Any() {
		return nil, nil
	}
	b, err := tlsconf.LoadServer(f, time.Now())
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return &cluster.TLS{Server: b.Server(), Client: b.Client()}, nil
}

// agentDialer returns the agent's dialer for TLS (nil without any TLS
// flag: the agent's plain default).
func agentDialer(c *cli.Context) (func(ctx context.Context, addr string) (net.Conn, error), error) {
	f := tlsFiles(c)
	if !f.Any() {
		return nil, nil
	}
	if f.CA == "" {
		return nil, errors.New("TLS: an agent needs --tls-ca to verify the servers with")
	}
	b, err := tlsconf.LoadClient(f, time.Now())
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	// The dial and the handshake, twice the plain dial's bound.
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * agent.DefaultDialTimeout}, Config: b.Client()}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, nil
}

// clientTLSFlags are the CLI's TLS flags, accepted like --addr.
func clientTLSFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM file of the CA that signs the servers' certificates; makes --addr https", EnvVars: []string{"HEADROOM_CACERT"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "client certificate, for servers run with --tls-verify-incoming", EnvVars: []string{"HEADROOM_CLIENT_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "the client certificate's private key", EnvVars: []string{"HEADROOM_CLIENT_KEY"}},
		&cli.StringFlag{Name: "tls-server-name", Value: tlsconf.ServerName, Usage: "the name the server's certificate must carry", EnvVars: []string{"HEADROOM_TLS_SERVER_NAME"}},
	}
}

// clientTransport returns the CLI's HTTP transport for the TLS flags (nil
// without any) and whether they ask for https.
func clientTransport(c *cli.Context) (http.RoundTripper, bool, error) {
	f := tlsconf.Files{CA: flagValue(c, "tls-ca"), Cert: flagValue(c, "tls-cert"), Key: flagValue(c, "tls-key"), ServerName: flagValue(c, "tls-server-name")}
	if !f.Any() {
		return nil, false, nil
	}
	b, err := tlsconf.LoadClient(f, time.Now())
	if err != nil {
		return nil, false, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = b.Client()
	return tr, true, nil
}

func tlsCommand() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "dir", Value: ".", Usage: "directory the PEM files are written to"}
	return &cli.Command{
		Name:  "tls",
		Usage: "make a private CA and certificates for headroom's TLS (ECDSA P-256)",
		Subcommands: []*cli.Command{
			{
				Name: "ca", Usage: "the certificate authority",
				Subcommands: []*cli.Command{{
					Name:      "create",
					Usage:     "make a CA: headroom-ca.pem and headroom-ca-key.pem (keep the key offline)",
					ArgsUsage: "[--dir D] [--days N] [--common-name CN]",
					Flags: []cli.Flag{dirFlag,
						&cli.IntFlag{Name: "days", Value: 1825, Usage: "validity in days"},
						&cli.StringFlag{Name: "common-name", Usage: "the CA's name (default: headroom CA and a random suffix)"},
					},
					Action: func(c *cli.Context) error {
						if _, err := positional(c, 0); err != nil {
							return err
						}
						nb, na, err := validity(c.Int("days"))
						if err != nil {
							return err
						}
						ca, err := tlsconf.NewCA(tlsconf.CertOptions{CommonName: c.String("common-name"), NotBefore: nb, NotAfter: na})
						if err != nil {
							return err
						}
						dir := c.String("dir")
						cert, key := filepath.Join(dir, "headroom-ca.pem"), filepath.Join(dir, "headroom-ca-key.pem")
						if err := writeNew(cert, ca.Cert, 0o644); err != nil {
							return err
						}
						if err := writeNew(key, ca.Key, 0o600); err != nil {
							os.Remove(cert)
							return err
						}
						fmt.Fprintf(c.App.Writer, "wrote %s and %s (valid until %s)\n", cert, key, na.Format(time.DateOnly))
						return nil
					},
				}},
			},
			{
				Name: "cert", Usage: "certificates signed by the CA",
				Subcommands: []*cli.Command{{
					Name:      "create",
					Usage:     "make a server, agent or CLI certificate: headroom-<kind>-N.pem and headroom-<kind>-N-key.pem",
					ArgsUsage: "--server|--agent|--cli [--dns NAME]... [--ip IP]... [--days N] [--ca F --ca-key F] [--dir D]",
					Flags: []cli.Flag{dirFlag,
						&cli.BoolFlag{Name: "server", Usage: "an aggregator's certificate: names " + tlsconf.ServerName + ", localhost and 127.0.0.1; server and client authentication"},
						&cli.BoolFlag{Name: "agent", Usage: "an agent's client certificate (names " + tlsconf.AgentName + ")"},
						&cli.BoolFlag{Name: "cli", Usage: "an operator's client certificate (names " + tlsconf.CLIName + ")"},
						&cli.StringSliceFlag{Name: "dns", Usage: "more DNS names (repeatable or comma-separated)"},
						&cli.StringSliceFlag{Name: "ip", Usage: "IP addresses (repeatable or comma-separated)"},
						&cli.IntFlag{Name: "days", Value: 365, Usage: "validity in days"},
						&cli.StringFlag{Name: "ca", Usage: "the CA's certificate (default: headroom-ca.pem in --dir)"},
						&cli.StringFlag{Name: "ca-key", Usage: "the CA's private key (default: headroom-ca-key.pem in --dir)"},
					},
					Action: certCreate,
				}},
			},
		},
	}
}

func certCreate(c *cli.Context) error {
	if _, err := positional(c, 0); err != nil {
		return err
	}
	var kinds []tlsconf.Kind
	for _, k := range []tlsconf.Kind{tlsconf.KindServer, tlsconf.KindAgent, tlsconf.KindCLI} {
		if c.Bool(string(k)) {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) != 1 {
		return errors.New("say which certificate: exactly one of --server, --agent or --cli")
	}
	kind := kinds[0]
	opts := tlsconf.CertOptions{Kind: kind, DNS: splitList(c.StringSlice("dns"))}
	for _, s := range splitList(c.StringSlice("ip")) {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("--ip %q is not an IP address", s)
		}
		opts.IPs = append(opts.IPs, ip)
	}
	var err error
	if opts.NotBefore, opts.NotAfter, err = validity(c.Int("days")); err != nil {
		return err
	}
	dir := c.String("dir")
	caFile, caKeyFile := c.String("ca"), c.String("ca-key")
	if caFile == "" {
		caFile = filepath.Join(dir, "headroom-ca.pem")
	}
	if caKeyFile == "" {
		caKeyFile = filepath.Join(dir, "headroom-ca-key.pem")
	}
	var ca tlsconf.PEM
	if ca.Cert, err = os.ReadFile(caFile); err != nil {
		return fmt.Errorf("--ca: %w (make one with `headroom tls ca create`)", err)
	}
	if ca.Key, err = os.ReadFile(caKeyFile); err != nil {
		return fmt.Errorf("--ca-key: %w", err)
	}
	p, err := tlsconf.NewCert(ca, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", caFile, err)
	}
	for i := 0; ; i++ {
		base := filepath.Join(dir, fmt.Sprintf("headroom-%s-%d", kind, i))
		cert, key := base+".pem", base+"-key.pem"
		if _, err := os.Stat(cert); err == nil {
			continue
		}
		if err := writeNew(cert, p.Cert, 0o644); err != nil {
			return err
		}
		if err := writeNew(key, p.Key, 0o600); err != nil {
			os.Remove(cert)
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote %s and %s (valid until %s)\n", cert, key, opts.NotAfter.Format(time.DateOnly))
		return nil
	}
}

// validity is now (less a minute of clock skew) to days from now.
func validity(days int) (time.Time, time.Time, error) {
	if days < 1 || days > 36500 {
		return time.Time{}, time.Time{}, fmt.Errorf("--days %d: want 1 to 36500", days)
	}
	now := time.Now().UTC()
	return now.Add(-time.Minute), now.AddDate(0, 0, days), nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
