package fsm

import (
	"bytes"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// The device class came after snapshots were written with six classes: a
// state that holds no device session encodes byte for byte as before, the
// arrays of before decode, and device counts round-trip.
func TestClassCountsLegacyEncoding(t *testing.T) {
	type now struct {
		V ClassCounts
		P *ClassCounts
		M map[string]*ClassCounts
		O ClassCounts `msgpack:",omitempty"`
	}
	type before struct {
		V legacyCounts
		P *legacyCounts
		M map[string]*legacyCounts
		O legacyCounts `msgpack:",omitempty"`
	}
	vals := legacyCounts{1, 0, 300, 0, 1 << 40, 7}
	n := now{V: ClassCounts{1, 0, 300, 0, 1 << 40, 7}, P: &ClassCounts{0, 0, 0, 0, 0, 9}, M: map[string]*ClassCounts{"a": {5}}}
	b := before{V: vals, P: &legacyCounts{0, 0, 0, 0, 0, 9}, M: map[string]*legacyCounts{"a": {5}}}
	got, err := msgpack.Marshal(&n)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := msgpack.Marshal(&b)
	if !bytes.Equal(got, want) {
		t.Fatalf("without devices the encoding changed:\n%x\nwant\n%x", got, want)
	}
	var back now
	if err := msgpack.Unmarshal(want, &back); err != nil || !reflect.DeepEqual(back, n) {
		t.Fatalf("the encoding of before decodes to %+v (%v), want %+v", back, err, n)
	}
	n.V[plans.Device-1], n.O[plans.Device-1] = 11, 12
	got, _ = msgpack.Marshal(&n)
	back = now{}
	if err := msgpack.Unmarshal(got, &back); err != nil || !reflect.DeepEqual(back, n) {
		t.Fatalf("device counts round-trip to %+v (%v), want %+v", back, err, n)
	}
	long, _ := msgpack.Marshal(struct{ V [NumClasses + 1]uint64 }{})
	if err := msgpack.Unmarshal(long, &struct{ V ClassCounts }{}); err == nil {
		t.Fatal("an array of more classes than this server knows decoded")
	}
}

// legacyCounts is classCounts as it was before the device class.
type legacyCounts [6]uint64

func (c legacyCounts) IsZero() bool { return c == legacyCounts{} }

// Device sessions are counted, metered and survive a snapshot.
func TestSnapshotWithDevices(t *testing.T) {
	h := NewHarness(t)
	h.Items(t0, "payg", Full("a1", 3, 0), Batch("a1", 3, 1, Open("t1", "device", 3), Open("t1", "audio", 1)))
	h.Items(t0.Add(time.Hour), "", Batch("a1", 3, 2, wire.DeltaEntry{Tenant: "t1", Class: "device", Closed: 1, SessionMicros: 6e9}))
	if tn := h.Tenant("t1"); tn.Open[plans.Device-1] != 2 || tn.Open.Total() != 3 {
		t.Fatalf("t1 open %v, want 2 devices and 1 audio", tn.Open)
	}
	snap, err := h.F.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink MemSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	h.F.Read(func(view View) {
		a := view.s
		g.Read(func(view View) {
			b := view.s
			forgetShortcuts(a)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("restored state differs:\n%+v\n%+v", a, b)
			}
			var micros uint64
			for _, u := range b.Tenants["t1"].Usage {
				micros += u.Micros[plans.Device-1]
			}
			if micros != 6e9 {
				t.Fatalf("restored device usage %d µs, want 6e9", micros)
			}
		})
	})
}
