package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/connect"
	"github.com/headroom-rtc/headroom/agent/connect/emqx"
	"github.com/headroom-rtc/headroom/agent/connect/livekit"
	"github.com/headroom-rtc/headroom/agent/connect/nginxrtmp"
	"github.com/headroom-rtc/headroom/plans"
)

// Media server connectors of `headroom agent`: each is turned on by its
// flags, serves its hooks on the agent's API listener and may run a loop
// (a reconcile) beside the agent.

// attached is what a connector adds to a running agent.
type attached struct {
	routes  map[string]http.Handler // pattern → handler, on the agent's API mux
	runners []func(ctx context.Context)
}

// attachFunc builds connectors once the agent has loaded its state.
type attachFunc func(a *agent.Agent, log hclog.Logger) (attached, error)

func connectorFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "nginx-rtmp", Usage: "serve nginx-rtmp's on_publish/on_play/on_update/on_done hooks at POST /hooks/nginx-rtmp on the API address"},
		&cli.StringFlag{Name: "nginx-rtmp-tenant-arg", Value: nginxrtmp.DefaultTenantArg, Usage: "the stream URL's query argument that names the tenant"},
		&cli.StringFlag{Name: "nginx-rtmp-user-arg", Value: nginxrtmp.DefaultUserArg, Usage: "the stream URL's query argument that names the client's user, counted among the tenant's active users (- for none)"},
		&cli.StringFlag{Name: "nginx-rtmp-tenant-from", Value: "arg", Usage: "where the tenant comes from, rules tried in order: arg[:NAME] (query argument), app (application name), name-prefix:SEP (stream name up to SEP), fixed:TENANT"},
		&cli.StringFlag{Name: "nginx-rtmp-class", Value: plans.VideoHD.String(), Usage: "class of a session whose URL has no class argument (and whose application has no --nginx-rtmp-app-class)"},
		&cli.StringSliceFlag{Name: "nginx-rtmp-app-class", Usage: "APP=CLASS: the default class of an application (repeatable)"},
		&cli.DurationFlag{Name: "nginx-rtmp-ttl", Value: nginxrtmp.DefaultTTL, Usage: "a session not kept alive by on_update (or the stat page) for this long ends at its last sign of life; set nginx's notify_update_timeout well below it (0: no TTL)"},
		&cli.StringFlag{Name: "nginx-rtmp-stat", Usage: "URL of nginx-rtmp's stat page (rtmp_stat all): class sessions by their stream's resolution and close those whose client is gone"},
		&cli.DurationFlag{Name: "nginx-rtmp-stat-interval", Value: nginxrtmp.DefaultStatInterval, Usage: "how often the stat page is read"},
		&cli.StringFlag{Name: "livekit-api-key", EnvVars: []string{"HEADROOM_LIVEKIT_API_KEY"}, Usage: "with --livekit-api-secret: serve LiveKit's webhooks at POST /hooks/livekit, verified with this key pair (the LiveKit server's)"},
		&cli.StringFlag{Name: "livekit-api-secret", EnvVars: []string{"HEADROOM_LIVEKIT_API_SECRET"}, Usage: "the LiveKit API secret (prefer the environment variable: flags show in ps)"},
		&cli.StringFlag{Name: "livekit-url", Usage: "the LiveKit server (http(s):// or ws(s)://): reconcile through RoomService, and remove participants that join without a reservation over a strict ceiling"},
		&cli.DurationFlag{Name: "livekit-reconcile-interval", Value: livekit.DefaultReconcileInterval, Usage: "how often RoomService is listed"},
		&cli.BoolFlag{Name: "emqx", Usage: "serve EMQX 5's HTTP authenticator at POST /hooks/emqx/auth and its rule engine's client_connected/client_disconnected events at POST /hooks/emqx/events"},
		&cli.StringFlag{Name: "emqx-tenant-from", Value: "username", Usage: "what names a device's tenant: username or client-id (up to --emqx-separator)"},
		&cli.StringFlag{Name: "emqx-separator", Usage: "the tenant is the part of the username (or client id) before this separator, or all of it when it has none"},
		&cli.StringFlag{Name: "emqx-class", Value: plans.Device.String(), Usage: "class of the devices' sessions"},
		&cli.StringFlag{Name: "livekit-tenant-from", Value: "attr:" + livekit.DefaultTenantAttribute, Usage: "the tenant of a participant without a reservation, rules tried in order: attr:NAME (participant attribute), name-prefix:SEP (room name up to SEP), fixed:TENANT"},
	}
}

// connectorsFromFlags returns the attach function of the connectors the
// flags turn on (nil: none).
func connectorsFromFlags(c *cli.Context) (attachFunc, error) {
	var fns []attachFunc
	if c.Bool("nginx-rtmp") {
		fn, err := nginxFromFlags(c)
		if err != nil {
			return nil, err
		}
		fns = append(fns, fn)
	} else {
		for _, f := range []string{"nginx-rtmp-stat", "nginx-rtmp-tenant-from", "nginx-rtmp-tenant-arg", "nginx-rtmp-app-class"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s needs --nginx-rtmp", f)
			}
		}
	}
	key, secret := c.String("livekit-api-key"), c.String("livekit-api-secret")
	switch {
	case key != "" && secret != "":
		fn, err := livekitFromFlags(c, key, secret)
		if err != nil {
			return nil, err
		}
		fns = append(fns, fn)
	case key != "" || secret != "":
		return nil, fmt.Errorf("--livekit-api-key and --livekit-api-secret go together (or HEADROOM_LIVEKIT_API_KEY and _SECRET)")
	default:
		for _, f := range []string{"livekit-url", "livekit-tenant-from"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s needs --livekit-api-key and --livekit-api-secret", f)
			}
		}
	}
	if c.Bool("emqx") {
		fn, err := emqxFromFlags(c)
		if err != nil {
			return nil, err
		}
		fns = append(fns, fn)
	} else {
		for _, f := range []string{"emqx-tenant-from", "emqx-separator", "emqx-class"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s needs --emqx", f)
			}
		}
	}
	if len(fns) == 0 {
		return nil, nil
	}
	return func(a *agent.Agent, log hclog.Logger) (attached, error) {
		var all attached
		all.routes = map[string]http.Handler{}
		for _, fn := range fns {
			at, err := fn(a, log)
			if err != nil {
				return attached{}, err
			}
			for p, h := range at.routes {
				all.routes[p] = h
			}
			all.runners = append(all.runners, at.runners...)
		}
		return all, nil
	}, nil
}

func nginxFromFlags(c *cli.Context) (attachFunc, error) {
	rules, err := connect.ParseRules(c.String("nginx-rtmp-tenant-from"), c.String("nginx-rtmp-tenant-arg"))
	if err != nil {
		return nil, fmt.Errorf("--nginx-rtmp-tenant-from: %w", err)
	}
	def, err := plans.ParseClass(c.String("nginx-rtmp-class"))
	if err != nil {
		return nil, fmt.Errorf("--nginx-rtmp-class: %w", err)
	}
	apps, err := connect.ParseAppClasses(c.StringSlice("nginx-rtmp-app-class"))
	if err != nil {
		return nil, fmt.Errorf("--nginx-rtmp-app-class: %w", err)
	}
	stat := c.String("nginx-rtmp-stat")
	if stat != "" {
		if u, err := url.Parse(stat); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--nginx-rtmp-stat %q: want an http:// URL of nginx-rtmp's stat location", stat)
		}
	}
	ttl := c.Duration("nginx-rtmp-ttl")
	if ttl == 0 {
		ttl = -1 // the connector's "none"
	}
	cfg := nginxrtmp.Config{
		Tenant: rules, Class: connect.ClassRule{Arg: nginxrtmp.DefaultClassArg, PerApp: apps, Default: def},
		TTL: ttl, StatURL: stat, StatInterval: c.Duration("nginx-rtmp-stat-interval"), UserArg: c.String("nginx-rtmp-user-arg"),
	}
	return func(a *agent.Agent, log hclog.Logger) (attached, error) {
		cfg.Logger = log.Named("nginx-rtmp")
		conn, err := nginxrtmp.New(a, cfg)
		if err != nil {
			return attached{}, err
		}
		log.Info("nginx-rtmp hooks served", "path", "/hooks/nginx-rtmp", "tenant_from", rules.String(), "stat", stat)
		return attached{
			routes:  map[string]http.Handler{"/hooks/nginx-rtmp": conn},
			runners: []func(context.Context){conn.Run},
		}, nil
	}, nil
}

func livekitFromFlags(c *cli.Context, key, secret string) (attachFunc, error) {
	rules, err := connect.ParseRules(c.String("livekit-tenant-from"), livekit.DefaultTenantAttribute)
	if err != nil {
		return nil, fmt.Errorf("--livekit-tenant-from: %w", err)
	}
	cfg := livekit.Config{APIKey: key, APISecret: secret, URL: c.String("livekit-url"),
		ReconcileInterval: c.Duration("livekit-reconcile-interval"), Tenant: rules}
	return func(a *agent.Agent, log hclog.Logger) (attached, error) {
		cfg.Logger = log.Named("livekit")
		conn, err := livekit.New(a, cfg)
		if err != nil {
			return attached{}, err
		}
		log.Info("LiveKit webhooks served", "path", "/hooks/livekit", "roomservice", cfg.URL, "tenant_from", rules.String())
		return attached{
			routes:  map[string]http.Handler{"/hooks/livekit": conn},
			runners: []func(context.Context){conn.Run},
		}, nil
	}, nil
}

// LiveKit's development key pair (livekit-server --dev), which headroom dev
// accepts on its webhook.
const devLiveKitKey, devLiveKitSecret = "devkey", "secret"

// devConnectors are headroom dev's: the nginx-rtmp hook with its defaults
// and the LiveKit webhook verified with LiveKit's development keys.
func devConnectors() attachFunc {
	return func(a *agent.Agent, log hclog.Logger) (attached, error) {
		ngx, err := nginxrtmp.New(a, nginxrtmp.Config{Logger: log.Named("nginx-rtmp")})
		if err != nil {
			return attached{}, err
		}
		lkc, err := livekit.New(a, livekit.Config{APIKey: devLiveKitKey, APISecret: devLiveKitSecret, Logger: log.Named("livekit")})
		if err != nil {
			return attached{}, err
		}
		return attached{routes: map[string]http.Handler{"/hooks/nginx-rtmp": ngx, "/hooks/livekit": lkc}}, nil
	}
}

// devConnectorHelp tells how to point each media server at headroom dev's
// agent on api.
func devConnectorHelp(api string) string {
	return fmt.Sprintf(`  media servers (the agent's hooks; see README "Real media servers"):
    nginx-rtmp    in its application block: on_publish, on_play, on_update, on_publish_done,
                  on_play_done and on_done http://%[1]s/hooks/nginx-rtmp; notify_update_timeout 10s;
                  publish to rtmp://HOST/APP/STREAM?tenant=TENANT (deploy/nginx-rtmp/nginx.conf)
    LiveKit       livekit-server --dev with, in its config:
                  webhook: {api_key: %[2]s, urls: ["http://%[1]s/hooks/livekit"]}
                  tokens: reserve first (examples/livekit-token-server -agent http://%[1]s)
`, api, devLiveKitKey)
}

func emqxFromFlags(c *cli.Context) (attachFunc, error) {
	from := c.String("emqx-tenant-from")
	if from != "username" && from != "client-id" {
		return nil, fmt.Errorf("--emqx-tenant-from %q: want username or client-id", from)
	}
	cls, err := plans.ParseClass(c.String("emqx-class"))
	if err != nil {
		return nil, fmt.Errorf("--emqx-class: %w", err)
	}
	cfg := emqx.Config{TenantFrom: from, Separator: c.String("emqx-separator"), Class: cls.String()}
	return func(a *agent.Agent, log hclog.Logger) (attached, error) {
		cfg.Logger = log.Named("emqx")
		conn, err := emqx.New(a, cfg)
		if err != nil {
			return attached{}, err
		}
		log.Info("EMQX hooks served", "auth", "/hooks/emqx/auth", "events", "/hooks/emqx/events", "tenant_from", from, "separator", cfg.Separator)
		return attached{routes: conn.Routes()}, nil
	}, nil
}
