package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkMosquittoConnect measures, through the real Mosquitto, the time
// from a device's CONNECT to its CONNACK with headroom's plugin (every
// CONNECT admitted at the agent, on a metered plan) and without it, while
// 1,000 devices stay connected; and how many devices connect per second
// (16 clients at once) through one broker and its agent. The clients are
// Eclipse Paho's Go client:
//
//	go test -run '^$' -bench MosquittoConnect -benchtime 1x ./cmd/headroom/
func BenchmarkMosquittoConnect(b *testing.B) {
	for _, plugin := range []bool{false, true} {
		name := "without-plugin"
		if plugin {
			name = "with-plugin"
		}
		b.Run(name, func(b *testing.B) { benchMosquitto(b, plugin) })
	}
}

func benchMosquitto(b *testing.B, withPlugin bool) {
	const held, workers, probes = 1000, 16, 500
	broker := needMosquitto(b)
	s := newStack(b)
	s.startAggregator()
	s.startAgent()
	if code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "devices", "fee_monthly_micros": 0, "mode": "meter"}); err != nil || code != 201 {
		b.Fatalf("plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/fleet/plan", map[string]string{"plan": "devices", "at": "now"}); err != nil || code/100 != 2 {
		b.Fatalf("set plan: %d %s %v", code, body, err)
	}
	addr := freeAddr(b)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	var conf string
	if withPlugin {
		conf = mosquittoConf(b, port, buildMosquittoPlugin(b), s.api)
	} else {
		conf = filepath.Join(b.TempDir(), "mosquitto.conf")
		if err := os.WriteFile(conf, []byte("per_listener_settings false\nlistener "+port+" 127.0.0.1\nallow_anonymous true\n"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	mq := startArgv(b, "mosquitto", []string{broker, "-c", conf}, nil)
	waitFor(b, 15*time.Second, "mosquitto listening", func() error {
		c, _, err := mqttConnect(port, "probe-ready")
		if err != nil {
			return fmt.Errorf("%v (log: %s)", err, lastLines(mq.logText(), 3))
		}
		c.Disconnect(0)
		return nil
	})
	var mu sync.Mutex
	var clients []mqtt.Client
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	// The fleet: 1,000 devices connect, 16 at a time.
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, _, err := mqttConnect(port, fmt.Sprintf("held-%04d", i))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < held; i++ {
		select {
		case next <- i:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	rate := float64(held) / time.Since(t0).Seconds()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	if withPlugin {
		waitFor(b, 30*time.Second, "the held devices open at the agent", func() error {
			var st struct {
				OpenSessions int `json:"open_sessions"`
			}
			if _, err := getJSON(httpc, "http://"+s.api+"/v1/status", &st); err != nil {
				return err
			}
			if st.OpenSessions < held {
				return fmt.Errorf("%d open", st.OpenSessions)
			}
			return nil
		})
	}
	// One device at a time connects and disconnects beside them.
	b.ResetTimer()
	lat := make([]time.Duration, 0, probes)
	for i := 0; i < probes; i++ {
		c, d, err := mqttConnect(port, fmt.Sprintf("probe-%04d", i))
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, d)
		c.Disconnect(0)
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(rate, "devices/s")
}

// mqttConnect connects one device (username fleet:ID) and returns the
// client and the time from CONNECT to CONNACK.
func mqttConnect(port, id string) (mqtt.Client, time.Duration, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://127.0.0.1:" + port).SetClientID(id).
		SetUsername("fleet:" + id).SetPassword("pw").SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(60 * time.Second)
	c := mqtt.NewClient(opts)
	t0 := time.Now()
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, 0, fmt.Errorf("%s: no CONNACK within 15 s", id)
	}
	if err := tok.Error(); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", id, err)
	}
	return c, time.Since(t0), nil
}
