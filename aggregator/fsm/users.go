package fsm

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Active users: distinct users per tenant and UTC day (DAU) and per billing
// period (MAU), from the hashes of user ids agents send (wire.UserSet).
//
// A Users counts exactly, with the set of hashes, up to ExactUsers
// distinct ones; beyond, with a HyperLogLog sketch: 2^14 registers of one
// byte (16 KiB), the register of a hash its top 14 bits, its value the
// position of the first 1 in the other 50 (Flajolet et al., 2007), and the
// count estimated by Ertl's improved raw estimator ("New cardinality
// estimation algorithms for HyperLogLog sketches", 2017), which needs no
// empirical bias tables and stays unbiased over the whole range: about
// 0.8 % standard error. The registers' histogram is kept as they change,
// so adding a hash and estimating cost the same whatever the count.
//
// Adding hashes is idempotent (a register only grows), so a resent batch
// changes nothing, and the state is integers only: every server, and one
// restored from a snapshot, holds the same registers. The estimate itself
// is computed in floating point, on the same registers the same way.

// ExactUsers is how many distinct users a Users counts exactly.
const ExactUsers = 1000

const (
	userP   = 14         // precision: 2^14 registers
	userM   = 1 << userP // registers
	userQ   = 64 - userP // bits of a hash left for a register's value
	maxRank = userQ + 1  // the highest value a register can hold
)

// Users is a distinct count of users. The zero value is empty.
type Users struct {
	exact hashSet // while regs is nil
	regs  []uint8 // userM registers once past ExactUsers
	hist  [maxRank + 1]uint32
}

// hashSet is a set of hashes by open addressing: the hashes are random
// already, so a slot is a hash's low bits and a collision takes the next
// slot. 0 marks an empty slot; the hash 0 is held aside.
type hashSet struct {
	slots []uint64 // a power of two long, at most 3/4 full
	n     int      // hashes in slots
	zero  bool     // the hash 0 is in the set
}

func (s *hashSet) len() int {
	if s.zero {
		return s.n + 1
	}
	return s.n
}

func (s *hashSet) add(h uint64) {
	if h == 0 {
		s.zero = true
		return
	}
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	if s.put(h) {
		s.n++
	}
}

// put places h, reporting whether it was new.
func (s *hashSet) put(h uint64) bool {
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case h:
			return false
		case 0:
			s.slots[i] = h
			return true
		}
	}
}

func (s *hashSet) grow() {
	old := s.slots
	s.slots = make([]uint64, max(16, 2*len(old)))
	for _, h := range old {
		if h != 0 {
			s.put(h)
		}
	}
}

// all appends the set's hashes to dst.
func (s *hashSet) all(dst []uint64) []uint64 {
	if s.zero {
		dst = append(dst, 0)
	}
	for _, h := range s.slots {
		if h != 0 {
			dst = append(dst, h)
		}
	}
	return dst
}

// Count is the number of distinct users (an estimate beyond ExactUsers).
func (u *Users) Count() uint64 {
	if u == nil {
		return 0
	}
	if u.regs == nil {
		return uint64(u.exact.len())
	}
	return uint64(math.Round(u.estimate()))
}

// Add counts the users of hashes.
func (u *Users) Add(hashes []uint64) {
	if u.regs == nil {
		for _, h := range hashes {
			u.exact.add(h)
		}
		if u.exact.len() <= ExactUsers {
			return
		}
		// Too many to keep exactly: the registers take them all.
		u.regs = make([]uint8, userM)
		u.hist[0] = userM
		hashes, u.exact = u.exact.all(nil), hashSet{}
	}
	for _, h := range hashes {
		i := h >> userQ
		r := uint8(min(bits.LeadingZeros64(h<<userP), userQ) + 1)
		if old := u.regs[i]; r > old {
			u.regs[i] = r
			u.hist[old]--
			u.hist[r]++
		}
	}
}

// estimate is Ertl's improved raw estimate from the registers' histogram.
func (u *Users) estimate() float64 {
	const m = float64(userM)
	z := m * ertlTau(1-float64(u.hist[maxRank])/m)
	for k := userQ; k >= 1; k-- {
		z = 0.5 * (z + float64(u.hist[k]))
	}
	z += m * ertlSigma(float64(u.hist[0])/m)
	return m * m / (2 * math.Ln2) / z
}

// ertlSigma is σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k−1).
func ertlSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

// ertlTau is τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))² 2^−k) / 3.
func ertlTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}

// size is how many bytes u holds.
func (u *Users) size() int { return 8*len(u.exact.slots) + len(u.regs) }

// Users are encoded in snapshots as the exact hashes, sorted, or the
// registers.

// EncodeMsgpack implements msgpack.CustomEncoder.
func (u *Users) EncodeMsgpack(enc *msgpack.Encoder) error {
	if u.regs != nil {
		return enc.EncodeBytes(u.regs)
	}
	hs := u.exact.all(make([]uint64, 0, u.exact.len()))
	slices.Sort(hs)
	return enc.Encode(hs)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (u *Users) DecodeMsgpack(dec *msgpack.Decoder) error {
	code, err := dec.PeekCode()
	if err != nil {
		return err
	}
	*u = Users{}
	if !isBin(code) {
		var hs []uint64
		if err := dec.Decode(&hs); err != nil {
			return err
		}
		if len(hs) > ExactUsers {
			return fmt.Errorf("users: %d hashes, over %d", len(hs), ExactUsers)
		}
		for _, h := range hs {
			u.exact.add(h)
		}
		return nil
	}
	if u.regs, err = dec.DecodeBytes(); err != nil {
		return err
	}
	if len(u.regs) != userM {
		return fmt.Errorf("users: %d registers, want %d", len(u.regs), userM)
	}
	for _, r := range u.regs {
		if r > maxRank {
			return fmt.Errorf("users: register of %d, over %d", r, maxRank)
		}
		u.hist[r]++
	}
	return nil
}

func isBin(c byte) bool { return c == 0xc4 || c == 0xc5 || c == 0xc6 }

// DayUsers are a tenant's distinct users of one UTC day. Two days on,
// when no more batches cut that day are expected, the day keeps only its
// count (DAU) and drops its users; users of it reported later count in its
// period only.
type DayUsers struct {
	Day   uint32 // days since 1970-01-01
	Users *Users `msgpack:",omitempty"`
	DAU   uint64 `msgpack:",omitempty"` // once settled
}

// settleAfter is how many days on a day's users are settled to a count.
const settleAfter = 2

func (d *DayUsers) count() uint64 {
	if d.Users == nil {
		return d.DAU
	}
	return d.Users.Count()
}

func DayOf(t int64) uint32 { return uint32(t / int64(24*time.Hour)) }

func dayStart(d uint32) time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// PeriodOfDay is the billing period a UTC day belongs to.
func PeriodOfDay(d uint32) string { return plans.PeriodOf(dayStart(d)).String() }

// applyUsers books the users agents saw: each set to its day and that
// day's period, or, when that period is closed, to the entry's period
// only (late, like usage). A day after the entry's is taken as the entry's
// (an agent's clock ahead).
func (a *applier) applyUsers(sets []wire.UserSet, defaultPlan string) {
	today := DayOf(a.now)
	for i := range sets {
		us := &sets[i]
		if us.Tenant == "" || len(us.Hashes) == 0 {
			continue
		}
		t := a.tenant(us.Tenant, defaultPlan)
		if t.Changed != a.index {
			a.pruneUsers(t) // once per entry
		}
		day := min(us.Day, today)
		period := a.period
		if day != today {
			period = PeriodOfDay(day)
		}
		if a.s.PeriodClosed(period) {
			u := a.usage(t)
			if u.Users == nil {
				u.Users = &Users{}
			}
			u.Users.Add(us.Hashes)
			u.MAU = u.Users.Count()
			a.touch(t)
			continue
		}
		u := a.usageFor(t, period)
		if u.Users == nil {
			u.Users = &Users{}
		}
		u.Users.Add(us.Hashes)
		u.MAU = u.Users.Count()
		if du := t.dayUsers(day); du.Users != nil {
			du.Users.Add(us.Hashes)
			u.PeakDAU = max(u.PeakDAU, du.Users.Count())
		}
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

// pruneUsers settles the days two days old and drops the users of the
// days and periods now closed: their figures (DAU, MAU, PeakDAU) stay,
// their users go.
func (a *applier) pruneUsers(t *Tenant) {
	today := DayOf(a.now)
	for i := range t.Days {
		if d := &t.Days[i]; d.Users != nil && d.Day+settleAfter <= today {
			d.DAU, d.Users = d.Users.Count(), nil
		}
	}
	if a.s.ClosedThrough == "" {
		return
	}
	n := 0
	for n < len(t.Days) && a.s.PeriodClosed(PeriodOfDay(t.Days[n].Day)) {
		n++
	}
	if n > 0 {
		t.Days = slices.Delete(t.Days, 0, n)
		if len(t.Days) == 0 {
			t.Days = nil
		}
	}
	for p, u := range t.Usage {
		if u.Users != nil && a.s.PeriodClosed(p) {
			u.Users = nil
		}
	}
}

// DAU is t's distinct users of day (0 when not kept).
func (t *Tenant) DAU(day uint32) uint64 {
	i, found := slices.BinarySearchFunc(t.Days, day, func(d DayUsers, day uint32) int { return int(int64(d.Day) - int64(day)) })
	if !found {
		return 0
	}
	return t.Days[i].count()
}

// MaxUserHashes bounds the hashes of one UserSet (PROTOCOL.md).
const MaxUserHashes = 10_000
