package api

// The sending half of the usage export (the cursor is in export.go): with
// Config.ExportURL set, the leader cuts the usage into windows and POSTs
// each window's increments to a billing system as CloudEvents 1.0 in batch
// mode (application/cloudevents-batch+json), the shape OpenMeter's ingest
// API takes:
//
//	{"specversion":"1.0","type":"headroom.usage","source":"headroom/3f9c…",
//	 "id":"42.1796079543000000000/acme/2026-12/eu-west/video-fhd",
//	 "time":"2026-12-01T10:05:00.000213Z","subject":"acme","datacontenttype":"application/json",
//	 "data":{"class":"video-fhd","seconds":61.25,"unit_minutes":9.1875,"region":"eu-west","period":"2026-12"}}
//
// One event per tenant, period, agent region and class whose session time
// grew in the window: seconds is the increment (exact, in µs), time the
// window's end, id the cut's number and time with the record and class (the
// same for a resend of the same window, so a receiver drops what it has).
//
// Delivery is at least once. Only the leader (its term's barrier done)
// sends. At a window boundary (multiples of ExportWindow since the epoch)
// with usage to export it cuts; then it sends the cut's records in batches
// of at most ExportBatch events, and commits each batch the receiver
// accepted (2xx) through the log; the next cut waits until every batch of
// this one is committed. A new leader sends what the log does not record as
// acknowledged, with the same ids. Network errors, 408, 429 and 5xx are
// retried with exponential backoff (ExportBackoff doubling up to 30 s) or
// after the Retry-After the receiver gives; another 4xx is logged with the
// body and retried only if it carries Retry-After: otherwise the export
// stops (headroom_export_blocked 1) until another term (a restart or a new
// leader), so a receiver refusing the events (a bad token, say) loses none.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/loop"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headroom-rtc/headroom/plans"
)

// Defaults and bounds of the export's configuration.
const (
	DefaultExportWindow = time.Minute
	MinExportWindow     = 100 * time.Millisecond
	DefaultExportBatch  = 1000
	MaxExportBatch      = 100_000
	// exportTimeout bounds one POST; exportMaxRetryAfter what a receiver's
	// Retry-After may make the leader wait.
	exportTimeout       = 30 * time.Second
	exportMaxRetryAfter = 10 * time.Minute
	exportMaxBackoff    = 30 * time.Second
	// exportAcksInFlight is how many acknowledgements the leader proposes
	// before it waits for the oldest.
	exportAcksInFlight = 4
)

// ExportContentType is the media type of a batch of CloudEvents.
const ExportContentType = "application/cloudevents-batch+json"

// Check validates the export's configuration (an empty URL: off) and
// fills in its defaults.
func (c *ExportConfig) Check() error {
	if c.URL == "" {
		return nil
	}
	if err := checkHTTPURL("export URL", c.URL); err != nil {
		return err
	}
	switch {
	case c.Window == 0:
		c.Window = DefaultExportWindow
	case c.Window < MinExportWindow:
		return fmt.Errorf("export window %v: at least %v", c.Window, MinExportWindow)
	}
	switch {
	case c.Batch == 0:
		c.Batch = DefaultExportBatch
	case c.Batch < fsm.NumClasses || c.Batch > MaxExportBatch:
		return fmt.Errorf("export batch %d: want %d to %d events", c.Batch, fsm.NumClasses, MaxExportBatch)
	}
	if c.Backoff <= 0 {
		c.Backoff = 500 * time.Millisecond
	}
	return nil
}

// exporter sends the export's windows from the leader.
type exporter struct {
	log     hclog.Logger
	fsm     fsm.Reader
	raft    *raft.Raft
	stamp   func() int64 // the time of a new log entry
	now     func() time.Time
	leading func() bool // leader, with its term's barrier done
	url     string
	token   string
	window  int64 // ns
	batch   int
	source  string // configured; "" keeps the state's or makes one
	client  *http.Client
	backoff time.Duration

	// nextCheck is the boundary after one at which there was nothing to
	// cut; blocked the term in which a receiver's refusal stopped the
	// export.
	nextCheck int64
	blocked   atomic.Uint64

	stats exportStats
}

type exportStats struct {
	events, batches atomic.Uint64
	mu              sync.Mutex
	failed          map[string]uint64 // by reason
}

func newExporter(s *Server) *exporter {
	cfg := &s.cfg
	return &exporter{
		log: s.log.Named("export"), fsm: s.fsm, raft: s.node.Raft, stamp: s.stamp, now: cfg.Now,
		leading: func() bool { ok, _ := s.Ready(); return ok && s.node.Raft.State() == raft.Leader },
		url:     cfg.Export.URL, token: cfg.Export.Token, window: int64(cfg.Export.Window), batch: cfg.Export.Batch,
		source: cfg.Export.Source, backoff: cfg.Export.Backoff,
		client: &http.Client{
			Timeout:       exportTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		stats: exportStats{failed: map[string]uint64{}},
	}
}

// run steps the export until ctx ends: a few times a window, at most every
// second.
func (x *exporter) run(ctx context.Context) {
	loop.Every(ctx, min(max(time.Duration(x.window)/4, 20*time.Millisecond), time.Second), func() { x.step(ctx) })
}

// step sends the latest cut's unacknowledged records, or cuts a window
// once its boundary has passed.
func (x *exporter) step(ctx context.Context) {
	if !x.leading() || x.blocked.Load() == x.raft.CurrentTerm() {
		return
	}
	var st fsm.ExportState
	var recs []fsm.ExportRecord
	x.fsm.Read(func(s fsm.View) {
		if s.Export() != nil {
			st = *s.Export()
		}
		recs = s.ExportPending()
	})
	if len(recs) == 0 {
		if st.Pending() > 0 {
			x.log.Error("export cursor counts records pending that it cannot find", "cut", st.Seq, "pending", st.Pending())
			return
		}
		now := x.now().UnixNano()
		if now < max((st.To/x.window+1)*x.window, x.nextCheck) {
			return
		}
		var dirty bool
		x.fsm.Read(func(s fsm.View) { dirty = s.ExportDirty() })
		if !dirty {
			x.nextCheck = (now/x.window + 1) * x.window // nothing new: look again at the next boundary
			return
		}
		if !x.cut(st) {
			return
		}
		x.fsm.Read(func(s fsm.View) {
			st = *s.Export()
			recs = s.ExportPending()
		})
	}
	x.send(ctx, st, recs)
}

// cut proposes the cut after st's.
func (x *exporter) cut(st fsm.ExportState) bool {
	src := x.source
	if src == "" {
		src = st.Source
	}
	if src == "" {
		var r [6]byte
		crand.Read(r[:])
		src = "headroom/" + hex.EncodeToString(r[:])
	}
	if err := x.commit(fsm.CmdExportCut, &fsm.ExportCutCmd{Time: x.stamp(), Seq: st.Seq + 1, Source: src}); err != nil {
		x.log.Warn("export window not cut", "cut", st.Seq+1, "error", err)
		return false
	}
	return true
}

func (x *exporter) commit(kind fsm.CmdKind, c fsm.Command) error {
	data, err := fsm.EncodeCmd(kind, c)
	if err != nil {
		return err
	}
	f := x.raft.Apply(data, 10*time.Second)
	return applyErr(f)
}

// applyErr is a proposal's error: not committed, or refused by the state
// machine.
func applyErr(f raft.ApplyFuture) error {
	if err := f.Error(); err != nil {
		return err
	}
	if res, _ := f.Response().(*fsm.ApplyResult); res != nil && res.Err != nil {
		return res.Err
	}
	return nil
}

// send POSTs the records in batches, committing each one accepted.
func (x *exporter) send(ctx context.Context, st fsm.ExportState, recs []fsm.ExportRecord) {
	start := time.Now()
	var acks []raft.ApplyFuture
	waitAck := func(f raft.ApplyFuture) bool {
		if err := applyErr(f); err != nil {
			x.log.Warn("export acknowledgement not committed; the next leader resends", "cut", st.Seq, "error", err)
			return false
		}
		return true
	}
	defer func() {
		for _, f := range acks {
			waitAck(f)
		}
	}()
	events, batches := 0, 0
	body := make([]byte, 0, 64<<10)
	for i := 0; i < len(recs); {
		body = append(body[:0], '[')
		n, j := 0, i
		for ; j < len(recs); j++ {
			k := recs[j].Events()
			if n > 0 && n+k > x.batch {
				break
			}
			for c, d := range recs[j].Delta {
				if d > 0 {
					if n > 0 {
						body = append(body, ',')
					}
					body = appendEvent(body, &st, &recs[j], c, d)
					n++
				}
			}
		}
		body = append(body, ']')
		if !x.post(ctx, body, n) {
			return
		}
		x.stats.events.Add(uint64(n))
		x.stats.batches.Add(1)
		events, batches = events+n, batches+1
		refs := make([]fsm.ExportRef, 0, j-i)
		for _, r := range recs[i:j] {
			refs = append(refs, r.ExportRef)
		}
		data, err := fsm.EncodeCmd(fsm.CmdExportAck, &fsm.ExportAckCmd{Time: x.stamp(), Seq: st.Seq, Records: refs})
		if err != nil {
			x.log.Error("export acknowledgement not encoded", "error", err)
			return
		}
		acks = append(acks, x.raft.Apply(data, 10*time.Second))
		if len(acks) >= exportAcksInFlight {
			f := acks[0]
			acks = acks[1:]
			if !waitAck(f) {
				return
			}
		}
		i = j
	}
	x.log.Info("export window sent", "cut", st.Seq, "window_end", time.Unix(0, st.To).UTC().Format(time.RFC3339Nano),
		"records", len(recs), "events", events, "batches", batches, "took", time.Since(start).Round(time.Millisecond))
}

// post sends one batch until the receiver accepts it. It gives up (false)
// when ctx ends, when this server stops leading, and on a refusal that is
// not to be retried.
func (x *exporter) post(ctx context.Context, body []byte, events int) bool {
	wait := x.backoff
	for attempt := 1; ; attempt++ {
		retry, after, err := x.postOnce(ctx, body)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !retry {
			x.blocked.Store(x.raft.CurrentTerm())
			x.log.Error("export receiver refused a batch, not retried: export stopped until a restart or a new leader",
				"events", events, "error", err)
			return false
		}
		d := after
		if d <= 0 {
			d = wait/2 + rand.N(wait/2+1) // jitter
			wait = min(2*wait, exportMaxBackoff)
		}
		x.log.Warn("export batch not accepted; retrying", "events", events, "attempt", attempt, "retry_in", d, "error", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
		if !x.leading() {
			x.log.Info("no longer leader: leaving the export to the new leader")
			return false
		}
	}
}

// postOnce sends one batch: retry says whether a failure may be retried,
// after how long the receiver asked for (0: the backoff's).
func (x *exporter) postOnce(ctx context.Context, body []byte) (retry bool, after time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Content-Type", ExportContentType)
	req.Header.Set("User-Agent", "headroom")
	if x.token != "" {
		req.Header.Set("Authorization", "Bearer "+x.token)
	}
	resp, err := x.client.Do(req)
	if err != nil {
		x.failed("network")
		return true, 0, err
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return false, 0, nil
	}
	after = retryAfter(resp.Header.Get("Retry-After"), x.now())
	err = fmt.Errorf("receiver answered %s: %q", resp.Status, bytes.TrimSpace(text))
	switch {
	case code == http.StatusTooManyRequests:
		x.failed("429")
		return true, after, err
	case code >= 500 || code == http.StatusRequestTimeout:
		x.failed("5xx")
		return true, after, err
	default:
		x.failed("4xx")
		return after > 0, after, err
	}
}

func (x *exporter) failed(reason string) {
	x.stats.mu.Lock()
	x.stats.failed[reason]++
	x.stats.mu.Unlock()
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), 0 when
// absent or unreadable, at most exportMaxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), exportMaxRetryAfter)
}

// appendEvent appends the event of class c of a record of cut st.
func appendEvent(b []byte, st *fsm.ExportState, r *fsm.ExportRecord, c int, micros uint64) []byte {
	class := className[c]
	b = append(b, `{"specversion":"1.0","type":"headroom.usage","source":`...)
	b = appendJSONString(b, st.Source)
	b = append(b, `,"id":"`...)
	b = strconv.AppendUint(b, st.Seq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, st.To, 10)
	for _, part := range [...]string{r.Tenant, r.Period, r.Region, class} {
		b = append(b, '/')
		b = appendJSONStringBody(b, url.PathEscape(part))
	}
	b = append(b, `","time":"`...)
	b = time.Unix(0, st.To).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","subject":`...)
	b = appendJSONString(b, r.Tenant)
	b = append(b, `,"datacontenttype":"application/json","data":{"class":"`...)
	b = append(b, class...)
	b = append(b, `","seconds":`...)
	b = appendMicros(b, micros)
	b = append(b, `,"unit_minutes":`...)
	w := plans.Class(c + 1).Weight(plans.DefaultAIWeight)
	b = strconv.AppendFloat(b, float64(micros)*float64(w)/60e6, 'f', -1, 64)
	b = append(b, `,"region":`...)
	b = appendJSONString(b, r.Region)
	b = append(b, `,"period":"`...)
	b = append(b, r.Period...)
	return append(b, `"}}`...)
}

// appendMicros appends µs as an exact decimal number of seconds.
func appendMicros(b []byte, micros uint64) []byte {
	b = strconv.AppendUint(b, micros/1e6, 10)
	frac := micros % 1e6
	if frac == 0 {
		return b
	}
	var digits [7]byte
	s := strconv.AppendUint(digits[:0], 1e6+frac, 10)[1:] // six digits, leading zeros kept
	for len(s) > 0 && s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	return append(append(b, '.'), s...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	return append(appendJSONStringBody(append(b, '"'), s), '"')
}

// appendJSONStringBody appends s escaped for the inside of a JSON string.
func appendJSONStringBody(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // the rare case: let encoding/json escape it
			return append(b, q[1:len(q)-1]...)
		}
	}
	return append(b, s...)
}

// Metrics of the export, read when scraped.
var (
	descExportEvents  = desc("headroom_export_events_sent_total", "Usage events the export's receiver accepted (on this server, as leader).")
	descExportBatches = desc("headroom_export_batches_sent_total", "Batches of usage events the export's receiver accepted (on this server, as leader).")
	descExportFailed  = desc("headroom_export_batches_failed_total", "Batches the export's receiver did not accept, by reason: network, 5xx (and 408), 429, 4xx.", "reason")
	descExportLag     = desc("headroom_export_lag_seconds", "How far the export trails while a window is not acknowledged whole: now minus the window's start, the end of the latest one acknowledged (0 when none is pending).")
	descExportPending = desc("headroom_export_pending_records", "Records (tenant, period, region) of the latest window not acknowledged yet.")
	descExportBlocked = desc("headroom_export_blocked", "1 while a receiver's refusal (a 4xx without Retry-After) stops the export, until a restart or a new leader.")
)

func (x *exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExportEvents, descExportBatches, descExportFailed, descExportLag, descExportPending, descExportBlocked} {
		ch <- d
	}
}

func (x *exporter) Collect(ch chan<- prometheus.Metric) {
	counter(ch, descExportEvents, float64(x.stats.events.Load()))
	counter(ch, descExportBatches, float64(x.stats.batches.Load()))
	x.stats.mu.Lock()
	for _, r := range []string{"network", "5xx", "429", "4xx"} {
		counter(ch, descExportFailed, float64(x.stats.failed[r]), r)
	}
	x.stats.mu.Unlock()
	var st fsm.ExportState
	x.fsm.Read(func(s fsm.View) {
		if s.Export() != nil {
			st = *s.Export()
		}
	})
	lag := 0.0
	if st.Pending() > 0 {
		lag = max(x.now().Sub(time.Unix(0, st.From)).Seconds(), 0)
	}
	gauge(ch, descExportLag, lag)
	gauge(ch, descExportPending, float64(st.Pending()))
	blocked := 0.0
	if b := x.blocked.Load(); b != 0 && b == x.raft.CurrentTerm() {
		blocked = 1
	}
	gauge(ch, descExportBlocked, blocked)
}
