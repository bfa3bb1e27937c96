package aggregator

import (
	"fmt"
	"slices"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Active users: distinct users per tenant and UTC day (DAU) and per billing
// period (MAU), from the hashes of user ids agents send (wire.UserSet).
//
// A Users counts exactly, with the sorted set of hashes, up to ExactUsers
// distinct ones; beyond, with a HyperLogLog sketch of precision 14
// (github.com/axiomhq/hyperloglog: about 0.8 % standard error, 16 KiB once
// dense, a few bytes per user while sparse). Adding hashes is idempotent,
// so a resent batch changes nothing. Every change leaves the sketch in the
// same representation whatever happened before (the sparse buffer merged,
// dense once its sparse list outgrows it), so every server, and one
// restored from a snapshot, goes on with the same figures; the count is
// kept, so reads never touch the sketch.

// ExactUsers is how many distinct users a Users counts exactly.
const ExactUsers = 1000

// Users is a distinct count of users. The zero value is empty.
type Users struct {
	exact []uint64 // sorted, while hll is nil
	hll   *hyperloglog.Sketch
	n     uint64
}

// Count is the number of distinct users (an estimate beyond ExactUsers).
func (u *Users) Count() uint64 {
	if u == nil {
		return 0
	}
	return u.n
}

// Add counts the users of hashes.
func (u *Users) Add(hashes []uint64) {
	if len(hashes) == 0 {
		return
	}
	if u.hll == nil {
		for _, h := range hashes {
			if i, found := slices.BinarySearch(u.exact, h); !found {
				u.exact = slices.Insert(u.exact, i, h)
			}
		}
		if len(u.exact) <= ExactUsers {
			u.n = uint64(len(u.exact))
			return
		}
		// Too many to keep exactly: the sketch takes them all, in order.
		u.hll = hyperloglog.New14()
		hashes, u.exact = u.exact, nil
	}
	for _, h := range hashes {
		u.hll.InsertHash(h)
	}
	u.n = u.hll.Estimate() // also merges the sparse buffer: the canonical form
}

// size is about how many bytes u holds.
func (u *Users) size() int {
	if u.hll == nil {
		return 8 * len(u.exact)
	}
	b, _ := u.hll.MarshalBinary()
	return len(b)
}

// Users are encoded in snapshots as [count, exact hashes] or [count, the
// sketch's binary form].

// EncodeMsgpack implements msgpack.CustomEncoder.
func (u *Users) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(2); err != nil {
		return err
	}
	if err := enc.EncodeUint(u.n); err != nil {
		return err
	}
	if u.hll == nil {
		return enc.Encode(u.exact)
	}
	b, err := u.hll.MarshalBinary()
	if err != nil {
		return err
	}
	return enc.EncodeBytes(b)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (u *Users) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n != 2 {
		return fmt.Errorf("users of %d elements, want 2", n)
	}
	if u.n, err = dec.DecodeUint64(); err != nil {
		return err
	}
	code, err := dec.PeekCode()
	if err != nil {
		return err
	}
	if isBin(code) {
		b, err := dec.DecodeBytes()
		if err != nil {
			return err
		}
		u.hll = new(hyperloglog.Sketch)
		if err := u.hll.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("users sketch: %w", err)
		}
		u.exact = nil
		return nil
	}
	u.hll = nil
	if err := dec.Decode(&u.exact); err != nil {
		return err
	}
	if !slices.IsSorted(u.exact) || uint64(len(u.exact)) != u.n {
		return fmt.Errorf("users: %d hashes unsorted or not the count %d", len(u.exact), u.n)
	}
	return nil
}

func isBin(c byte) bool { return c == 0xc4 || c == 0xc5 || c == 0xc6 }

// DayUsers are a tenant's distinct users of one UTC day.
type DayUsers struct {
	Day   uint32 // days since 1970-01-01
	Users *Users
}

func dayOf(t int64) uint32 { return uint32(t / int64(24*time.Hour)) }

func dayStart(d uint32) time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// periodOfDay is the billing period a UTC day belongs to.
func periodOfDay(d uint32) string { return plans.PeriodOf(dayStart(d)).String() }

// applyUsers books the users agents saw: each set to its day and that
// day's period, or, when that period is closed, to the entry's period
// only (late, like usage). A day after the entry's is taken as the entry's
// (an agent's clock ahead).
func (a *applier) applyUsers(sets []wire.UserSet, defaultPlan string) {
	today := dayOf(a.now)
	for i := range sets {
		us := &sets[i]
		if us.Tenant == "" || len(us.Hashes) == 0 {
			continue
		}
		t := a.tenant(us.Tenant, defaultPlan)
		a.pruneUsers(t)
		day := min(us.Day, today)
		period := periodOfDay(day)
		if a.s.periodClosed(period) {
			u := a.usage(t)
			if u.Users == nil {
				u.Users = &Users{}
			}
			u.Users.Add(us.Hashes)
			u.MAU = u.Users.Count()
			a.touch(t)
			continue
		}
		du := t.dayUsers(day)
		du.Users.Add(us.Hashes)
		u := a.usageFor(t, period)
		if u.Users == nil {
			u.Users = &Users{}
		}
		u.Users.Add(us.Hashes)
		u.MAU = u.Users.Count()
		u.PeakDAU = max(u.PeakDAU, du.Users.Count())
		a.touch(t)
	}
}

// dayUsers returns t's users of day, adding the day (in order).
func (t *Tenant) dayUsers(day uint32) *DayUsers {
	i, found := slices.BinarySearchFunc(t.Days, day, func(d DayUsers, day uint32) int { return int(int64(d.Day) - int64(day)) })
	if !found {
		t.Days = slices.Insert(t.Days, i, DayUsers{Day: day, Users: &Users{}})
	}
	return &t.Days[i]
}

// pruneUsers drops the users of the days and periods now closed: their
// figures (MAU, PeakDAU) stay, their sketches go.
func (a *applier) pruneUsers(t *Tenant) {
	if a.s.ClosedThrough == "" {
		return
	}
	n := 0
	for n < len(t.Days) && a.s.periodClosed(periodOfDay(t.Days[n].Day)) {
		n++
	}
	if n > 0 {
		t.Days = slices.Delete(t.Days, 0, n)
		if len(t.Days) == 0 {
			t.Days = nil
		}
	}
	for p, u := range t.Usage {
		if u.Users != nil && a.s.periodClosed(p) {
			u.Users = nil
		}
	}
}

// dau is t's distinct users of day (0 when not kept).
func (t *Tenant) dau(day uint32) uint64 {
	i, found := slices.BinarySearchFunc(t.Days, day, func(d DayUsers, day uint32) int { return int(int64(d.Day) - int64(day)) })
	if !found {
		return 0
	}
	return t.Days[i].Users.Count()
}
