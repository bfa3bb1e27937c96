package fsm

import (
	"maps"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"
)

// TestSmallMapLikeAMap: any sequence of sets, raises and deletes leaves a
// smallMap holding what a Go map holds, sorted, and its msgpack reads back
// as that map and as itself.
func TestSmallMapLikeAMap(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		var m smallMap[uint64]
		want := map[string]uint64{}
		key := rapid.SampledFrom([]string{"", "ap", "eu", "eu-west", "us", "us-east"})
		for range rapid.IntRange(0, 40).Draw(rt, "ops") {
			k := key.Draw(rt, "key")
			switch rapid.IntRange(0, 2).Draw(rt, "op") {
			case 0:
				v := rapid.Uint64().Draw(rt, "v")
				m.set(k, v)
				want[k] = v
			case 1:
				if p := m.ptr(k); *p < 7 {
					*p = 7
				}
				want[k] = max(want[k], 7)
			case 2:
				m.del(k)
				delete(want, k)
			}
			if got := asMap(m); !maps.Equal(got, want) {
				rt.Fatalf("holds %v, a map %v", got, want)
			}
			for i := 1; i < len(m); i++ {
				if m[i-1].Key >= m[i].Key {
					rt.Fatalf("not sorted: %v", m)
				}
			}
			if len(want) == 0 && m != nil {
				rt.Fatalf("empty but not nil")
			}
		}
		for k, v := range want {
			if m.get(k) != v {
				rt.Fatalf("get %q = %d, want %d", k, m.get(k), v)
			}
		}
		b, err := msgpack.Marshal(m)
		if err != nil {
			rt.Fatal(err)
		}
		var asGo map[string]uint64
		if err := msgpack.Unmarshal(b, &asGo); err != nil {
			rt.Fatal(err)
		}
		if len(want) > 0 && !maps.Equal(asGo, want) {
			rt.Fatalf("encoded, read as a map: %v, want %v", asGo, want)
		}
		var back smallMap[uint64]
		if err := msgpack.Unmarshal(b, &back); err != nil {
			rt.Fatal(err)
		}
		if !reflect.DeepEqual(back, m) {
			rt.Fatalf("read back %v, want %v", back, m)
		}
	})
}

// TestSmallMapReadsTheOldSnapshots: a Usage encoded when its regions were a
// Go map (a snapshot of an earlier version) reads the same, and the reverse.
func TestSmallMapReadsTheOldSnapshots(t *testing.T) {
	type oldUsage struct {
		PCU     uint64
		Regions map[string]*RegionUsage `msgpack:",omitempty"`
	}
	type newUsage struct {
		PCU     uint64
		Regions smallMap[*RegionUsage] `msgpack:",omitempty"`
	}
	old := oldUsage{PCU: 9, Regions: map[string]*RegionUsage{"us": {PCU: 4}, "eu": {PCU: 5, Export: &ExportMark{Cut: ClassCounts{3}}}}}
	b, err := msgpack.Marshal(&old)
	if err != nil {
		t.Fatal(err)
	}
	var got newUsage
	if err := msgpack.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Regions) != 2 || got.Regions[0].Key != "eu" || got.Regions[0].Val.PCU != 5 || got.Regions[0].Val.Export.Cut[0] != 3 || got.Regions[1].Val.PCU != 4 {
		t.Fatalf("read %+v", got.Regions)
	}
	b, err = msgpack.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	var again oldUsage
	if err := msgpack.Unmarshal(b, &again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, old) {
		t.Fatalf("an earlier version reads %+v, want %+v", again, old)
	}
	// Without regions both omit the field.
	b1, _ := msgpack.Marshal(&oldUsage{PCU: 1})
	b2, _ := msgpack.Marshal(&newUsage{PCU: 1})
	if string(b1) != string(b2) {
		t.Fatalf("no regions: %x, an earlier version %x", b2, b1)
	}
	// A key twice is refused.
	dup := []byte{0x82, 0xa2, 'e', 'u', 0x01, 0xa2, 'e', 'u', 0x02}
	var m smallMap[uint64]
	if err := msgpack.Unmarshal(dup, &m); err == nil {
		t.Fatalf("a key twice read as %v", m)
	}
}
