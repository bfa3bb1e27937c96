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
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/urfave/cli/v2"
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
		&cli.StringFlag{Name: "token", Usage: "secret of an operator token for the aggregator (when it runs with --acl)", EnvVars: []string{"HEADROOM_TOKEN"}},
		&cli.DurationFlag{Name: "day", Value: 24 * time.Minute, Usage: "wall time of one simulated day"},
		&cli.DurationFlag{Name: "report", Value: 5 * time.Second, Usage: "how often to print a line per tenant (0: never)"},
		&cli.DurationFlag{Name: "session-scale", Value: 0, Usage: "mean session length override for every scenario (0: each scenario's own)"},
	}
}

func simCommand() *cli.Command {
	return &cli.Command{
		Name:  "sim",
		Usage: "stand in for a media server: open and close the demo tenants' sessions on an agent's local API",
		UsageText: "headroom sim --agent A [--aggregator A [--setup-plans]] [--status-addr A] [--scale F] [--day D]\n\n" +
			"The simulator is the agent's media server: it starts with POST /v1/reset, waits for the agent\n" +
			"(and, with --setup-plans, for the aggregator) as long as it takes, and keeps its own count of\n" +
			"the sessions it holds open. --status-addr serves that count (GET /v1/status), GET /healthz,\n" +
			"and POST /v1/pause and /v1/resume, which stop and restart its traffic with every session kept.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "agent", Value: "127.0.0.1:9380", Usage: "agent API address"},
			&cli.StringFlag{Name: "aggregator", Usage: "aggregator HTTP address, to report the global figures and set up the demo plans"},
			&cli.BoolFlag{Name: "setup-plans", Usage: "put the demo tenants on their plans first (needs --aggregator)"},
			&cli.StringFlag{Name: "status-addr", Usage: "serve the simulator's own counts and pause/resume on this address, e.g. 0.0.0.0:9390 (default: none)"},
		}, simFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := positional(c, 0); err != nil {
				return err
			}
			if c.Bool("setup-plans") && c.String("aggregator") == "" {
				return fmt.Errorf("--setup-plans needs --aggregator")
			}
			ctx, stop := signalContext(nullLogger())
			defer stop()
			sim := newSim(c, c.String("agent"), c.String("aggregator"))
			if addr := c.String("status-addr"); addr != "" {
				_, closeStatus, err := sim.serveStatus(addr)
				if err != nil {
					return err
				}
				defer closeStatus()
			}
			if c.Bool("setup-plans") {
				sim.untilDone(ctx, "setting up the demo plans at "+sim.agg, sim.setupPlans)
			}
			return sim.run(ctx)
		},
	}
}

type simSession struct {
	id     string
	tenant int
	class  string
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
	token      string // Bearer secret for the aggregator's API, if any
	rng        *rand.Rand
	out        io.Writer

	runID int64 // in session ids, so runs never reuse an id
	open  sessionHeap
	// doubtful are opens whose answer was lost (the agent restarting, say):
	// each is asked again with the same id, which the agent answers for
	// the session it already holds, until the answer says whether it is
	// open. They are not counted until then.
	doubtful []simSession
	next     int

	// mu guards what the status API reads and sets; the run loop is the
	// only writer of the counts.
	mu          sync.Mutex
	counts      []int
	classCounts []map[string]int
	refused     []int
	failed      int  // calls that got no answer
	inDoubt     int  // len(doubtful)
	wantPause   bool // asked by POST /v1/pause
	paused      bool // the run loop stopped, with no open in doubt
}

func newSim(c *cli.Context, agentAddr, aggAddr string) *simulator {
	s := &simulator{
		agent: "http://" + agentAddr, scen: append([]scenario(nil), demoScenarios...),
		scale: c.Float64("scale"), day: c.Duration("day"), report: c.Duration("report"),
		http: &http.Client{Timeout: 10 * time.Second}, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
		out: os.Stdout, token: c.String("token"),
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
	s.classCounts = make([]map[string]int, len(s.scen))
	for i := range s.classCounts {
		s.classCounts[i] = map[string]int{}
	}
	return s
}

// authorize adds the token to a request for the aggregator.
func (s *simulator) authorize(req *http.Request) {
	if s.token != "" && s.agg != "" && strings.HasPrefix(req.URL.String(), s.agg) {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
}

// untilDone calls f until it succeeds or ctx ends, backing off from 200 ms
// to 2 s and saying what it waits for on the first failure and every tenth.
func (s *simulator) untilDone(ctx context.Context, what string, f func(context.Context) error) {
	wait := 200 * time.Millisecond
	for n := 0; ; n++ {
		err := f(ctx)
		if err == nil {
			if n > 0 {
				fmt.Fprintf(s.out, "sim: %s: done\n", what)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if n%10 == 0 {
			fmt.Fprintf(s.out, "sim: %s: %v; retrying\n", what, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
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
	s.authorize(req)
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
// restarted would, so sessions of an earlier run do not linger. It waits
// for the agent as long as it takes (an agent and its media server start
// together). Sessions open when ctx ends stay open on the agent.
func (s *simulator) run(ctx context.Context) error {
	reset := func(ctx context.Context) error { return s.call(ctx, "POST", s.agent+"/v1/reset", nil, nil) }
	if s.untilDone(ctx, "resetting the agent at "+s.agent, reset); ctx.Err() != nil {
		return nil
	}
	start := time.Now()
	s.runID = start.UnixNano()
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
			if s.pausing(ctx) {
				continue
			}
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
	s.settleDoubtful(ctx, now)
	var retry []simSession
	for s.open.Len() > 0 && !s.open[0].end.After(now) {
		ss := heap.Pop(&s.open).(simSession)
		var code int
		err := s.call(ctx, "DELETE", s.agent+"/v1/sessions/"+ss.id, nil, &code)
		switch {
		case err == nil && (code == http.StatusOK || code == http.StatusNotFound):
			s.count(ss, -1)
		default: // no answer or a server error: close it again shortly
			s.failed1()
			ss.end = now.Add(time.Second)
			retry = append(retry, ss)
		}
	}
	for _, ss := range retry {
		heap.Push(&s.open, ss)
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
	life := time.Duration(s.rng.ExpFloat64() * float64(sc.MeanLen))
	s.tryOpen(ctx, simSession{id: id, tenant: i, class: sc.pickClass(s.rng), end: now.Add(life)})
}

// tryOpen asks the agent to open ss and reports whether it was admitted. A
// session admitted is counted and closed at ss.end; one whose answer was
// lost is kept in doubt and asked again.
func (s *simulator) tryOpen(ctx context.Context, ss simSession) bool {
	var code int
	err := s.call(ctx, "POST", s.agent+"/v1/sessions", map[string]string{"tenant": s.scen[ss.tenant].Tenant, "class": ss.class, "session": ss.id}, &code)
	switch {
	case err != nil && ctx.Err() == nil, err == nil && code >= 500:
		s.failed1()
		s.doubtful = append(s.doubtful, ss)
		s.mu.Lock()
		s.inDoubt = len(s.doubtful)
		s.mu.Unlock()
	case err != nil:
	case code == http.StatusCreated || code == http.StatusOK:
		s.count(ss, +1)
		heap.Push(&s.open, ss)
		return true
	case code == http.StatusTooManyRequests:
		s.mu.Lock()
		s.refused[ss.tenant]++
		s.mu.Unlock()
	}
	return false
}

// settleDoubtful asks again for every open in doubt: the agent answers 200
// for a session it already holds, 201 for one it admits now, 429 for one
// it refuses, so each ends counted or not, exactly as the agent has it.
func (s *simulator) settleDoubtful(ctx context.Context, now time.Time) {
	d := s.doubtful
	s.doubtful = nil
	for _, ss := range d {
		if ss.end.Before(now) {
			ss.end = now
		}
		s.tryOpen(ctx, ss)
	}
	s.mu.Lock()
	s.inDoubt = len(s.doubtful)
	s.mu.Unlock()
}

func (s *simulator) count(ss simSession, n int) {
	s.mu.Lock()
	s.counts[ss.tenant] += n
	s.classCounts[ss.tenant][ss.class] += n
	if s.classCounts[ss.tenant][ss.class] == 0 {
		delete(s.classCounts[ss.tenant], ss.class)
	}
	s.mu.Unlock()
}

func (s *simulator) failed1() {
	s.mu.Lock()
	s.failed++
	s.mu.Unlock()
}

// waitKnown waits (up to 10 s) until the agent admits every scenario's
// tenant, i.e. it has been told their plans. Each probe is a session like
// any other, closed at the first step.
func (s *simulator) waitKnown(ctx context.Context) {
	deadline := time.Now().Add(10 * time.Second)
	for i, sc := range s.scen {
		probe := simSession{id: fmt.Sprintf("sim-probe-%s-%d", sc.Tenant, s.runID), tenant: i, class: sc.Mix[0].Class}
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if s.tryOpen(ctx, probe) || len(s.doubtful) > 0 {
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
		s.mu.Lock()
		open, refused := s.counts[i], s.refused[i]
		s.mu.Unlock()
		line := fmt.Sprintf("%-10s %-8s local %5d open  refused %d", sc.Tenant, sc.Plan, open, refused)
		if s.agg != "" {
			var t fsm.TenantJSON
			if err := s.getJSON(ctx, s.agg+"/v1/tenants/"+sc.Tenant, &t); err == nil {
				um := 0.0
				if t.Usage != nil {
					um = t.Usage.UnitMinutes
				}
				line = fmt.Sprintf("%-10s %-8s %5d / %-6d unit-min %10.1f  local %5d  refused %d", sc.Tenant, t.Plan, t.Concurrency.Total, t.Ceiling, um, open, refused)
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
	s.authorize(req)
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
