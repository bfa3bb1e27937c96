package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"

	"github.com/headroom-rtc/headroom/wire"
)

func userHash(u string) uint64 { return xxhash.Sum64String(u) }

func userSet(tenant string, day uint32, users ...string) wire.UserSet {
	us := wire.UserSet{Tenant: tenant, Day: day}
	for _, u := range users {
		us.Hashes = append(us.Hashes, userHash(u))
	}
	return us
}

// TestActiveUsersExactBelow1000: 999 users over 3 agents, with the same
// users on several agents and on both days: DAU per day, MAU and the peak
// DAU exactly, and a resent batch changes nothing.
func TestActiveUsersExactBelow1000(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0, "t", "payg")
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	d1, d2 := DayOf(at.Add(-24*time.Hour).UnixNano()), DayOf(at.UnixNano())
	var users []string
	for i := range 999 {
		users = append(users, fmt.Sprintf("user-%04d", i))
	}
	// Day 1: users 0-599, each on one or two of the agents. Day 2: users
	// 400-998 (199 of them seen on day 1 too).
	agents := []string{"a", "b", "c"}
	seq := map[string]uint64{}
	send := func(when time.Time, agent string, sets ...wire.UserSet) {
		seq[agent]++
		if seq[agent] == 1 {
			h.Items(when, "", Full(agent, 1, 0))
		}
		b := Batch(agent, 1, seq[agent])
		b.Users = sets
		for _, r := range h.Items(when, "", b) {
			if r.Status != StatusApplied {
				t.Fatalf("batch of %s: %+v", agent, r)
			}
		}
	}
	for i, u := range users[:600] {
		send(at, agents[i%3], userSet("t", d1, u))
		if i%4 == 0 {
			send(at, agents[(i+1)%3], userSet("t", d1, u)) // the same user on another agent
		}
	}
	for i := 400; i < 999; i += 50 {
		send(at, agents[i%3], userSet("t", d2, users[i:min(i+50, 999)]...))
	}
	u := h.Tenant("t").Usage[PeriodOfDay(d2)]
	tn := h.Tenant("t")
	if u.MAU != 999 || tn.DAU(d1) != 600 || tn.DAU(d2) != 599 || u.PeakDAU != 600 {
		t.Fatalf("MAU %d, DAU %d and %d, peak DAU %d; want 999, 600, 599, 600", u.MAU, tn.DAU(d1), tn.DAU(d2), u.PeakDAU)
	}
	// A batch resent (the same seq) is a duplicate; the same users in a new
	// batch merge to nothing new.
	b := Batch("a", 1, seq["a"])
	b.Users = []wire.UserSet{userSet("t", d2, "someone-new")}
	if r := h.Items(at, "", b); r[0].Status != StatusDuplicate {
		t.Fatalf("resent batch: %+v", r)
	}
	send(at, "a", userSet("t", d2, users[500:700]...))
	tn = h.Tenant("t")
	if u := tn.Usage[PeriodOfDay(d2)]; u.MAU != 999 || tn.DAU(d2) != 599 {
		t.Fatalf("after users seen again: MAU %d, DAU %d", u.MAU, tn.DAU(d2))
	}
}

// TestUsersMergeProperty: adding the same hashes in any order, split into
// any batches and with duplicates, gives the same count, in the exact
// regime and beyond it (the sketch, sparse and dense).
func TestUsersMergeProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.SampledFrom([]int{0, 1, 10, 999, 1000, 1001, 3000, 20_000}).Draw(rt, "distinct")
		seed := rapid.Uint64().Draw(rt, "seed")
		r := rand.New(rand.NewPCG(seed, 1))
		hashes := make([]uint64, n)
		for i := range hashes {
			hashes[i] = r.Uint64()
		}
		var once Users
		sorted := slices.Clone(hashes)
		slices.Sort(sorted)
		once.Add(sorted)
		if n <= ExactUsers && once.Count() != uint64(n) {
			rt.Fatalf("%d distinct counted %d", n, once.Count())
		}
		// Shuffled, duplicated, in batches of random sizes.
		stream := append(slices.Clone(hashes), hashes[:r.IntN(n+1)]...)
		r.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
		var u Users
		for len(stream) > 0 {
			k := 1 + r.IntN(min(len(stream), 5000))
			u.Add(stream[:k])
			stream = stream[k:]
		}
		if u.Count() != once.Count() {
			rt.Fatalf("%d distinct: %d added in one go, %d in shuffled batches with duplicates", n, once.Count(), u.Count())
		}
		// Adding them all again changes nothing.
		u.Add(hashes)
		if u.Count() != once.Count() {
			rt.Fatalf("resending changed the count from %d to %d", once.Count(), u.Count())
		}
	})
}

// TestUsersSurviveSnapshot: a restored state counts the same users, and
// goes on counting the same.
func TestUsersSurviveSnapshot(t *testing.T) {
	for _, n := range []int{10, 2000, 50_000} {
		h := NewHarness(t)
		h.SetPlan(t0, "t", "payg")
		at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		day := DayOf(at.UnixNano())
		h.Items(at, "", Full("a", 1, 0))
		var hs []uint64
		for i := range n {
			hs = append(hs, userHash(fmt.Sprint("u", i)))
		}
		b := Batch("a", 1, 1)
		b.Users = splitSets("t", day, hs)
		h.Items(at, "", b)
		g := restoredCopy(t, h.F)
		h2 := &Harness{T: t, F: g, Index: h.Index}
		if a, b := h.Tenant("t").Usage["2026-12"].MAU, h2.Tenant("t").Usage["2026-12"].MAU; a != b || a == 0 {
			t.Fatalf("%d users: MAU %d, restored %d", n, a, b)
		}
		more := Batch("a", 1, 2)
		more.Users = []wire.UserSet{userSet("t", day, "late-1", "late-2")}
		h.Items(at, "", more)
		h2.Items(at, "", more)
		if a, b := h.Tenant("t").Usage["2026-12"].MAU, h2.Tenant("t").Usage["2026-12"].MAU; a != b {
			t.Fatalf("%d users, then 2 more: MAU %d, restored %d", n, a, b)
		}
	}
}

func splitSets(tenant string, day uint32, hs []uint64) []wire.UserSet {
	var out []wire.UserSet
	for len(hs) > 0 {
		k := min(len(hs), MaxUserHashes)
		out = append(out, wire.UserSet{Tenant: tenant, Day: day, Hashes: hs[:k]})
		hs = hs[k:]
	}
	return out
}

// TestUsersOfAClosedPeriod: once a period is closed its day sketches and
// its users sketch go, its MAU and peak DAU stay; users of a day in a
// closed period count in the open one.
func TestUsersOfAClosedPeriod(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0, "t", "payg")
	nov := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	h.Items(nov, "", Full("a", 1, 0))
	b := Batch("a", 1, 1)
	b.Users = []wire.UserSet{userSet("t", DayOf(nov.UnixNano()), "x", "y")}
	h.Items(nov, "", b)
	dec := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) // November closed (1 h grace)
	late := Batch("a", 1, 2)
	late.Users = []wire.UserSet{userSet("t", DayOf(nov.UnixNano()), "z")}
	h.Items(dec, "", late)
	tn := h.Tenant("t")
	if u := tn.Usage["2026-11"]; u.MAU != 2 || u.PeakDAU != 2 || u.Users != nil {
		t.Errorf("November: MAU %d, peak DAU %d, sketch kept %v", u.MAU, u.PeakDAU, u.Users != nil)
	}
	if u := tn.Usage["2026-12"]; u == nil || u.MAU != 1 {
		t.Errorf("December: %+v, want the late user z", u)
	}
	if len(tn.Days) != 0 {
		t.Errorf("days kept after the period closed: %+v", tn.Days)
	}
}

// TestHashSetCollisions: hashes sharing their low bits (one probe chain),
// the hash 0 and duplicates are each counted once, through growth.
func TestHashSetCollisions(t *testing.T) {
	var s hashSet
	want := map[uint64]bool{}
	for i := uint64(0); i < 700; i++ {
		for _, h := range []uint64{i << 32, i<<32 | 5, (i % 7) << 40} {
			s.add(h)
			want[h] = true
		}
	}
	if s.len() != len(want) {
		t.Fatalf("%d distinct hashes, set holds %d", len(want), s.len())
	}
	got := s.all(nil)
	if len(got) != len(want) {
		t.Fatalf("all gives %d hashes, want %d", len(got), len(want))
	}
	for _, h := range got {
		if !want[h] {
			t.Fatalf("hash %#x never added", h)
		}
		delete(want, h)
	}
	if len(want) != 0 {
		t.Fatalf("%d hashes missing", len(want))
	}
}
