package wire

import (
	"bytes"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The vectors of testdata/v1-before-over are the golden frames as they were
// before the keys that book restarted agents' sessions were added
// (DeltaEntry.Reconciled, TenantInfo.Over, ClassLimit.Over, GrantWant.Open,
// GrantShare.Over; later DeltaBatch.Users, FullState.Users and
// Welcome.Classes). An agent or server of that version must keep working with
// this one, both ways round.

// previousVersion zeroes the fields added since testdata/v1-before-over.
func previousVersion(m Message) Message {
	switch m := m.(type) {
	case *Welcome:
		c := *m
		c.Classes = nil
		return &c
	case *DeltaBatch:
		c := *m
		c.Entries = zeroReconciled(m.Entries)
		c.Users = nil
		return &c
	case *FullState:
		c := *m
		c.Usage = zeroReconciled(m.Usage)
		c.Users = nil
		return &c
	case *TenantState:
		c := *m
		c.Tenants = append([]TenantInfo(nil), m.Tenants...)
		for i := range c.Tenants {
			c.Tenants[i].Over = 0
			c.Tenants[i].ClassLimits = append([]ClassLimit(nil), m.Tenants[i].ClassLimits...)
			for j := range c.Tenants[i].ClassLimits {
				c.Tenants[i].ClassLimits[j].Over = 0
			}
		}
		return &c
	case *GrantAsk:
		c := *m
		c.Wants = append([]GrantWant(nil), m.Wants...)
		for i := range c.Wants {
			c.Wants[i].Open = 0
		}
		return &c
	case *Grant:
		c := *m
		c.Shares = append([]GrantShare(nil), m.Shares...)
		for i := range c.Shares {
			c.Shares[i].Over = 0
		}
		return &c
	}
	return nil
}

func zeroReconciled(es []DeltaEntry) []DeltaEntry {
	out := append([]DeltaEntry(nil), es...)
	for i := range out {
		out[i].Reconciled = 0
	}
	return out
}

// newKeys are the keys added since the previous version, by the path of the
// map that holds them in a generic decoding of the body (see genericBody).
var newKeys = map[string][]uint64{
	"welcome":          {6}, // Classes
	"delta-batch":      {7}, // Users
	"delta-batch/5":    {9}, // Entries[].Reconciled
	"full-state":       {8}, // Users
	"full-state/6":     {9}, // Usage[].Reconciled
	"tenant-state/3":   {9}, // Tenants[].Over
	"tenant-state/3/8": {4}, // Tenants[].ClassLimits[].Over
	"grant-ask/3":      {5}, // Wants[].Open
	"grant/3":          {6}, // Shares[].Over
}

func TestPreviousVersionVectors(t *testing.T) {
	for _, g := range goldenExamples() {
		old := previousVersion(g.msg)
		if old == nil {
			continue // unchanged since the previous version
		}
		t.Run(g.file, func(t *testing.T) {
			prev := readGolden(t, filepath.Join("v1-before-over", g.file))
			// A message of the previous version decodes here with the new
			// fields zero (a new server reading an old agent, and the
			// other way round).
			m, err := Decode(prev[headerLen:])
			if err != nil {
				t.Fatalf("decoding the previous version's %s: %v", g.file, err)
			}
			if !reflect.DeepEqual(m, old) {
				t.Errorf("the previous version's %s decodes to\n%#v\nwant\n%#v", g.file, m, old)
			}
			// With nothing new to say, this version writes the previous
			// version's bytes exactly.
			if got := AppendFrame(nil, old); !bytes.Equal(got, prev) {
				t.Errorf("the example without its new fields encodes to\n%swant the previous version's\n%s", formatHex(got), formatHex(prev))
			}
			// An older decoder skips unknown keys: what it sees of this
			// version's bytes is the previous version's message, the new
			// keys left out.
			cur := readGolden(t, g.file)
			got := genericBody(t, cur[headerLen:])
			dropKeys(got, g.msg.Type().String())
			if want := genericBody(t, prev[headerLen:]); !reflect.DeepEqual(got, want) {
				t.Errorf("%s without its new keys is\n%v\nwant the previous version's\n%v", g.file, got, want)
			}
		})
	}
}

// genericBody decodes a body without knowing its message: [type, payload]
// with maps of keys to values.
func genericBody(t *testing.T, body []byte) []any {
	t.Helper()
	var v []any
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// dropKeys removes the keys newKeys lists from a generic body of type typ.
func dropKeys(body []any, typ string) {
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case map[any]any:
			for _, k := range newKeys[path] {
				for key := range v {
					if asUint(key) == k {
						delete(v, key)
					}
				}
			}
			for key, val := range v {
				walk(val, path+"/"+uintString(asUint(key)))
			}
		case []any:
			for _, e := range v {
				walk(e, path)
			}
		}
	}
	walk(body[1], typ)
}

func asUint(k any) uint64 {
	switch k := k.(type) {
	case int8:
		return uint64(k)
	case int16:
		return uint64(k)
	case int32:
		return uint64(k)
	case int64:
		return uint64(k)
	case uint8:
		return uint64(k)
	case uint16:
		return uint64(k)
	case uint32:
		return uint64(k)
	case uint64:
		return k
	}
	return 1 << 63
}

func uintString(u uint64) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + u%10)}, b...)
		if u < 10 {
			return string(b)
		}
		u /= 10
	}
}
