package api

// Alerts tell an operator that a tenant is using much of what its plan
// allows: its open sessions against the plan's ceiling ("concurrency"), and
// the unit-minutes of the current period against the plan's included ones
// ("unit-minutes"), at utilization thresholds (70%, 90% and 100% by
// default). Each alert is a log line on the leader and, with a webhook, a
// JSON POST retried with backoff.
//
// Detection. Every server, leader or not, checks the tenants each log entry
// changed right after the entry is applied (FSM.onChange), against the state
// as that entry left it. So every server sees the same crossings, at the
// same Raft index, and computes the same alert ids. A threshold fires when
// utilization reaches it from below, once: it re-arms only after
// utilization has fallen below the threshold by alertHysteresisPct
// percentage points (to zero for thresholds at or below that), so a tenant
// hovering at its ceiling alerts once, not on every batch. An entry that
// crosses several thresholds at once fires the highest only. Unit-minutes
// only grow within a period, so they fire at most once per threshold and
// period (unless the plan changes); concurrency fires again after each
// re-arm.
//
// Ids. An alert's id is a hash of tenant, kind, threshold, period and the
// Raft index of the entry that crossed: the same on every server, different
// for every crossing. Receivers drop an id they have seen.
//
// Delivery is at least once, within bounds. Only the leader (with its
// term's barrier done) sends, oldest first, one at a time: a POST with a
// timeout, retried with exponential backoff on network errors, 408, 429 and
// 5xx, up to alertAttempts times; another 4xx is not retried. Crossings
// wait in a bounded queue (alertQueueSize); when it is full the oldest are
// dropped, with a log line and a counter. A server that becomes leader
// sends again the crossings of the last alertReplayWindow (by entry time)
// that it did not finish sending itself, with their ids: the old leader may
// not have delivered them, and a receiver drops those it did. An alert older
// than the window at a failover, or one whose attempts ran out, is not sent
// again.
//
// Standing alerts are not refired. A new leader's detector has followed the
// log all along, so what already stands is marked fired there too. A server
// that starts, or restores a snapshot, primes its detector from that state:
// thresholds a tenant already reaches count as fired. That is where
// servers' detectors can differ: a tenant primed within a threshold's
// hysteresis band is armed, where a server that saw it come down from above
// still holds the threshold fired, so the primed server may alert a
// crossing the others do not. Entries applied while a server starts, before
// New sets the hook, are not checked (the tenant is, at its next change).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/plans"
)

// DefaultAlertThresholds are the utilization percentages alerts fire at
// when Config.AlertThresholds is empty.
var DefaultAlertThresholds = []uint32{70, 90, 100}

const (
	// alertHysteresisPct is how far (percentage points) utilization must
	// fall below a threshold before the threshold fires again.
	alertHysteresisPct = 5
	// maxAlertThresholds bounds the thresholds (a bit each per kind).
	maxAlertThresholds = 16
	// maxAlertThresholdPct is the highest threshold (a soft plan's burst
	// may take concurrency well above its ceiling).
	maxAlertThresholdPct = 1000
	// alertQueueSize bounds the crossings kept for sending and resending.
	alertQueueSize = 1024
	// alertReplayWindow is how far back a new leader resends crossings.
	alertReplayWindow = 5 * time.Minute
	// alertAttempts bounds the POSTs of one alert.
	alertAttempts = 6
	// alertTimeout bounds one POST.
	alertTimeout = 10 * time.Second
	// alertPoll is how often the sender checks whether this server leads.
	alertPoll = 250 * time.Millisecond
)

// AlertKind is what an alert measures.
type AlertKind string

const (
	// AlertConcurrency compares a tenant's open sessions with its plan's
	// ceiling.
	AlertConcurrency AlertKind = "concurrency"
	// AlertUnitMinutes compares a tenant's unit-minutes of the current
	// period with its plan's included unit-minutes.
	AlertUnitMinutes AlertKind = "unit-minutes"
	// AlertMAU compares a tenant's monthly active users of the current
	// period with its plan's included ones.
	AlertMAU AlertKind = "mau"
)

// alertKinds are the kinds, by index in the marks.
var alertKinds = [3]AlertKind{AlertConcurrency, AlertUnitMinutes, AlertMAU}

// kindMarks are one tenant's marks, a word of threshold bits per kind.
type kindMarks [len(alertKinds)]uint32

// Alert is the JSON body of a webhook POST.
type Alert struct {
	// ID is the same for every delivery of one crossing, on every server:
	// a receiver drops an id it has seen.
	ID     string    `json:"id"`
	Tenant string    `json:"tenant"`
	Plan   string    `json:"plan"`
	Kind   AlertKind `json:"kind"`
	// ThresholdPct is the threshold crossed, in percent of Limit.
	ThresholdPct uint32 `json:"threshold_pct"`
	// Value is the open sessions, the unit-minutes used in Period, or its
	// monthly active users.
	Value float64 `json:"value"`
	// Limit is the plan's ceiling, its included unit-minutes or MAU.
	Limit uint64 `json:"limit"`
	// Utilization is Value/Limit in percent, to two decimals.
	Utilization float64 `json:"utilization"`
	// Period is the billing period of the crossing ("2026-11").
	Period string `json:"period"`
	// At is the time of the log entry that crossed (RFC3339, UTC).
	At string `json:"at"`
	// RaftIndex is the index of that entry.
	RaftIndex uint64 `json:"raft_index"`
	Message   string `json:"message"`
}

// ParseAlertThresholds parses a comma-separated list of utilization
// percentages such as "70,90,100": 1 to 1000, ascending. Its errors do not
// name the setting; the caller does.
func ParseAlertThresholds(s string) ([]uint32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty: want ascending percentages such as 70,90,100")
	}
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(f), "%"))
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole percentage from 1 to %d", f, maxAlertThresholdPct)
		}
		out = append(out, uint32(n))
	}
	if err := ValidateAlertThresholds(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateAlertThresholds checks thresholds: 1 to 1000, ascending, at most
// maxAlertThresholds.
func ValidateAlertThresholds(ths []uint32) error {
	if len(ths) > maxAlertThresholds {
		return fmt.Errorf("%d given, at most %d", len(ths), maxAlertThresholds)
	}
	for i, th := range ths {
		if th < 1 || th > maxAlertThresholdPct {
			return fmt.Errorf("%d: want a percentage from 1 to %d", th, maxAlertThresholdPct)
		}
		if i > 0 && th <= ths[i-1] {
			return fmt.Errorf("%d after %d: want ascending percentages without repeats, such as 70,90,100", th, ths[i-1])
		}
	}
	return nil
}

// ValidateWebhook checks an alert webhook URL.
func ValidateWebhook(raw string) error { return checkHTTPURL("alert webhook", raw) }

// checkHTTPURL checks that raw, the URL of what, is an http:// or https://
// URL with a host.
func checkHTTPURL(what, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: want an http:// or https:// URL", what, raw)
	}
	return nil
}

// alertRec is one crossing in the queue.
type alertRec struct {
	seq   uint64
	at    int64 // entry time, unix ns
	alert Alert
}

// alertStats counts what the alerter did.
type alertStats struct {
	Detected uint64 // crossings seen (every server)
	Sent     uint64 // delivered (2xx), or logged without a webhook
	Failed   uint64 // given up after the attempts or a 4xx
	Dropped  uint64 // dropped unsent from a full queue
}

// alerter detects threshold crossings on every server and, on the leader,
// delivers them.
type alerter struct {
	log        hclog.Logger
	fsm        fsm.Reader
	thresholds []uint32
	webhook    string // "" logs alerts only
	client     *http.Client
	// leading reports whether this server is the leader and has applied
	// everything committed before its term.
	leading func() bool
	now     func() time.Time
	// backoff is the first retry's delay; it doubles up to maxBackoff.
	backoff, maxBackoff time.Duration
	attempts            int
	wake                chan struct{}
	// onAlert, if set, is told of each crossing as it is detected, under
	// the alerter's lock and the state's read lock: it must not block.
	onAlert func(Alert)

	mu sync.Mutex
	// state is the view of the state the marks were computed from, kept
	// to be compared only (never read outside a Read): another one means
	// the FSM restored a snapshot.
	state fsm.View
	// marks holds, per tenant and kind, the thresholds fired and not yet
	// re-armed (bit i for thresholds[i]); tenants with none are absent.
	marks map[string]kindMarks
	// period is the period the unit-minutes marks are of.
	period string
	// ring is the queue: crossing seq s sits at ring[(s-1)%len(ring)].
	ring []alertRec
	last uint64 // seq of the newest crossing
	// The sender's position: leader is its view of leadership at its last
	// look, cursor the last seq it took, sentThrough the last it finished.
	leader      bool
	cursor      uint64
	sentThrough uint64
	stats       alertStats
}

func newAlerter(sm fsm.Reader, log hclog.Logger, thresholds []uint32, webhook string, queue int, leading func() bool, now func() time.Time) *alerter {
	if len(thresholds) == 0 {
		thresholds = DefaultAlertThresholds
	}
	a := &alerter{
		log: log, fsm: sm, thresholds: append([]uint32(nil), thresholds...), webhook: webhook,
		client: &http.Client{
			Timeout:       alertTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		leading: leading, now: now, backoff: 500 * time.Millisecond, maxBackoff: 30 * time.Second,
		attempts: alertAttempts, wake: make(chan struct{}, 1), ring: make([]alertRec, max(queue, 1)),
	}
	sm.Read(a.prime)
	return a
}

// changed checks the tenants an entry changed; FSM.onChange calls it right
// after the entry, so the state is the one the entry left. It does not
// block: the sender is woken with a non-blocking send.
func (a *alerter) changed(names []string) {
	crossed := false
	a.fsm.Read(func(st fsm.View) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if st != a.state {
			a.primeLocked(st)
			return
		}
		pass := alertPass{st: st, period: plans.PeriodOf(time.Unix(0, st.Time())).String()}
		if period := pass.period; period != a.period { // a new period's unit-minutes start from nothing
			a.period = period
			for name, m := range a.marks {
				if m[1], m[2] = 0, 0; m == (kindMarks{}) {
					delete(a.marks, name)
				} else {
					a.marks[name] = m
				}
			}
		}
		for _, n := range names {
			if a.check(&pass, n) {
				crossed = true
			}
		}
	})
	if crossed {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// prime sets the marks from a state without alerting: every threshold a
// tenant reaches counts as fired.
func (a *alerter) prime(st fsm.View) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.primeLocked(st)
}

func (a *alerter) primeLocked(st fsm.View) {
	a.state = st
	a.marks = make(map[string]kindMarks)
	pass := alertPass{st: st, period: plans.PeriodOf(time.Unix(0, st.Time())).String()}
	a.period = pass.period
	for name, t := range st.Tenants() {
		var m kindMarks
		for k, l := range pass.levels(t) {
			if l.limit == 0 {
				continue
			}
			util := l.utilization()
			for i, th := range a.thresholds {
				if util >= float64(th) {
					m[k] |= 1 << i
				}
			}
		}
		if m != (kindMarks{}) {
			a.marks[name] = m
		}
	}
}

// alertLevel is one kind's figure for a tenant; limit 0 means the plan
// sets none.
type alertLevel struct {
	value float64
	limit uint64
}

func (l alertLevel) utilization() float64 { return 100 * l.value / float64(l.limit) }

// alertPass checks tenants against one state: the one an entry left.
type alertPass struct {
	st     fsm.View
	period string // of the entry's time
	limits []planLimits
}

// planLimits caches what alerts need of a plan: its ceiling (0 for none)
// and its included unit-minutes.
type planLimits struct {
	plan                   string
	ceiling, included, mau uint64
}

func (p *alertPass) plan(name string) planLimits {
	for _, l := range p.limits {
		if l.plan == name {
			return l
		}
	}
	l := planLimits{plan: name}
	if pl, ok := p.st.Plan(name); ok {
		if pl.Mode != plans.Meter {
			l.ceiling = pl.Ceiling
		}
		l.included, l.mau = pl.IncludedUnitMinutes, pl.IncludedMAU
	}
	if len(p.limits) < 8 { // the few plans most tenants are on
		p.limits = append(p.limits, l)
	}
	return l
}

// levels returns a tenant's concurrency, unit-minutes and active users of
// the period against its plan.
func (p *alertPass) levels(t *fsm.Tenant) [len(alertKinds)]alertLevel {
	l := p.plan(t.Plan)
	out := [len(alertKinds)]alertLevel{{limit: l.ceiling}, {limit: l.included}, {limit: l.mau}}
	if l.ceiling > 0 {
		out[0].value = float64(t.Open.Total())
	}
	if u := t.Usage[p.period]; u != nil {
		if l.included > 0 {
			out[1].value = fsm.UnitMinutes(u)
		}
		if l.mau > 0 {
			out[2].value = float64(u.MAU)
		}
	}
	return out
}

// rearmed reports whether utilization has fallen far enough below th for it
// to fire again.
func rearmed(util float64, th uint32) bool {
	if th <= alertHysteresisPct {
		return util <= 0
	}
	return util < float64(th-alertHysteresisPct)
}

// check updates a tenant's marks and queues its crossings; under a.mu.
func (a *alerter) check(p *alertPass, name string) bool {
	t := p.st.Tenant(name)
	if t == nil {
		delete(a.marks, name)
		return false
	}
	old := a.marks[name]
	m := old
	crossed := false
	for k, l := range p.levels(t) {
		if l.limit == 0 {
			m[k] = 0 // no limit: a later one starts armed
			continue
		}
		util := l.utilization()
		top := -1
		for i, th := range a.thresholds {
			bit := uint32(1) << i
			switch {
			case m[k]&bit != 0 && rearmed(util, th):
				m[k] &^= bit
			case m[k]&bit == 0 && util >= float64(th):
				m[k] |= bit
				top = i
			}
		}
		if top >= 0 {
			a.push(p, t, alertKinds[k], a.thresholds[top], l)
			crossed = true
		}
	}
	switch {
	case m == old:
	case m == (kindMarks{}):
		delete(a.marks, name)
	default:
		a.marks[name] = m
	}
	return crossed
}

// push queues a crossing, overwriting the oldest when the queue is full.
func (a *alerter) push(p *alertPass, t *fsm.Tenant, kind AlertKind, th uint32, l alertLevel) {
	st, period := p.st, p.period
	util := math.Round(l.utilization()*100) / 100
	what := "concurrency ceiling"
	switch kind {
	case AlertUnitMinutes:
		what = "included unit-minutes of " + period
	case AlertMAU:
		what = "included monthly active users of " + period
	}
	al := Alert{
		ID: alertID(t.Name, kind, th, period, st.Index()), Tenant: t.Name, Plan: t.Plan, Kind: kind,
		ThresholdPct: th, Value: l.value, Limit: l.limit, Utilization: util, Period: period,
		At: time.Unix(0, st.Time()).UTC().Format(time.RFC3339), RaftIndex: st.Index(),
		Message: fmt.Sprintf("tenant %s reached %d%% of its %s on plan %s: %s of %d (%s%%)",
			t.Name, th, what, t.Plan, strconv.FormatFloat(l.value, 'f', -1, 64), l.limit, strconv.FormatFloat(util, 'f', -1, 64)),
	}
	a.last++
	a.stats.Detected++
	a.ring[(a.last-1)%uint64(len(a.ring))] = alertRec{seq: a.last, at: st.Time(), alert: al}
	if a.onAlert != nil {
		a.onAlert(al)
	}
}

// alertID is the id of one crossing: the same on every server.
func alertID(tenant string, kind AlertKind, th uint32, period string, index uint64) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%s\x00%d", tenant, kind, th, period, index)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// first is the oldest seq still queued; under a.mu.
func (a *alerter) first() uint64 {
	if n := uint64(len(a.ring)); a.last > n {
		return a.last - n + 1
	}
	return 1
}

// run delivers crossings while this server leads, until ctx ends.
func (a *alerter) run(ctx context.Context) {
	tick := time.NewTicker(alertPoll)
	defer tick.Stop()
	for {
		for ctx.Err() == nil {
			rec, ok := a.next()
			if !ok {
				break
			}
			a.deliver(ctx, rec)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.wake:
		}
	}
}

// next takes the oldest crossing not yet handled, if this server leads. A
// server that has just become leader starts from the crossings of the last
// alertReplayWindow it has not sent itself.
func (a *alerter) next() (alertRec, bool) {
	leading := a.leading()
	var replayed, dropped, droppedTotal uint64
	defer func() { // log without holding a.mu, which Apply takes
		if replayed > 0 {
			a.log.Info("leading: resending recent alerts; receivers drop those already delivered by id",
				"alerts", replayed, "window", alertReplayWindow)
		}
		if dropped > 0 {
			a.log.Warn("alert queue full: dropped the oldest alerts unsent",
				"dropped", dropped, "dropped_total", droppedTotal, "queue", len(a.ring))
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !leading {
		a.leader = false
		return alertRec{}, false
	}
	if !a.leader {
		a.leader = true
		since := a.now().Add(-alertReplayWindow).UnixNano()
		a.cursor = max(a.sentThrough, a.first()-1)
		for a.cursor < a.last && a.ring[a.cursor%uint64(len(a.ring))].at < since {
			a.cursor++
		}
		replayed = a.last - a.cursor
	}
	if f := a.first(); a.cursor+1 < f {
		dropped = f - 1 - a.cursor
		a.stats.Dropped += dropped
		droppedTotal = a.stats.Dropped
		a.cursor = f - 1
	}
	if a.cursor >= a.last {
		return alertRec{}, false
	}
	a.cursor++
	return a.ring[(a.cursor-1)%uint64(len(a.ring))], true
}

// finish records the end of a crossing's delivery.
func (a *alerter) finish(seq uint64, sent bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sentThrough = max(a.sentThrough, seq)
	if sent {
		a.stats.Sent++
	} else {
		a.stats.Failed++
	}
}

func (a *alerter) snapshot() alertStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// deliver logs an alert and POSTs it to the webhook, retrying with
// backoff. It gives up on ctx's end and when this server stops leading
// (the new leader resends).
func (a *alerter) deliver(ctx context.Context, rec alertRec) {
	al := &rec.alert
	a.log.Info("alert", "id", al.ID, "tenant", al.Tenant, "plan", al.Plan, "kind", al.Kind,
		"threshold_pct", al.ThresholdPct, "value", al.Value, "limit", al.Limit,
		"utilization", al.Utilization, "period", al.Period, "at", al.At)
	if a.webhook == "" {
		a.finish(rec.seq, true)
		return
	}
	body, err := json.Marshal(al)
	if err != nil {
		a.log.Error("alert not encoded", "id", al.ID, "error", err)
		a.finish(rec.seq, false)
		return
	}
	wait := a.backoff
	for attempt := 1; ; attempt++ {
		retry, err := a.post(ctx, body, al.ID)
		if err == nil {
			a.finish(rec.seq, true)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !retry || attempt >= a.attempts {
			a.log.Error("alert not delivered; giving up", "id", al.ID, "tenant", al.Tenant, "attempts", attempt, "error", err)
			a.finish(rec.seq, false)
			return
		}
		d := wait/2 + rand.N(wait/2+1) // jitter, so servers do not retry in step
		a.log.Warn("alert webhook failed; retrying", "id", al.ID, "attempt", attempt, "retry_in", d, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		wait = min(2*wait, a.maxBackoff)
		if !a.leading() {
			a.log.Info("no longer leader: leaving the alert to the new leader", "id", al.ID)
			return
		}
	}
}

// post sends one alert; retry says whether a failure is worth retrying.
func (a *alerter) post(ctx context.Context, body []byte, id string) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.webhook, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "headroom")
	req.Header.Set("Idempotency-Key", id)
	resp, err := a.client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, fmt.Errorf("webhook answered %s (not retried)", resp.Status)
	}
}
