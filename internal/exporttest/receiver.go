// Package exporttest is a billing system's ingest endpoint for tests of the
// usage export: it parses every batch POSTed to it with the CloudEvents Go
// SDK, checks each event's shape, and keeps the usage after deduplication by
// event id, as a receiver must. Only tests import it.
package exporttest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Usage is the data of one headroom.usage event.
type Usage struct {
	Class       string      `json:"class"`
	Seconds     json.Number `json:"seconds"`
	UnitMinutes json.Number `json:"unit_minutes"`
	Region      string      `json:"region"`
	Period      string      `json:"period"`
}

// Reply is what the receiver answers to a batch: a status code, headers,
// and whether it keeps the batch even so (a reply lost on its way back: the
// sender will send it again).
type Reply struct {
	Code   int
	Header http.Header
	Keep   bool
	Body   string
	// Then, if set, runs after the batch is kept and before the answer is
	// written (to hold the answer back).
	Then func()
}

// Receiver is the endpoint. Set Answer before the first batch arrives.
type Receiver struct {
	*httptest.Server
	// Answer decides the reply to the n-th batch (from 1); nil: 200, kept.
	Answer func(n int) Reply

	mu      sync.Mutex
	batches int
	kept    int
	events  int
	maxLen  int
	dupes   int
	sources map[string]bool
	seen    map[string]string // id → what the event said, to check a resend says the same
	totals  map[string]uint64 // tenant/period/class → µs, each id once
	bad     []string
	token   string
}

// New starts a receiver on loopback; it is closed when the test ends by
// the caller (Close).
func New() *Receiver {
	r := &Receiver{sources: map[string]bool{}, seen: map[string]string{}, totals: map[string]uint64{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.batches++
	n := r.batches
	answer := r.Answer
	r.mu.Unlock()
	reply := Reply{Code: http.StatusOK, Keep: true}
	if answer != nil {
		reply = answer(n)
	}
	if reply.Keep {
		r.take(req)
	}
	if reply.Then != nil {
		reply.Then()
	}
	for k, vs := range reply.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(reply.Code)
	w.Write([]byte(reply.Body))
}

// take parses one batch and books its events.
func (r *Receiver) take(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.token = req.Header.Get("Authorization")
	if ct := req.Header.Get("Content-Type"); ct != "application/cloudevents-batch+json" {
		r.bad = append(r.bad, "content type "+ct)
		return
	}
	evs, err := cehttp.NewEventsFromHTTPRequest(req)
	if err != nil {
		r.bad = append(r.bad, "batch not parsed by the CloudEvents SDK: "+err.Error())
		return
	}
	r.kept++
	r.maxLen = max(r.maxLen, len(evs))
	for _, e := range evs {
		r.events++
		if err := e.Validate(); err != nil {
			r.bad = append(r.bad, fmt.Sprintf("event %s invalid: %v", e.ID(), err))
			continue
		}
		var u Usage
		if err := e.DataAs(&u); err != nil {
			r.bad = append(r.bad, fmt.Sprintf("event %s: data: %v", e.ID(), err))
			continue
		}
		micros, err := Micros(u.Seconds)
		switch {
		case err != nil:
			r.bad = append(r.bad, fmt.Sprintf("event %s: seconds: %v", e.ID(), err))
			continue
		case e.SpecVersion() != "1.0" || e.Type() != "headroom.usage" || e.Subject() == "" || e.Time().IsZero() ||
			e.DataContentType() != "application/json" || u.Class == "" || len(u.Period) != 7 || micros == 0:
			b, _ := json.Marshal(e)
			r.bad = append(r.bad, "event of the wrong shape: "+string(b))
			continue
		}
		r.sources[e.Source()] = true
		said := fmt.Sprintf("%s %s %s %s %s %s", e.Subject(), e.Time().UTC().Format("2006-01-02T15:04:05.999999999Z"), u.Class, u.Seconds, u.Region, u.Period)
		if prev, ok := r.seen[e.ID()]; ok {
			r.dupes++
			if prev != said {
				r.bad = append(r.bad, fmt.Sprintf("id %s sent again with other figures: %q, then %q", e.ID(), prev, said))
			}
			continue
		}
		r.seen[e.ID()] = said
		r.totals[e.Subject()+"/"+u.Period+"/"+u.Class] += micros
	}
}

// Micros reads a decimal number of seconds as exact µs.
func Micros(n json.Number) (uint64, error) {
	s := string(n)
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 6 || strings.ContainsAny(s, "eE+-") {
		return 0, fmt.Errorf("%q: not a number of seconds with at most 6 decimals", s)
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %v", s, err)
	}
	f := uint64(0)
	if frac != "" {
		if f, err = strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 64); err != nil {
			return 0, fmt.Errorf("%q: %v", s, err)
		}
	}
	return w*1e6 + f, nil
}

// Stats is what the receiver saw.
type Stats struct {
	Batches  int // POSTs answered
	Kept     int // batches parsed and booked
	Events   int // events in them, duplicates included
	Dupes    int // events whose id was seen before
	MaxBatch int // most events in one batch
	Sources  []string
	Token    string // the Authorization header of the latest batch
}

// Stats returns the figures so far.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Batches: r.batches, Kept: r.kept, Events: r.events, Dupes: r.dupes, MaxBatch: r.maxLen, Token: r.token}
	for src := range r.sources {
		s.Sources = append(s.Sources, src)
	}
	return s
}

// Totals returns the usage received, tenant/period/class → µs, each event
// id counted once.
func (r *Receiver) Totals() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.totals))
	for k, v := range r.totals {
		out[k] = v
	}
	return out
}

// Bad lists what was wrong with the batches (empty when all was well).
func (r *Receiver) Bad() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}
