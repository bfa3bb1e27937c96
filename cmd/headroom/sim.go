package main

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/headroom-rtc/headroom/aggregator"
)

// scenario is one demo tenant's workload, after the scenarios of the
// platform this project serves: each with its own class mix, session length
// and daily curve.
type scenario struct {
	Tenant  string
	Plan    string
	What    string
	Peak    float64 // concurrent sessions at the daily peak, before scaling
	Mix     []classShare
	MeanLen time.Duration
	PeakAt  float64 // hour of the day of the peak
	Width   float64 // hours either side of the peak that stay busy
	Floor   float64 // share of the peak at the quietest hour
}

type classShare struct {
	Class string
	Share float64
}

var demoScenarios = []scenario{
	{Tenant: "lovetalk", Plan: "growth", What: "1v1 video dating", Peak: 300, MeanLen: 4 * time.Minute, PeakAt: 22, Width: 3, Floor: 0.1,
		Mix: []classShare{{"video-hd", 0.7}, {"video-fhd", 0.3}}},
	{Tenant: "voiceroom", Plan: "scale", What: "voice chat rooms", Peak: 600, MeanLen: 12 * time.Minute, PeakAt: 21, Width: 4, Floor: 0.15,
		Mix: []classShare{{"audio", 1}}},
	{Tenant: "livehost", Plan: "scale", What: "co-host live streaming", Peak: 400, MeanLen: 8 * time.Minute, PeakAt: 20, Width: 3, Floor: 0.05,
		Mix: []classShare{{"video-fhd", 0.6}, {"video-2k", 0.3}, {"video-2k+", 0.1}}},
	{Tenant: "tutor-ai", Plan: "starter", What: "conversational AI tutor", Peak: 90, MeanLen: 3 * time.Minute, PeakAt: 15, Width: 5, Floor: 0.1,
		Mix: []classShare{{"ai", 1}}},
	{Tenant: "smartcam", Plan: "payg", What: "smart hardware (doorbells, cameras)", Peak: 40, MeanLen: 90 * time.Second, PeakAt: 19, Width: 6, Floor: 0.3,
		Mix: []classShare{{"video-hd", 0.5}, {"audio", 0.5}}},
}

// level is the share of the peak at hour h of the day: a bell around PeakAt
// that wraps around midnight, never below Floor.
func (s *scenario) level(h float64) float64 {
	d := math.Abs(h - s.PeakAt)
	d = math.Min(d, 24-d)
	return s.Floor + (1-s.Floor)*math.Exp(-(d*d)/(2*s.Width*s.Width))
}

func (s *scenario) pickClass(r *rand.Rand) string {
	x := r.Float64()
	for _, m := range s.Mix {
		if x < m.Share {
			return m.Class
		}
		x -= m.Share
	}
	return s.Mix[len(s.Mix)-1].Class
}

func simFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Float64Flag{Name: "scale", Value: 1, Usage: "multiply every scenario's peak concurrency"},
		&cli.DurationFlag{Name: "day", Value: 24 * time.Minute, Usage: "wall time of one simulated day"},
		&cli.DurationFlag{Name: "report", Value: 5 * time.Second, Usage: "how often to print a line per tenant (0: never)"},
		&cli.DurationFlag{Name: "session-scale", Value: 0, Usage: "mean session length override for every scenario (0: each scenario's own)"},
	}
}

func simCommand() *cli.Command {
	return &cli.Command{
		Name:      "sim",
		Usage:     "simulate a media server's sessions against an agent's local API (the demo tenants of `headroom dev`)",
		UsageText: "headroom sim --agent A [--aggregator A] [--scale F] [--day D]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "agent", Value: "127.0.0.1:9380", Usage: "agent API address"},
			&cli.StringFlag{Name: "aggregator", Usage: "aggregator HTTP address, to report the global figures and set up the demo plans"},
			&cli.BoolFlag{Name: "setup-plans", Usage: "put the demo tenants on their plans first (needs --aggregator)"},
		}, simFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			ctx, stop := signalContext(nullLogger())
			defer stop()
			sim := newSim(c, c.String("agent"), c.String("aggregator"))
			if c.Bool("setup-plans") {
				if sim.agg == "" {
					return fmt.Errorf("--setup-plans needs --aggregator")
				}
				if err := sim.setupPlans(ctx); err != nil {
					return err
				}
			}
			return sim.run(ctx)
		},
	}
}

type simSession struct {
	id     string
	tenant int
	end    time.Time
}

type sessionHeap []simSession

func (h sessionHeap) Len() int           { return len(h) }
func (h sessionHeap) Less(i, j int) bool { return h[i].end.Before(h[j].end) }
func (h sessionHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sessionHeap) Push(x any)        { *h = append(*h, x.(simSession)) }
func (h *sessionHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type simulator struct {
	agent, agg string
	scen       []scenario
	scale      float64
	day        time.Duration
	report     time.Duration
	http       *http.Client
	rng        *rand.Rand
	out        io.Writer

	runID   int64 // in session ids, so runs never reuse an id
	open    sessionHeap
	counts  []int
	refused []int
	next    int
}

func newSim(c *cli.Context, agentAddr, aggAddr string) *simulator {
	s := &simulator{
		agent: "http://" + agentAddr, scen: append([]scenario(nil), demoScenarios...),
		scale: c.Float64("scale"), day: c.Duration("day"), report: c.Duration("report"),
		http: &http.Client{Timeout: 10 * time.Second}, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
		out: os.Stdout,
	}
	if aggAddr != "" {
		s.agg = "http://" + aggAddr
	}
	if l := c.Duration("session-scale"); l > 0 {
		for i := range s.scen {
			s.scen[i].MeanLen = l
		}
	}
	s.counts = make([]int, len(s.scen))
	s.refused = make([]int, len(s.scen))
	return s
}

func (s *simulator) setupPlans(ctx context.Context) error {
	for _, sc := range s.scen {
		if err := s.call(ctx, "PUT", s.agg+"/v1/tenants/"+sc.Tenant+"/plan", map[string]string{"plan": sc.Plan}, nil); err != nil {
			return fmt.Errorf("putting %s on %s: %w", sc.Tenant, sc.Plan, err)
		}
	}
	return nil
}

// call sends a JSON request and returns the status code through code.
func (s *simulator) call(ctx context.Context, method, url string, body any, code *int) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if code != nil {
		*code = resp.StatusCode
		return nil
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d", method, url, resp.StatusCode)
	}
	return nil
}

// run drives the scenarios until ctx ends. The simulator is the agent's
// media server: it starts with POST /v1/reset, as a media server that
// restarted would, so sessions of an earlier run do not linger.
func (s *simulator) run(ctx context.Context) error {
	if err := s.call(ctx, "POST", s.agent+"/v1/reset", nil, nil); err != nil {
		return fmt.Errorf("agent at %s: %w", s.agent, err)
	}
	start := time.Now()
	s.runID = start.Unix()
	s.waitKnown(ctx)
	s.warmUp(ctx, start, float64(start.Hour()))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastReport time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			hour := math.Mod(float64(now.Sub(start))/float64(s.day)*24+float64(start.Hour()), 24)
			s.step(ctx, now, hour)
			if s.report > 0 && now.Sub(lastReport) >= s.report {
				lastReport = now
				s.print(ctx, hour)
			}
		}
	}
}

// step closes the sessions that ended and opens new ones: arrivals are
// Poisson with rate target/mean length, so the open count hovers around the
// target of the hour.
func (s *simulator) step(ctx context.Context, now time.Time, hour float64) {
	for s.open.Len() > 0 && !s.open[0].end.After(now) {
		ss := heap.Pop(&s.open).(simSession)
		var code int
		if s.call(ctx, "DELETE", s.agent+"/v1/sessions/"+ss.id, nil, &code) == nil {
			s.counts[ss.tenant]--
		}
	}
	for i := range s.scen {
		sc := &s.scen[i]
		target := sc.Peak * s.scale * sc.level(hour)
		lambda := target / sc.MeanLen.Seconds() * 0.1 // arrivals in this 100 ms tick
		for n := poisson(s.rng, lambda); n > 0; n-- {
			s.openOne(ctx, i, now)
		}
	}
}

// warmUp opens each scenario's target for the hour at once, so the
// simulation starts in its steady state instead of ramping up for a mean
// session length (lifetimes are exponential, so the remaining lifetime of
// a session already open has the same law as a new one's).
func (s *simulator) warmUp(ctx context.Context, now time.Time, hour float64) {
	for i := range s.scen {
		sc := &s.scen[i]
		for n := int(sc.Peak * s.scale * sc.level(hour)); n > 0 && ctx.Err() == nil; n-- {
			s.openOne(ctx, i, now)
		}
	}
}

func (s *simulator) openOne(ctx context.Context, i int, now time.Time) {
	sc := &s.scen[i]
	s.next++
	id := fmt.Sprintf("sim-%s-%d-%d", sc.Tenant, s.runID, s.next)
	var code int
	err := s.call(ctx, "POST", s.agent+"/v1/sessions", map[string]string{"tenant": sc.Tenant, "class": sc.pickClass(s.rng), "session": id}, &code)
	switch {
	case err != nil:
	case code == http.StatusCreated:
		s.counts[i]++
		life := time.Duration(s.rng.ExpFloat64() * float64(sc.MeanLen))
		heap.Push(&s.open, simSession{id: id, tenant: i, end: now.Add(life)})
	case code == http.StatusTooManyRequests:
		s.refused[i]++
	}
}

// waitKnown waits (up to 10 s) until the agent admits every scenario's
// tenant, i.e. it has been told their plans; each probe session is closed
// again at once.
func (s *simulator) waitKnown(ctx context.Context) {
	deadline := time.Now().Add(10 * time.Second)
	for _, sc := range s.scen {
		probe := fmt.Sprintf("sim-probe-%s-%d", sc.Tenant, s.runID)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			var code int
			err := s.call(ctx, "POST", s.agent+"/v1/sessions", map[string]string{"tenant": sc.Tenant, "class": sc.Mix[0].Class, "session": probe}, &code)
			if err == nil && code/100 == 2 {
				s.call(ctx, "DELETE", s.agent+"/v1/sessions/"+probe, nil, &code)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func poisson(r *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l || k > 1000 {
			return k
		}
		k++
	}
}

func (s *simulator) print(ctx context.Context, hour float64) {
	var b strings.Builder
	fmt.Fprintf(&b, "-- simulated %02d:%02d\n", int(hour), int(math.Mod(hour*60, 60)))
	for i, sc := range s.scen {
		line := fmt.Sprintf("%-10s %-8s local %5d open  refused %d", sc.Tenant, sc.Plan, s.counts[i], s.refused[i])
		if s.agg != "" {
			var t aggregator.TenantJSON
			if err := s.getJSON(ctx, s.agg+"/v1/tenants/"+sc.Tenant, &t); err == nil {
				um := 0.0
				if t.Usage != nil {
					um = t.Usage.UnitMinutes
				}
				line = fmt.Sprintf("%-10s %-8s %5d / %-6d unit-min %10.1f  refused %d", sc.Tenant, t.Plan, t.Concurrency.Total, t.Ceiling, um, s.refused[i])
			}
		}
		b.WriteString(line + "\n")
	}
	fmt.Fprint(s.out, b.String())
}

func (s *simulator) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
