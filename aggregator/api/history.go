package api

// Recent history for the dashboard: each server keeps, per tenant, the
// peak and the ceiling of every minute of the last six hours, so a chart
// of the last hour is full as soon as it opens. It lives beside the Raft
// state, not in it: every server builds it from the entries it applies
// (FSM.onChange, reading the state as each entry left it, minutes of entry
// time), so servers that applied the same entries hold the same series. It
// is not kept across a restart: a server that starts fills it from then
// on (and from the entries it replays, which carry their own times).
//
// A minute's peak is the highest open count, all classes, that an entry of
// that minute left the tenant with; a minute without an entry of the
// tenant carries the count the previous one ended at. The ceiling is the
// plan's (0: none).
//
// Memory is bounded: series of at most historyMinutes points, for at most
// maxTenants tenants, the busiest by their highest peak kept. A tenant not
// kept gets in when its count is above the lowest such peak of those kept,
// which it then replaces.

import (
	"container/heap"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

const (
	// historyMinutes is how far back a series goes: six hours.
	historyMinutes = 360
	// DefaultHistoryMaxTenants is how many tenants' series a server keeps
	// unless Config.HistoryMaxTenants says otherwise.
	DefaultHistoryMaxTenants = 10_000
	// MaxHistoryMaxTenants bounds Config.HistoryMaxTenants.
	MaxHistoryMaxTenants = 1_000_000
)

// histPoint is one minute of a series.
type histPoint struct{ peak, ceil uint32 }

// histSeries is one tenant's minutes, pts[i] being minute first+i (unix
// minutes), without gaps.
type histSeries struct {
	name  string
	first int64
	pts   []histPoint
	level uint32 // the open count the latest entry left
	score uint32 // the highest peak of pts
	i     int    // index in the heap
}

// history is a server's series; safe for concurrent use.
type history struct {
	max    int
	mu     sync.Mutex
	series map[string]*histSeries
	heap   histHeap // the least busy series first
}

func newHistory(max int) *history {
	return &history{max: max, series: make(map[string]*histSeries)}
}

// changed records the tenants an entry changed (FSM.onChange), as the
// entry left them. It takes the read lock of the state.
func (h *history) changed(f fsm.Reader, names []string) {
	f.Read(func(st fsm.View) {
		minute := st.Time() / int64(time.Minute)
		h.mu.Lock()
		defer h.mu.Unlock()
		plan, ceil := "", uint32(0)
		for i, n := range names {
			t := st.Tenant(n)
			if t == nil {
				h.dropLocked(n)
				continue
			}
			if i == 0 || t.Plan != plan { // tenants of one batch often share a plan
				plan, ceil = t.Plan, clamp32(fsm.CeilingOf(st, t.Plan))
			}
			h.recordLocked(n, minute, clamp32(t.Open.Total()), ceil)
		}
	})
}

func clamp32(v uint64) uint32 { return uint32(min(v, math.MaxUint32)) }

func (h *history) dropLocked(name string) {
	if s := h.series[name]; s != nil {
		heap.Remove(&h.heap, s.i)
		delete(h.series, name)
	}
}

// recordLocked notes a tenant's open count and ceiling at minute.
func (h *history) recordLocked(name string, minute int64, open, ceil uint32) {
	s := h.series[name]
	if s == nil {
		if open == 0 {
			return // nothing to chart yet
		}
		if len(h.series) >= h.max {
			if least := h.heap[0]; !histBusier(open, name, least.score, least.name) {
				return
			}
			h.dropLocked(h.heap[0].name)
		}
		s = &histSeries{name: name, first: minute, pts: []histPoint{{peak: open, ceil: ceil}}, level: open, score: open}
		h.series[name] = s
		heap.Push(&h.heap, s)
		return
	}
	before := s.score
	s.advance(minute)
	p := &s.pts[len(s.pts)-1]
	p.peak, p.ceil, s.level = max(p.peak, open), ceil, open
	s.score = max(s.score, p.peak)
	if s.score != before {
		heap.Fix(&h.heap, s.i)
	}
}

// advance extends the series to minute: each new minute starts at the
// count the previous one ended at. Minutes beyond the horizon are dropped.
func (s *histSeries) advance(minute int64) {
	last := s.first + int64(len(s.pts)) - 1
	if minute <= last {
		return
	}
	ceil := s.pts[len(s.pts)-1].ceil
	if minute-last >= historyMinutes {
		s.first, s.pts = minute, append(s.pts[:0], histPoint{peak: s.level, ceil: ceil})
	} else {
		for m := last + 1; m <= minute; m++ {
			s.pts = append(s.pts, histPoint{peak: s.level, ceil: ceil})
		}
		if over := len(s.pts) - historyMinutes; over > 0 {
			s.first += int64(over)
			s.pts = s.pts[:copy(s.pts, s.pts[over:])]
		}
	}
	s.score = 0
	for _, p := range s.pts {
		s.score = max(s.score, p.peak)
	}
}

// histBusier orders series: the higher peak, then the lower name.
func histBusier(score uint32, name string, than uint32, thanName string) bool {
	return score > than || score == than && name < thanName
}

// histHeap is a min-heap of series, the least busy at the root.
type histHeap []*histSeries

func (h histHeap) Len() int { return len(h) }
func (h histHeap) Less(i, j int) bool {
	return histBusier(h[j].score, h[j].name, h[i].score, h[i].name)
}
func (h histHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *histHeap) Push(x any)   { s := x.(*histSeries); s.i = len(*h); *h = append(*h, s) }
func (h *histHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}

// HistoryPointJSON is one minute of a tenant's history.
type HistoryPointJSON struct {
	At      string `json:"at"` // the minute's start
	Peak    uint64 `json:"peak"`
	Ceiling uint64 `json:"ceiling"`
}

// HistoryJSON is the body of GET /v1/tenants/{id}/history.
type HistoryJSON struct {
	Tenant string `json:"tenant"`
	// Tracked: this server keeps the tenant's history (it keeps the
	// busiest --history-max-tenants); false with no points otherwise.
	Tracked bool `json:"tracked"`
	// Until is the time of the latest entry this server applied: the last
	// point is its minute.
	Until         string             `json:"until"`
	MinuteSeconds int                `json:"minute_seconds"`
	Points        []HistoryPointJSON `json:"points"`
}

// points returns a tenant's minutes from since through now (unix ns), the
// minutes after its latest entry carrying the count that entry left.
func (h *history) points(name string, since, now int64) ([]HistoryPointJSON, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.series[name]
	out := []HistoryPointJSON{}
	if s == nil {
		return out, false
	}
	nowMin := now / int64(time.Minute)
	from := max(s.first, nowMin-historyMinutes+1, since/int64(time.Minute))
	last := s.first + int64(len(s.pts)) - 1
	for m := from; m <= nowMin; m++ {
		p := histPoint{peak: s.level, ceil: s.pts[len(s.pts)-1].ceil}
		if m <= last {
			p = s.pts[m-s.first]
		}
		out = append(out, HistoryPointJSON{At: time.Unix(m*60, 0).UTC().Format(time.RFC3339), Peak: uint64(p.peak), Ceiling: uint64(p.ceil)})
	}
	return out, true
}

// tracked is how many tenants have a series.
func (h *history) tracked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.series)
}

// handleHistory answers a tenant's per-minute peaks and ceilings since
// ?since= (an RFC 3339 time, or a duration before the latest entry; default
// the whole six hours).
func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var now int64
	found := false
	s.fsm.Read(func(st fsm.View) {
		now = st.Time()
		found = st.Tenant(id) != nil
	})
	if !found {
		jsonhttp.Error(w, http.StatusNotFound, fmt.Sprintf("no tenant %q", id))
		return
	}
	since := now - int64(historyMinutes*time.Minute)
	if v := r.URL.Query().Get("since"); v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			since = t.UnixNano()
		} else if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			since = now - int64(d)
		} else {
			jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("since=%q: want an RFC 3339 time or a duration such as 1h", v))
			return
		}
	}
	pts, tracked := s.history.points(id, since, now)
	jsonhttp.Write(w, http.StatusOK, HistoryJSON{Tenant: id, Tracked: tracked, Until: time.Unix(0, now).UTC().Format(time.RFC3339Nano),
		MinuteSeconds: 60, Points: pts})
}
