package fsm

import (
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// NumClasses is the number of session classes; classCounts is indexed by
// plans.Class - 1.
const NumClasses = plans.NumClasses

type ClassCounts [NumClasses]uint64

func (c *ClassCounts) Total() uint64 {
	var t uint64
	for _, v := range c {
		t += v
	}
	return t
}

func (c *ClassCounts) isZero() bool { return *c == ClassCounts{} }

// ClassNames lists the classes this server counts, as Welcome tells agents.
var ClassNames = func() []string {
	out := make([]string, 0, NumClasses)
	for _, c := range plans.AllClasses {
		out = append(out, c.String())
	}
	return out
}()

// ClassIndex maps a wire class name to its index, or -1.
func ClassIndex(name string) int {
	c, err := plans.ParseClass(name)
	if err != nil {
		return -1
	}
	return int(c) - 1
}

// State is everything the cluster agrees on. It is plain data: applying a
// command to it is deterministic and reads no clock, flag or file.
type State struct {
	// Time is the latest entry time applied (unix ns); it never goes back.
	Time int64
	// Index is the Raft index of the last entry applied.
	Index   uint64
	Plans   map[string]plans.Plan
	Tenants map[string]*Tenant
	Agents  map[string]*AgentRec
	// Scheduled holds each tenant's pending plan change (at most one).
	Scheduled map[string]*Scheduled
	// NextID numbers scheduled changes.
	NextID uint64
	// Audit lists every change of plans, tenants' plans and tenants'
	// standing, oldest first.
	Audit []AuditEntry
	// Tokens are the ACL tokens by accessor (tokens.go); ACLBootstrapped
	// is set once the first operator token was bootstrapped.
	Tokens          map[string]*Token `msgpack:",omitempty"`
	ACLBootstrapped bool              `msgpack:",omitempty"`
	byHash          map[string]string // secret hash → accessor, derived
	// UsageGrace is how long after its end a period still takes the
	// batches cut in it, ns (0: DefaultUsageGrace); set by the leader.
	UsageGrace int64 `msgpack:",omitempty"`
	// ClosedThrough is the latest closed period ("2006-01"): nothing is
	// booked to it or to any before it any more. See metering.go.
	ClosedThrough string `msgpack:",omitempty"`
	// GrantLease and GrantMargin (ns) are those of the latest entry of agent
	// messages: how long a booking lasts without news of its agent.
	GrantLease  int64 `msgpack:",omitempty"`
	GrantMargin int64 `msgpack:",omitempty"`
	// Export is the usage export's cursor (export.go); nil before the
	// first cut.
	Export *ExportState `msgpack:",omitempty"`

	dec wire.Decoder // see decoder; not part of the state
}

// Tenant is one customer app.
type Tenant struct {
	Name string
	// Plan is the plan's name; empty for a tenant seen in batches but never
	// put on a plan (its sessions are counted all the same).
	Plan string
	// Open is the global open count per class, all agents together.
	Open ClassCounts
	// Suspended tenants' new sessions are refused; running ones go on.
	Suspended bool
	// History lists the plans the tenant was put on, oldest first, each
	// from its effective time (what bills prorate by).
	History []Holding
	// Changed is the Raft index at which anything of the tenant last changed.
	Changed uint64
	// Usage per billing period ("2006-01", UTC).
	Usage map[string]*Usage
	// RegionOpen is the open count per agent region, all classes: the sum
	// of the counts of the region's agents.
	RegionOpen smallMap[uint64] `msgpack:",omitempty"`
	// OverSince is the entry time from which the tenant's global open count
	// has stood at or over its plan's ceiling, not yet booked to
	// Usage.OverNanos; 0 while it is below.
	OverSince int64 `msgpack:",omitempty"`
	// Grants are the shares of a strict plan's pools leased to agents:
	// pool ("" for the total ceiling, or a class name) → agent id → share.
	// See grants.go.
	Grants map[string]map[string]*Share `msgpack:",omitempty"`
	// Over lists the strict pools whose bookings stood above their ceiling
	// at the last entry that touched them (pool → since when and why).
	Over map[string]*PoolOver `msgpack:",omitempty"`
	// AdmittedOver counts the sessions agents admitted (not reconciled)
	// into a strict pool while it stood over its ceiling; it should stay 0.
	AdmittedOver uint64 `msgpack:",omitempty"`
	// counted holds the agents with counts of this tenant (derived from
	// their records, rebuilt at restore): whom a strict pool books.
	counted map[string]struct{}
	// Days are the distinct users of each UTC day of the open periods, in
	// day order (users.go); a closed period's days are dropped.
	Days []DayUsers `msgpack:",omitempty"`
	// cur is Usage[curPeriod], the period of the latest entry that booked
	// to the tenant (derived: Apply's shortcut to it).
	cur       *Usage
	curPeriod string
}

// Usage is what a tenant used in one period.
type Usage struct {
	Micros     ClassCounts // session time, µs
	Refused    ClassCounts // refused admissions
	PCU        uint64      // peak concurrent sessions, all classes
	PCUByClass ClassCounts
	// Buckets split the period's usage by UTC day and by plan held, in
	// time order: what bills consume allowances in and daily peaks come
	// from. Kept for the current and the previous period.
	Buckets []Bucket
	// ClosedMinutes are, per class, the sessions that ended, each rounded
	// up to a whole minute (what plans rounding per session bill).
	ClosedMinutes ClassCounts `msgpack:",omitempty"`
	// OverNanos is the time the tenant's global open count stood at or over
	// its plan's ceiling.
	OverNanos uint64 `msgpack:",omitempty"`
	// Late counts batches cut in a period already closed and booked here
	// instead (once per tenant they carry); LateMicros is their session time.
	Late       uint64 `msgpack:",omitempty"`
	LateMicros uint64 `msgpack:",omitempty"`
	// Regions is the usage through each agent region's agents.
	Regions smallMap[*RegionUsage] `msgpack:",omitempty"`
	// Users are the period's distinct users (users.go), MAU their count and
	// PeakDAU the most distinct users of one day; the sketch is dropped once
	// the period is closed, the figures stay.
	Users   *Users `msgpack:",omitempty"`
	MAU     uint64 `msgpack:",omitempty"`
	PeakDAU uint64 `msgpack:",omitempty"`
}

// Bucket is a tenant's usage from From until the next bucket: within one
// UTC day, under one plan.
type Bucket struct {
	From    int64 // unix ns
	Plan    string
	Micros  ClassCounts
	Refused uint64
	Peak    uint64 // highest global open count seen
	// Minutes are the sessions that ended, each rounded up to a minute.
	Minutes ClassCounts `msgpack:",omitempty"`
	// RegionPeaks is the highest open count seen per agent region.
	RegionPeaks smallMap[uint64] `msgpack:",omitempty"`
}

// AgentRec is what the cluster remembers of one agent.
type AgentRec struct {
	ID       string
	Epoch    uint64
	LastSeq  uint64
	Region   string
	LastSeen int64 // entry time of its last applied message, unix ns
	// Expired is set when the leader found the agent silent past the grace
	// period: its counts left the figures (usage stays); it must resync
	// with FullState, which replaces counts and adds usage.
	Expired bool
	// Counts is the agent's contribution to the tenants' open counts.
	Counts map[string]*ClassCounts
	// Returned is the entry time at which the agent was last heard from
	// after a silence longer than the grant lease and margin (its bookings
	// had lapsed): what a strict pool it leaves over its ceiling is put down
	// to its return.
	Returned int64 `msgpack:",omitempty"`
}

// NewState returns an empty state holding the given plan catalogue.
func NewState(catalogue []plans.Plan) *State {
	s := &State{
		Plans:     make(map[string]plans.Plan, len(catalogue)),
		Tenants:   make(map[string]*Tenant),
		Agents:    make(map[string]*AgentRec),
		Scheduled: make(map[string]*Scheduled),
	}
	for _, p := range catalogue {
		s.Plans[p.Name] = p
	}
	return s
}

// ItemStatus is the outcome of one agent message.
type ItemStatus uint8

const (
	StatusApplied   ItemStatus = iota + 1
	StatusDuplicate            // seq already applied: acknowledge, no effect
	StatusGap                  // seq skipped one: resend from LastSeq+1
	StatusNeedFull             // nothing held for this epoch: send FullState
	StatusOldEpoch             // an epoch older than the newest seen
	StatusInvalid              // could not be decoded
)

type ItemResult struct {
	Status  ItemStatus
	LastSeq uint64
	Shares  []wire.GrantShare // itemGrant: one per want
}

// applier carries what one entry's application needs.
type applier struct {
	s          *State
	now        int64
	period     string
	dayStart   int64 // start of the entry's UTC day, unix ns
	index      uint64
	agentEntry bool         // the entry holds agents' messages
	changed    []string     // tenants changed by this entry, each once
	touched    []*Tenant    // the same tenants (those still in the state)
	audited    []AuditEntry // audit entries appended by this entry
}

// decoder is the State's decoder of agent messages: the entries of the
// batch it decoded last are reused for the next (Apply keeps none), and an
// entry of a known tenant comes with its *Tenant (Decoder.Known), found
// while decoding, so that Apply does not look it up again.
func (s *State) decoder() *wire.Decoder {
	if s.dec.Intern == nil {
		s.dec.Intern = func(b []byte) (string, any) {
			if t := s.Tenants[string(b)]; t != nil {
				return t.Name, t
			}
			return "", nil
		}
	}
	return &s.dec
}

func (s *State) newApplier(index uint64, t int64) *applier {
	if t < s.Time {
		t = s.Time // entry time never moves backwards
	}
	s.Time, s.Index = t, index
	s.closePeriods(t)
	day := time.Unix(0, t).UTC().Truncate(24 * time.Hour).UnixNano()
	return &applier{s: s, now: t, period: plans.PeriodOf(time.Unix(0, t)).String(), dayStart: day, index: index}
}

// touch marks t changed by the entry; the first time, it books the time t
// stood at or over its ceiling up to the entry (see accountOver).
func (a *applier) touch(t *Tenant) {
	if t.Changed != a.index {
		t.Changed = a.index
		a.changed = append(a.changed, t.Name)
		a.touched = append(a.touched, t)
		a.accountOver(t)
	}
}

func (a *applier) tenant(name, defaultPlan string) *Tenant {
	t := a.s.Tenants[name]
	if t == nil {
		t = &Tenant{Name: name, Usage: make(map[string]*Usage)}
		if _, ok := a.s.Plans[defaultPlan]; ok {
			a.putOnPlan(t, defaultPlan, a.now)
		}
		a.s.Tenants[name] = t
	}
	return t
}

func (t *Tenant) usage(period string) *Usage {
	u := t.Usage[period]
	if u == nil {
		u = &Usage{}
		t.Usage[period] = u
	}
	return u
}

// onlyRefused reports whether e carries nothing but refusals.
func onlyRefused(e *wire.DeltaEntry) bool {
	return e.Opened == 0 && e.Closed == 0 && e.SessionMicros == 0 && e.Peak == 0 && e.ClosedMinutes == 0 && e.Reconciled == 0
}

// applyDelta applies one agent batch once per (agent, epoch, seq).
func (a *applier) applyDelta(b *wire.DeltaBatch, region, defaultPlan string) ItemResult {
	rec := a.s.Agents[b.AgentID]
	switch {
	case rec == nil:
		return ItemResult{Status: StatusNeedFull}
	case b.Epoch < rec.Epoch:
		return ItemResult{Status: StatusOldEpoch, LastSeq: rec.LastSeq}
	case b.Epoch > rec.Epoch:
		return ItemResult{Status: StatusNeedFull}
	case rec.Expired:
		return ItemResult{Status: StatusNeedFull, LastSeq: rec.LastSeq}
	case b.Seq <= rec.LastSeq:
		return ItemResult{Status: StatusDuplicate, LastSeq: rec.LastSeq}
	case b.Seq > rec.LastSeq+1:
		return ItemResult{Status: StatusGap, LastSeq: rec.LastSeq}
	}
	a.heard(rec)
	rec.LastSeq = b.Seq
	a.setRegion(rec, region)
	bk := a.batchBooking(b.AgentTime, rec.Region)
	if a.changed == nil {
		a.changed = make([]string, 0, len(b.Entries))
		a.touched = make([]*Tenant, 0, len(b.Entries))
	}
	if rec.Counts == nil {
		rec.Counts = make(map[string]*ClassCounts)
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		c := ClassIndex(e.Class)
		if c < 0 || e.Tenant == "" {
			continue // refused before proposing; never trust it here either
		}
		t, _ := a.s.dec.Known(i).(*Tenant) // b was decoded by a.s.dec
		if t == nil || t.Name != e.Tenant {
			if onlyRefused(e) && a.s.Tenants[e.Tenant] == nil {
				if _, ok := a.s.Plans[defaultPlan]; !ok {
					// Refusals of a tenant nobody created, with no default
					// plan to put it on: bad input, and nothing is stored.
					continue
				}
			}
			t = a.tenant(e.Tenant, defaultPlan)
		}
		counts := rec.Counts[e.Tenant]
		if counts == nil {
			counts = &ClassCounts{}
			rec.Counts[e.Tenant] = counts
			t.count(rec.ID, true)
		}
		if t.Over != nil && e.Opened > e.Reconciled {
			a.admittedOver(t, c, e.Opened-e.Reconciled)
		}
		old := counts[c]
		next := old + e.Opened
		if e.Closed > next {
			next = 0 // more closes than opens: the agent's own table is the truth, never below zero
		} else {
			next -= e.Closed
		}
		counts[c] = next
		t.Open[c] = t.Open[c] - old + next
		t.addRegionOpen(rec.Region, old, next)
		a.bookUsage(t, c, e, next, bk)
		if counts.isZero() {
			delete(rec.Counts, e.Tenant)
			t.count(rec.ID, false)
		}
	}
	a.bookTenantPeaks(rec, b.Peaks, bk)
	if bk.late {
		a.countLate(b.Entries)
	}
	a.applyUsers(b.Users, defaultPlan)
	return ItemResult{Status: StatusApplied, LastSeq: rec.LastSeq}
}

// raisePeak raises the period's and the bucket's peak to peak.
func (a *applier) raisePeak(u *Usage, b *Bucket, peak uint64) {
	u.PCU = max(u.PCU, peak)
	b.Peak = max(b.Peak, peak)
}

// usage returns the tenant's usage of the entry's period. Opening a new
// period drops the buckets of those before the previous one: closed
// periods keep their totals only.
func (a *applier) usage(t *Tenant) *Usage {
	if t.cur != nil && t.curPeriod == a.period {
		return t.cur
	}
	if u := t.Usage[a.period]; u != nil {
		t.cur, t.curPeriod = u, a.period
		return u
	}
	u := t.usage(a.period)
	t.cur, t.curPeriod = u, a.period
	cur, _ := plans.ParsePeriod(a.period)
	keep := cur.Prev().String()
	for p, old := range t.Usage {
		if p < keep {
			old.Buckets = nil
		}
	}
	return u
}

// bucket returns the tenant's open usage bucket: a new one at the start of
// each UTC day and at each plan change.
func (a *applier) bucket(t *Tenant, u *Usage) *Bucket {
	if n := len(u.Buckets); n > 0 {
		if b := &u.Buckets[n-1]; b.From >= a.dayStart && b.Plan == t.Plan {
			return b
		}
	}
	from := a.dayStart
	if h := len(t.History); h > 0 && t.History[h-1].From > from {
		from = min(t.History[h-1].From, a.now)
	}
	u.Buckets = append(u.Buckets, Bucket{From: from, Plan: t.Plan})
	return &u.Buckets[len(u.Buckets)-1]
}

// applyFull replaces an agent's contribution with absolute counts and adds
// the usage it carries. A newer epoch replaces the agent's record.
func (a *applier) applyFull(f *wire.FullState, region, defaultPlan string) ItemResult {
	rec := a.s.Agents[f.AgentID]
	switch {
	case rec != nil && f.Epoch < rec.Epoch:
		return ItemResult{Status: StatusOldEpoch, LastSeq: rec.LastSeq}
	case rec != nil && f.Epoch == rec.Epoch && f.Seq < rec.LastSeq:
		return ItemResult{Status: StatusDuplicate, LastSeq: rec.LastSeq}
	}
	if rec != nil {
		a.dropContribution(rec)
	}
	if rec == nil || f.Epoch > rec.Epoch {
		next := &AgentRec{ID: f.AgentID, Epoch: f.Epoch}
		if rec != nil {
			next.LastSeen = rec.LastSeen // a new epoch of an agent heard before
		}
		rec = next
		a.s.Agents[f.AgentID] = rec
	}
	if rec.Expired {
		rec.Returned = a.now
	}
	a.heard(rec)
	rec.Counts = make(map[string]*ClassCounts, len(f.Counts))
	rec.LastSeq, rec.Expired = f.Seq, false
	a.setRegion(rec, region)
	for _, e := range f.Counts {
		c := ClassIndex(e.Class)
		if c < 0 || e.Tenant == "" || e.Open == 0 {
			continue
		}
		t := a.tenant(e.Tenant, defaultPlan)
		counts := rec.Counts[e.Tenant]
		if counts == nil {
			counts = &ClassCounts{}
			rec.Counts[e.Tenant] = counts
			t.count(rec.ID, true)
		}
		counts[c] += e.Open
		t.Open[c] += e.Open
		t.addRegionOpen(rec.Region, 0, e.Open)
		a.touch(t)
	}
	// FullState carries no time of its own: its usage goes to the entry's
	// period.
	bk := booking{period: a.period, at: a.now, region: rec.Region}
	for i := range f.Usage {
		e := &f.Usage[i]
		c := ClassIndex(e.Class)
		if c < 0 || e.Tenant == "" {
			continue
		}
		var mine uint64
		if counts := rec.Counts[e.Tenant]; counts != nil {
			mine = counts[c]
		}
		a.bookUsage(a.tenant(e.Tenant, defaultPlan), c, e, mine, bk)
	}
	a.bookTenantPeaks(rec, f.Peaks, bk)
	a.applyUsers(f.Users, defaultPlan)
	return ItemResult{Status: StatusApplied, LastSeq: rec.LastSeq}
}

// dropContribution takes an agent's counts out of the tenants' figures.
func (a *applier) dropContribution(rec *AgentRec) {
	for name, counts := range rec.Counts {
		t := a.s.Tenants[name]
		if t == nil {
			continue
		}
		for c, v := range counts {
			t.Open[c] -= v
		}
		t.addRegionOpen(rec.Region, counts.Total(), 0)
		t.count(rec.ID, false)
		a.touch(t)
	}
	rec.Counts = nil
}

// applyExpire takes silent agents' counts out of the figures; their
// records stay, with their dedup state, until forgotten.
func (a *applier) applyExpire(refs []AgentRef) {
	for _, r := range refs {
		rec := a.s.Agents[r.ID]
		if rec == nil || rec.Epoch != r.Epoch || rec.Expired {
			continue
		}
		a.dropContribution(rec)
		rec.Counts = map[string]*ClassCounts{}
		rec.Expired = true
	}
}

// applyForget drops expired agents' records and dedup state.
func (a *applier) applyForget(refs []AgentRef) {
	for _, r := range refs {
		if rec := a.s.Agents[r.ID]; rec != nil && rec.Epoch == r.Epoch && rec.Expired {
			delete(a.s.Agents, r.ID)
		}
	}
}

// legacyClasses is how many classes there were before the device class:
// a classCounts is written with at least that many elements.
const legacyClasses = 6

// EncodeMsgpack writes c as an array of uint64 without its trailing zeros
// beyond the first legacyClasses, so a state that holds no session of a class
// added later (device) encodes byte for byte as it did before that class.
func (c ClassCounts) EncodeMsgpack(e *msgpack.Encoder) error {
	n := NumClasses
	for n > legacyClasses && c[n-1] == 0 {
		n--
	}
	if err := e.EncodeArrayLen(n); err != nil {
		return err
	}
	for _, v := range c[:n] {
		if err := e.EncodeUint64(v); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack reads what EncodeMsgpack wrote, or the fixed arrays of
// before (6 elements); the classes it does not list are 0.
func (c *ClassCounts) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 0 { // nil
		*c = ClassCounts{}
		return nil
	}
	if n > NumClasses {
		return fmt.Errorf("class counts: %d elements, this server knows %d classes", n, NumClasses)
	}
	*c = ClassCounts{}
	for i := 0; i < n; i++ {
		if c[i], err = d.DecodeUint64(); err != nil {
			return err
		}
	}
	return nil
}
