package wire

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"
)

// TestDecoderDecodesLikeDecode: a Decoder fed batches of growing and
// shrinking sizes, and other messages between them, returns what Decode
// returns; its entries reuse memory, and known tenants' ids are the
// caller's strings.
func TestDecoderDecodesLikeDecode(t *testing.T) {
	known := map[string]string{}
	for i := range 50 {
		id := fmt.Sprintf("tenant-%03d", i)
		known[id] = id
	}
	dc := Decoder{Intern: func(b []byte) (string, any) {
		if s, ok := known[string(b)]; ok {
			return s, "handle of " + s
		}
		return "", nil
	}}
	r := rand.New(rand.NewPCG(1, 2))
	var prev []DeltaEntry
	for round, n := range []int{3, 100, 7, 100, 0, 250, 1} {
		b := &DeltaBatch{AgentID: "a1", Epoch: 2, Seq: uint64(round + 1), AgentTime: int64(round)}
		for i := range n {
			b.Entries = append(b.Entries, DeltaEntry{Tenant: fmt.Sprintf("tenant-%03d", r.IntN(100)), Class: "audio",
				Opened: r.Uint64N(300), Closed: r.Uint64N(3), SessionMicros: r.Uint64(), Peak: uint64(i), Reconciled: r.Uint64N(2)})
		}
		body := Append(nil, b)
		want, err := Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dc.Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		entries := got.(*DeltaBatch).Entries
		for i := range entries {
			e := &entries[i]
			_, isKnown := known[e.Tenant]
			if h, _ := dc.Known(i).(string); isKnown != (h == "handle of "+e.Tenant) {
				t.Fatalf("round %d: entry of %s (known %v) has the handle %v", round, e.Tenant, isKnown, dc.Known(i))
			}
		}
		if dc.Known(len(entries)) != nil {
			t.Fatalf("round %d: a handle past the entries", round)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: Decoder gives %+v, Decode %+v", round, got, want)
		}
		if len(entries) > 0 && len(entries) <= cap(prev) && &entries[0] != &prev[:1][0] {
			t.Errorf("round %d: %d entries in new memory, %d could be reused", round, len(entries), cap(prev))
		}
		for _, e := range entries {
			if k, ok := known[e.Tenant]; ok && unsafe.StringData(k) != unsafe.StringData(e.Tenant) {
				t.Fatalf("round %d: known tenant %s is a new string", round, e.Tenant)
			}
		}
		if cap(entries) > cap(prev) {
			prev = entries
		}
		// Another message between batches changes nothing of the next.
		if m, err := dc.Decode(Append(nil, &Ping{Nonce: 9})); err != nil || m.(*Ping).Nonce != 9 {
			t.Fatal(m, err)
		}
	}
	// A malformed body is an error, as with Decode.
	if _, err := dc.Decode([]byte{0x92, byte(TypeDeltaBatch), 0x81, 5, 0xdd}); err == nil {
		t.Fatal("a truncated batch decoded")
	}
}

// TestDecoderAllocatesNothingPerEntry: decoding a 1,000-entry batch of
// known tenants again allocates no memory per entry.
func TestDecoderAllocatesNothingPerEntry(t *testing.T) {
	known := map[string]string{}
	b := &DeltaBatch{AgentID: "a1", Epoch: 1, Seq: 1}
	for i := range 1000 {
		id := fmt.Sprintf("tenant-%04d", i)
		known[id] = id
		b.Entries = append(b.Entries, DeltaEntry{Tenant: id, Class: "video-hd", Opened: 3, Closed: 2, SessionMicros: 123_456_789, Peak: 5})
	}
	body := Append(nil, b)
	handle := new(int)
	dc := Decoder{Intern: func(b []byte) (string, any) { return known[string(b)], handle }}
	if _, err := dc.Decode(body); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = dc.Decode(body) }); n > 3 {
		t.Fatalf("%v allocations decoding the batch again, want at most 3 (the batch, its agent id)", n)
	}
	if n := testing.AllocsPerRun(5, func() { _, _ = Decode(body) }); n < 1000 {
		t.Fatalf("Decode made %v allocations: the baseline this test compares with has changed", n)
	}
}
