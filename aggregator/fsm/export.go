package fsm

// The usage export's cursor, kept in the replicated state: the state
// machine's half of the export to billing systems. The sending half (the
// leader's HTTP client, CloudEvents) is aggregator/api/export_send.go.
//
// Windows. The leader cuts the usage into windows through the log
// (cmdExportCut). A cut freezes, for every record (a tenant's usage of one
// period through one agent region) whose session time grew since the
// previous cut, the figure it stands at: ExportMark.Cut. What the receiver
// has acknowledged of a record is ExportMark.Sent. The window's increment of
// a record and class is Cut − Sent: fixed from the cut to its
// acknowledgement, whichever server computes it, so a resend carries the
// same figures under the same event ids. The leader commits what the
// receiver acknowledged through the log (cmdExportAck, naming the records
// of the batch), which sets Sent = Cut; so a new leader resends exactly
// what the old one's acknowledged batches did not cover.
//
// A cut is refused while a record of the previous one is unacknowledged.
// A receiver that is down holds the windows back, and the cut after it
// comes back covers all the time since: the state keeps two figures per
// record however long the outage, and the backlog is one window's events.
//
// Exactness. Session time only grows, and bookUsage books it to the
// tenant's period and to the agent's region together, so for a tenant,
// period and class the increments exported add up to the regions' Cut,
// which is the period's usage figure as of the latest cut; once the traffic
// stops and a cut after it is acknowledged, exactly the usage figure.
//
// Cost. Agent batches pay nothing for the export: a cut reads the figures
// once a window. It visits the tenants changed since the previous cut
// (Tenant.Changed) and of those the periods open at the previous cut
// (nothing is booked to a closed period); an acknowledgement costs three
// map look-ups per record.
//
// Upgrades. Old servers panic on the two command kinds (as on any kind they
// do not know, rather than diverge): upgrade every server before one runs
// with --export-url.

import (
	"cmp"
	"slices"
)

// ExportState is the export's cursor (State.Export).
type ExportState struct {
	// Seq numbers the cuts. From and To bound the latest window (entry
	// times, unix ns): the previous cut's time and this one's. The first
	// window takes all the usage before it; its From is its To.
	Seq      uint64
	From, To int64
	// Index is the Raft index of the latest cut and Closed the latest
	// closed period then; PrevIndex and PrevClosed are those of the cut
	// before it. The records a cut froze belong to tenants changed after
	// PrevIndex, in periods after PrevClosed.
	Index, PrevIndex   uint64
	Closed, PrevClosed string `msgpack:",omitempty"`
	// Source is the CloudEvents source of the latest window's events, as
	// the leader that cut it named the cluster.
	Source string
	// pending counts the records of the latest cut not acknowledged yet
	// (derived: rebuilt at restore).
	pending uint64
}

// ExportMark is one record's export cursor (RegionUsage.Export), per class
// in µs: its session time at the latest cut that changed it, and what the
// receiver has acknowledged of it.
type ExportMark struct {
	Cut  ClassCounts
	Sent ClassCounts `msgpack:",omitempty"`
}

// Pending reports how many records of the latest cut are not acknowledged.
func (e *ExportState) Pending() uint64 { return e.pending }

// ExportCutCmd cuts a new window at the entry's time. Seq is the cut the
// leader means (the state's Seq + 1): a stale or repeated proposal is
// refused, as is a cut while the previous one is not wholly acknowledged.
type ExportCutCmd struct {
	Time   int64  `msgpack:"t"`
	Seq    uint64 `msgpack:"s"`
	Source string `msgpack:"src"`
}

// ExportRef names one record: a tenant's usage of a period through the
// agents of one region.
type ExportRef struct {
	Tenant string `msgpack:"tn"`
	Period string `msgpack:"p"`
	Region string `msgpack:"r,omitempty"`
}

// ExportAckCmd records that the receiver acknowledged the events of cut Seq
// of the records named. Acknowledging a record again changes nothing.
type ExportAckCmd struct {
	Time    int64       `msgpack:"t"`
	Seq     uint64      `msgpack:"s"`
	Records []ExportRef `msgpack:"r"`
}

func (c *ExportCutCmd) when() int64 { return c.Time }
func (c *ExportAckCmd) when() int64 { return c.Time }

func (c *ExportCutCmd) apply(a *applier) *ApplyResult {
	e := a.s.Export
	if e == nil {
		e = &ExportState{}
	}
	switch {
	case c.Seq != e.Seq+1:
		return refused("export cut %d: the latest cut is %d", c.Seq, e.Seq)
	case e.pending > 0:
		return refused("export cut %d: %d records of cut %d are not acknowledged yet", c.Seq, e.pending, e.Seq)
	case c.Source == "":
		return refused("export cut %d: no source", c.Seq)
	}
	var pending uint64
	a.s.eachRecord(e.Index, e.Closed, func(_ *Tenant, _, _ string, ru *RegionUsage) bool {
		m := ru.Export
		if m == nil {
			if ru.Micros.IsZero() {
				return true
			}
			m = &ExportMark{}
			ru.Export = m
		}
		if m.Cut != ru.Micros {
			m.Cut = ru.Micros
			pending++
		}
		return true
	})
	from := e.To
	if e.Seq == 0 {
		from = a.now
	}
	a.s.Export = &ExportState{Seq: c.Seq, From: from, To: a.now, Index: a.index, PrevIndex: e.Index,
		Closed: a.s.ClosedThrough, PrevClosed: e.Closed, Source: c.Source, pending: pending}
	return &ApplyResult{}
}

func (c *ExportAckCmd) apply(a *applier) *ApplyResult {
	e := a.s.Export
	if e == nil || c.Seq != e.Seq {
		var latest uint64
		if e != nil {
			latest = e.Seq
		}
		return refused("export acknowledgement of cut %d: the latest cut is %d", c.Seq, latest)
	}
	for _, r := range c.Records {
		if m := a.s.exportMark(r); m != nil && m.Sent != m.Cut {
			m.Sent = m.Cut
			e.pending--
		}
	}
	return &ApplyResult{}
}

// exportMark is the cursor of a record, nil when there is none.
func (s *State) exportMark(r ExportRef) *ExportMark {
	t := s.Tenants[r.Tenant]
	if t == nil {
		return nil
	}
	u := t.Usage[r.Period]
	if u == nil {
		return nil
	}
	ru := u.Regions.get(r.Region)
	if ru == nil {
		return nil
	}
	return ru.Export
}

// dropExport takes a tenant's unacknowledged records out of the count (the
// tenant is being deleted), so the next cut is not held back by them.
func (a *applier) dropExport(t *Tenant) {
	e := a.s.Export
	if e == nil {
		return
	}
	for _, u := range t.Usage {
		for _, r := range u.Regions {
			if m := r.Val.Export; m != nil && m.Cut != m.Sent {
				e.pending--
			}
		}
	}
}

// rebuildExport counts the unacknowledged records (after a restore).
func (s *State) rebuildExport() {
	e := s.Export
	if e == nil {
		return
	}
	e.pending = 0
	s.eachRecord(0, "", func(_ *Tenant, _, _ string, ru *RegionUsage) bool {
		if m := ru.Export; m != nil && m.Cut != m.Sent {
			e.pending++
		}
		return true
	})
}

// ExportRecord is one unacknowledged record of the latest cut and its
// increment per class (µs).
type ExportRecord struct {
	ExportRef
	Delta ClassCounts
}

// ExportPending lists the unacknowledged records of the latest cut, in
// tenant, period and region order. Under the read lock; what it returns is
// the caller's.
func (s *State) ExportPending() []ExportRecord {
	e := s.Export
	if e == nil || e.pending == 0 {
		return nil
	}
	out := make([]ExportRecord, 0, e.pending)
	s.eachRecord(e.PrevIndex, e.PrevClosed, func(t *Tenant, p, r string, ru *RegionUsage) bool {
		if m := ru.Export; m != nil && m.Cut != m.Sent {
			rec := ExportRecord{ExportRef: ExportRef{Tenant: t.Name, Period: p, Region: r}}
			for c := range m.Cut {
				rec.Delta[c] = m.Cut[c] - m.Sent[c]
			}
			out = append(out, rec)
		}
		return true
	})
	slices.SortFunc(out, func(a, b ExportRecord) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Period, b.Period), cmp.Compare(a.Region, b.Region))
	})
	return out
}

// ExportDirty reports whether a cut now would freeze anything: some
// record's session time grew since the latest cut. Under the read lock.
func (s *State) ExportDirty() bool {
	e := s.Export
	if e == nil {
		e = &ExportState{}
	}
	dirty := false
	s.eachRecord(e.Index, e.Closed, func(_ *Tenant, _, _ string, ru *RegionUsage) bool {
		m := ru.Export
		dirty = m == nil && !ru.Micros.IsZero() || m != nil && m.Cut != ru.Micros
		return !dirty
	})
	return dirty
}

// eachRecord calls fn with every record of the tenants changed after index,
// in periods after closed, until fn returns false.
func (s *State) eachRecord(index uint64, closed string, fn func(t *Tenant, period, region string, ru *RegionUsage) bool) {
	for _, t := range s.Tenants {
		if t.Changed <= index {
			continue
		}
		for p, u := range t.Usage {
			if p <= closed {
				continue
			}
			for _, r := range u.Regions {
				if !fn(t, p, r.Key, r.Val) {
					return
				}
			}
		}
	}
}

// Events is how many events the record makes: one per class that grew.
func (r *ExportRecord) Events() int {
	n := 0
	for _, d := range r.Delta {
		if d > 0 {
			n++
		}
	}
	return n
}
