package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// needMosquitto skips (fails in CI) without Debian's mosquitto, its clients,
// its headers and gcc; it returns the broker's path.
func needMosquitto(t testing.TB) string {
	t.Helper()
	broker := "/usr/sbin/mosquitto"
	var missing []string
	if _, err := os.Stat(broker); err != nil {
		missing = append(missing, broker)
	}
	if _, err := os.Stat("/usr/include/mosquitto_broker.h"); err != nil {
		missing = append(missing, "/usr/include/mosquitto_broker.h")
	}
	for _, tool := range []string{"mosquitto_sub", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s missing (apt-get install mosquitto mosquitto-dev mosquitto-clients gcc)", strings.Join(missing, ", "))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; in CI this fails")
		}
		t.Skip(msg + "; skipped outside CI")
	}
	return broker
}

// buildMosquittoPlugin builds the plugin as `make mosquitto-plugin` does.
func buildMosquittoPlugin(t testing.TB) string {
	t.Helper()
	// Run as root, mosquitto loads its plugins as user mosquitto: the
	// plugin goes in a directory others may read (t.TempDir's are 0700).
	dir, err := os.MkdirTemp("", "headroom-mosquitto-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	so := filepath.Join(dir, "headroom_mosquitto.so")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildmode=c-shared", "-tags", "mosquitto", "-o", so, "../../agent/connect/mosquitto/plugin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the mosquitto plugin: %v\n%s", err, out)
	}
	return so
}

// mosquittoConf is deploy/mosquitto/mosquitto.conf with the test's port,
// plugin and agent.
func mosquittoConf(t testing.TB, port, plugin, agentAPI string) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for re, repl := range map[string]string{
		`(?m)^listener 1883$`:                    "listener " + port + " 127.0.0.1",
		`(?m)^plugin /.*$`:                       "plugin " + plugin,
		`(?m)^plugin_opt_agent .*$`:              "plugin_opt_agent http://" + agentAPI,
		`(?m)^plugin_opt_reconcile_interval .*$`: "plugin_opt_reconcile_interval 1s",
	} {
		r := regexp.MustCompile(re)
		if !r.MatchString(conf) {
			t.Fatalf("deploy/mosquitto/mosquitto.conf has no line matching %s", re)
		}
		conf = r.ReplaceAllString(conf, repl)
	}
	path := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// device is a mosquitto_sub that stays connected.
type device struct {
	p        *proc
	from, to time.Time
}

// TestMosquitto: the real Mosquitto 2.0 with headroom's plugin, devices
// played by mosquitto_sub. acme is on a strict plan of ceiling 2: two
// devices connect, the third is refused "not authorised"; a username that
// names no tenant and one of a tenant with no plan are refused, nothing of
// them stored; kill -9 of a device's client closes its session; a device
// reconnecting under the same client id (a takeover) counts once; kill -9
// of mosquitto and a restart closes what it held; the device seconds billed
// equal the clients' lifetimes within 1 s each.
func TestMosquitto(t *testing.T) {
	broker := needMosquitto(t)
	plugin := buildMosquittoPlugin(t)
	s := newStack(t)
	s.startAggregator()
	s.startAgent()
	if code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "dev2", "fee_monthly_micros": 1_000_000, "ceiling": 2, "mode": "strict"}); err != nil || code != 201 {
		t.Fatalf("plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/acme/plan", map[string]string{"plan": "dev2", "at": "now"}); err != nil || code/100 != 2 {
		t.Fatalf("set plan: %d %s %v", code, body, err)
	}
	// Devices connect once the agent has acme's plan: before, it refuses an
	// unknown tenant, as it should.
	waitFor(t, 30*time.Second, "the agent knows acme", func() error {
		var st struct {
			TenantsKnown int `json:"tenants_known"`
		}
		if _, err := getJSON(httpc, "http://"+s.api+"/v1/status", &st); err != nil {
			return err
		}
		if st.TenantsKnown < 1 {
			return fmt.Errorf("%d tenants known", st.TenantsKnown)
		}
		return nil
	})
	addr := freeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	conf := mosquittoConf(t, port, plugin, s.api)
	mq := start0(t, "mosquitto", broker, "-c", conf, "-v")
	waitFor(t, 15*time.Second, "mosquitto listening with the plugin", func() error {
		if !strings.Contains(mq.logText(), "running") {
			return fmt.Errorf("not running yet")
		}
		return nil
	})
	sub := func(name, user, id string) *proc {
		return startArgv(t, name, []string{"mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-u", user, "-P", "pw", "-i", id, "-t", "dev/" + id, "-k", "5"}, nil)
	}
	connect := func(name, user, id string, open uint64) *device {
		d := &device{p: sub(name, user, id), from: time.Now()}
		s.waitOpen("acme", open, name+" connected")
		return d
	}
	refused := func(user, id, why string) {
		out, err := exec.Command("timeout", "10", "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-u", user, "-P", "pw", "-i", id, "-t", "dev/"+id, "-W", "3").CombinedOutput()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "not authori") {
			t.Fatalf("%s: not refused 'not authorised' (%v): %s", why, err, out)
		}
	}
	var devices []*device
	d1 := connect("d1", "acme:d1", "d1", 1)
	d2 := connect("d2", "acme:d2", "d2", 2)
	devices = append(devices, d1, d2)
	refused("acme:d3", "d3", "a third device under a ceiling of 2")
	refused(":x1", "x1", "a username that names no tenant")
	refused("nobody:x2", "x2", "a device of a tenant with no plan")
	if code, body, _ := call("GET", "http://"+s.http+"/v1/tenants", nil); code != 200 || strings.Count(string(body), `"tenant":`) != 1 {
		t.Fatalf("the refused devices stored a tenant: %s", body)
	}
	if f := s.tenant("acme"); f.Concurrency.Total != 2 {
		t.Fatalf("after three refusals acme has %d open, want 2 (a refused client's DISCONNECT closed a session?)", f.Concurrency.Total)
	}

	d1.p.kill()
	d1.to = time.Now()
	s.waitOpen("acme", 1, "kill -9 of a device's client closes its session")

	// A takeover: d2 connects again while its old connection is up; the old
	// client is killed once the broker has closed it (mosquitto_sub would
	// reconnect and take the id back).
	d2b := &device{p: sub("d2b", "acme:d2", "d2"), from: time.Now()}
	waitFor(t, 10*time.Second, "mosquitto takes client id d2 over", func() error {
		if !strings.Contains(mq.logText(), "already connected, closing old connection") {
			return fmt.Errorf("no takeover in the broker's log yet")
		}
		return nil
	})
	d2.p.kill()
	d2.to = d2b.from
	devices = append(devices, d2b)
	// Counted once: a second device still fits under the ceiling of 2.
	d3 := connect("d3", "acme:d3", "d3", 2)
	devices = append(devices, d3)
	// The old connection's DISCONNECT closed nothing, and the reconcile
	// (every second here) keeps both.
	waitReconciled(t, s, time.Now())
	if f := s.tenant("acme"); f.Concurrency.Total != 2 {
		t.Fatalf("after a takeover and a reconcile acme has %d open, want 2", f.Concurrency.Total)
	}

	// The broker dies, its devices with it; it comes back empty.
	mq.kill()
	died := time.Now()
	d2b.p.kill()
	d3.p.kill()
	d2b.to, d3.to = died, died
	mq.restart()
	s.waitOpen("acme", 0, "mosquitto restarted empty closes the sessions it held")

	var truth float64
	for _, d := range devices {
		truth += d.to.Sub(d.from).Seconds()
	}
	waitFor(t, 10*time.Second, "device seconds billed", func() error {
		f := s.tenant("acme")
		if f.Usage == nil {
			return fmt.Errorf("no usage")
		}
		got := f.Usage.SecondsByClass["device"]
		if math.Abs(got-truth) > float64(len(devices)) {
			return fmt.Errorf("device seconds %.2f, the clients' lifetimes %.2f (allowed 1 s each of %d)", got, truth, len(devices))
		}
		return nil
	})
}

// waitReconciled waits for the plugin's next reconcile after since.
func waitReconciled(t *testing.T, s *stack, since time.Time) {
	t.Helper()
	waitFor(t, 10*time.Second, "a reconcile of the plugin", func() error {
		var st struct {
			Connectors map[string]struct {
				Last *struct {
					At time.Time `json:"at"`
				} `json:"last_reconcile"`
			} `json:"connectors"`
		}
		if err := getJSONInto("http://"+s.api+"/v1/status", &st); err != nil {
			return err
		}
		if c := st.Connectors["mosquitto"]; c.Last == nil || !c.Last.At.After(since) {
			return fmt.Errorf("no reconcile since %v", since)
		}
		return nil
	})
}

// start0 runs a program other than headroom.
func start0(t *testing.T, name string, argv ...string) *proc {
	t.Helper()
	return startArgv(t, name, argv, nil)
}
