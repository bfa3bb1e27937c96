package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// h decodes hex written with spaces for readability.
func h(t testing.TB, s string) []byte {
	t.Helper()
	b, err := parseHex(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func goldenBody(t testing.TB, g golden) []byte {
	return readGolden(t, g.file)[headerLen:]
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestFormatCodesMatchMsgpcode(t *testing.T) {
	for _, c := range []struct {
		mine byte
		lib  byte
	}{
		{mpPosFixintMax, msgpcode.PosFixedNumHigh}, {mpNegFixintMin, msgpcode.NegFixedNumLow},
		{mpFixmap, msgpcode.FixedMapLow}, {mpFixarray, msgpcode.FixedArrayLow}, {mpFixstr, msgpcode.FixedStrLow},
		{mpNil, msgpcode.Nil}, {mpFalse, msgpcode.False}, {mpTrue, msgpcode.True},
		{mpBin8, msgpcode.Bin8}, {mpBin16, msgpcode.Bin16}, {mpBin32, msgpcode.Bin32},
		{mpExt8, msgpcode.Ext8}, {mpExt16, msgpcode.Ext16}, {mpExt32, msgpcode.Ext32},
		{mpFloat32, msgpcode.Float}, {mpFloat64, msgpcode.Double},
		{mpUint8, msgpcode.Uint8}, {mpUint16, msgpcode.Uint16}, {mpUint32, msgpcode.Uint32}, {mpUint64, msgpcode.Uint64},
		{mpInt8, msgpcode.Int8}, {mpInt16, msgpcode.Int16}, {mpInt32, msgpcode.Int32}, {mpInt64, msgpcode.Int64},
		{mpFixext1, msgpcode.FixExt1}, {mpFixext2, msgpcode.FixExt2}, {mpFixext4, msgpcode.FixExt4},
		{mpFixext8, msgpcode.FixExt8}, {mpFixext16, msgpcode.FixExt16},
		{mpStr8, msgpcode.Str8}, {mpStr16, msgpcode.Str16}, {mpStr32, msgpcode.Str32},
		{mpArray16, msgpcode.Array16}, {mpArray32, msgpcode.Array32}, {mpMap16, msgpcode.Map16}, {mpMap32, msgpcode.Map32},
	} {
		if c.mine != c.lib {
			t.Errorf("format code %#x, msgpcode has %#x", c.mine, c.lib)
		}
	}
}

func TestIntegerEncoding(t *testing.T) {
	for _, c := range []struct {
		v    uint64
		want string
	}{
		{0, "00"}, {127, "7f"}, {128, "cc80"}, {255, "ccff"}, {256, "cd0100"}, {65535, "cdffff"},
		{65536, "ce00010000"}, {math.MaxUint32, "ceffffffff"}, {math.MaxUint32 + 1, "cf0000000100000000"},
		{math.MaxUint64, "cfffffffffffffffff"},
	} {
		if got := appendUint(nil, c.v); !bytes.Equal(got, h(t, c.want)) {
			t.Errorf("appendUint(%d) = %x, want %s", c.v, got, c.want)
		}
	}
	for _, c := range []struct {
		v    int64
		want string
	}{
		{0, "00"}, {5, "05"}, {200, "ccc8"}, {math.MaxInt64, "cf7fffffffffffffff"},
		{-1, "ff"}, {-32, "e0"}, {-33, "d0df"}, {-128, "d080"}, {-129, "d1ff7f"}, {-32768, "d18000"},
		{-32769, "d2ffff7fff"}, {math.MinInt32, "d280000000"}, {math.MinInt32 - 1, "d3ffffffff7fffffff"},
		{math.MinInt64, "d38000000000000000"},
	} {
		if got := appendInt(nil, c.v); !bytes.Equal(got, h(t, c.want)) {
			t.Errorf("appendInt(%d) = %x, want %s", c.v, got, c.want)
		}
	}
}

// TestIntegerEncodingMatchesLibrary checks the integer rule against the
// msgpack library's compact integer encoder on boundary and random values.
func TestIntegerEncodingMatchesLibrary(t *testing.T) {
	var vals []int64
	for _, p := range []int64{0, 5, 7, 8, 15, 16, 31, 32, 63} {
		vals = append(vals, 1<<p-1, 1<<p, -(1 << p), -(1<<p)-1)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		vals = append(vals, int64(r.Uint64())>>r.IntN(64))
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	for _, v := range vals {
		buf.Reset()
		if err := enc.EncodeInt(v); err != nil {
			t.Fatal(err)
		}
		if got := appendInt(nil, v); !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("appendInt(%d) = %x, library %x", v, got, buf.Bytes())
		}
		buf.Reset()
		if err := enc.EncodeUint(uint64(v)); err != nil {
			t.Fatal(err)
		}
		if got := appendUint(nil, uint64(v)); !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("appendUint(%d) = %x, library %x", uint64(v), got, buf.Bytes())
		}
	}
}

func TestStringEncoding(t *testing.T) {
	for _, n := range []int{0, 31, 32, 255, 256, 65535, 65536} {
		s := strings.Repeat("x", n)
		var buf bytes.Buffer
		if err := msgpack.NewEncoder(&buf).EncodeString(s); err != nil {
			t.Fatal(err)
		}
		if got := appendStr(nil, s); !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("appendStr of %d bytes: header %x, library %x", n, got[:min(len(got), 5)], buf.Bytes()[:min(buf.Len(), 5)])
		}
		m := &Hello{AgentID: s, Labels: []Label{{Key: s}, {Value: s}}}
		got, err := Decode(Append(nil, m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("Hello with strings of %d bytes: %v", n, err)
		}
	}
	for _, n := range []int{0, 15, 16, 65535, 65536} {
		want := &Welcome{Servers: make([]string, n)}
		if n == 0 {
			want.Servers = nil
		}
		b := Append(nil, want)
		var buf bytes.Buffer
		if err := msgpack.NewEncoder(&buf).EncodeArrayLen(n); err != nil {
			t.Fatal(err)
		}
		if n > 0 && !bytes.Contains(b, append([]byte{5}, buf.Bytes()...)) {
			t.Errorf("array of %d: header %x not found", n, buf.Bytes())
		}
		got, err := Decode(b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Welcome with %d servers: %v", n, err)
		}
	}
}

// TestZeroValues: a zero message is its type and an empty map.
func TestZeroValues(t *testing.T) {
	for _, g := range goldenExamples() {
		zero := reflect.New(reflect.TypeOf(g.msg).Elem()).Interface().(Message)
		b := Append(nil, zero)
		if want := []byte{0x92, byte(zero.Type()), 0x80}; !bytes.Equal(b, want) {
			t.Errorf("zero %T encodes to %x, want %x", zero, b, want)
		}
		m, err := Decode(b)
		if err != nil || !reflect.DeepEqual(m, zero) {
			t.Errorf("zero %T decodes to %#v, %v", zero, m, err)
		}
	}
}

func TestRoundTripSignedAndWideValues(t *testing.T) {
	for _, at := range []int64{-1, -32, -33, -200, -40000, math.MinInt32 - 1, math.MinInt64, math.MaxInt64, 1} {
		m := &DeltaBatch{AgentTime: at, Seq: math.MaxUint64, Entries: []DeltaEntry{{}, {Tenant: "t", Class: "unknown-class"}}}
		got, err := Decode(Append(nil, m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("AgentTime %d: got %#v, %v", at, got, err)
		}
	}
	m := &TenantState{Tenants: []TenantInfo{{BurstPct: math.MaxUint32, Mode: "other"}, {Mode: "meter"}}}
	if got, err := Decode(Append(nil, m)); err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("TenantState: got %#v, %v", got, err)
	}
	e := &Error{Code: math.MaxUint16}
	if got, err := Decode(Append(nil, e)); err != nil || !reflect.DeepEqual(got, e) {
		t.Errorf("Error: got %#v, %v", got, err)
	}
}

// TestDecodeAnyIntegerWidth: an encoder elsewhere may use wider forms, or
// signed ones, for the same values.
func TestDecodeAnyIntegerWidth(t *testing.T) {
	want := &Ack{Seq: 5, Index: 300}
	for _, body := range []string{
		"92 05 82 01 05 02 cd012c",
		"92 05 82 01 cc05 02 ce0000012c",
		"92 05 82 01 cd0005 02 cf000000000000012c",
		"92 05 82 01 ce00000005 02 d1012c",
		"92 05 82 01 cf0000000000000005 02 d20000012c",
		"92 05 82 01 d005 02 d3000000000000012c",
		"92 05 82 01 d30000000000000005 02 cd012c",
		"92 cf0000000000000005 82 01 05 02 cd012c", // the type too
		"92 05 de0002 cc01 05 cd0002 cd012c",       // map16, wide keys
		"dc0002 05 df00000002 01 05 02 cd012c",     // array16, map32
	} {
		got, err := Decode(h(t, body))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v, %v", body, got, err)
		}
	}
	// AgentTime, a signed field, from every form.
	for _, c := range []struct {
		hex  string
		want int64
	}{{"ff", -1}, {"d0ff", -1}, {"d1fffe", -2}, {"d2fffffffd", -3}, {"d3fffffffffffffffc", -4}, {"cc80", 128}, {"cf7fffffffffffffff", math.MaxInt64}, {"c0", 0}} {
		got, err := Decode(h(t, "92 03 81 04 "+c.hex))
		if err != nil || got.(*DeltaBatch).AgentTime != c.want {
			t.Errorf("AgentTime %s: got %#v, %v; want %d", c.hex, got, err, c.want)
		}
	}
}

// TestDecodeNil: nil stands for the zero value of any field.
func TestDecodeNil(t *testing.T) {
	got, err := Decode(h(t, "92 01 85 01 c0 02 c0 03 c0 04 c0 05 c0"))
	if err != nil || !reflect.DeepEqual(got, &Hello{}) {
		t.Errorf("Hello of nils: %#v, %v", got, err)
	}
	got, err = Decode(h(t, "92 03 81 05 92 c0 81 02 c0"))
	if want := (&DeltaBatch{Entries: []DeltaEntry{{}, {}}}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("DeltaBatch with nil entries: %#v, %v", got, err)
	}
	got, err = Decode(h(t, "92 02 81 04 c0"))
	if err != nil || !reflect.DeepEqual(got, &Welcome{}) {
		t.Errorf("Welcome with a nil bool: %#v, %v", got, err)
	}
}

// withUnknownKeys returns body with extra map entries, of keys no version
// uses and values of every kind, before and after its payload's fields (only
// after for a payload of more than 7 entries, so that the map stays a
// fixmap). The payload must be a fixmap with at most 11 entries.
func withUnknownKeys(t testing.TB, body []byte) []byte {
	t.Helper()
	if body[0] != 0x92 || body[2]&0xf0 != mpFixmap || body[2]&0x0f > 11 {
		t.Fatalf("unexpected body start %x", body[:3])
	}
	before := h(t, ""+
		"3c a6 667574757265"+ // 60: "future"
		"3d 93 01 a1 78 81 01 92 c3 c2"+ // 61: [1, "x", {1: [true, false]}]
		"cc c8 cb 400921fb54442d18"+ // 200 (as uint8): 3.141592653589793
		"a3 6b6579 05") // "key": 5
	after := h(t, ""+
		"3e 82 01 91 81 a1 61 90 a1 62 c4 03 010203"+ // 62: {1: [{"a": []}], "b": bin}
		"ff d6 01 01020304"+ // -1: fixext4
		"cf 00000001 00000000 c7 02 05 0102"+ // 2^32: ext8
		"3f ca 3f800000") // 63: float32
	if body[2]&0x0f > 7 {
		out := append([]byte{body[0], body[1], body[2] + 4}, body[3:]...)
		return append(out, after...)
	}
	out := append([]byte{body[0], body[1], body[2] + 8}, before...)
	out = append(out, body[3:]...)
	return append(out, after...)
}

// TestForwardCompatibility: keys a later version adds are skipped, whatever
// their values, at the top of a message and inside nested structs.
func TestForwardCompatibility(t *testing.T) {
	for _, g := range goldenExamples() {
		body := withUnknownKeys(t, goldenBody(t, g))
		m, err := Decode(body)
		if err != nil {
			t.Errorf("%s with unknown keys: %v", g.file, err)
			continue
		}
		if !reflect.DeepEqual(m, g.msg) {
			t.Errorf("%s with unknown keys decodes to %#v", g.file, m)
		}
	}
	// Unknown keys inside an entry, a label, a peak, a count, a tenant.
	for _, c := range []struct {
		body string
		want Message
	}{
		{"92 03 81 05 91 83 1f 93 80 90 c0 01 a1 74 1e 81 01 a1 78", &DeltaBatch{Entries: []DeltaEntry{{Tenant: "t"}}}},
		{"92 03 81 06 91 82 02 07 08 d7 00 0000000000000000", &DeltaBatch{Peaks: []TenantPeak{{Peak: 7}}}},
		{"92 01 81 04 91 82 03 a1 78 02 a1 76", &Hello{Labels: []Label{{Value: "v"}}}},
		{"92 04 81 05 91 82 04 db00000001 7a 03 01", &FullState{Counts: []CountEntry{{Open: 1}}}},
		{"92 06 81 03 91 82 1f c5 0002 ffff 07 c3", &TenantState{Tenants: []TenantInfo{{Suspended: true}}}},
	} {
		got, err := Decode(h(t, c.body))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %#v, %v; want %#v", c.body, got, err, c.want)
		}
	}
}

func TestUnknownType(t *testing.T) {
	for _, c := range []struct {
		body string
		msg  string
	}{
		{"92 2a 80", "wire: unknown message type 42"},
		{"92 00 80", "wire: unknown message type 0"},
		{"92 cd0101 80", "wire: unknown message type 257"}, // not type 1 truncated to a byte
		{"92 cfffffffffffffffff 80", "wire: unknown message type 18446744073709551615"},
	} {
		_, err := Decode(h(t, c.body))
		if !errors.Is(err, ErrUnknownType) || err.Error() != c.msg {
			t.Errorf("%s: %v, want %q", c.body, err, c.msg)
		}
	}
	if _, err := Decode(h(t, "92 ff 80")); !errors.Is(err, ErrMalformed) {
		t.Errorf("negative type: %v", err)
	}
}

// TestMalformed lists bodies that must be refused, each with a piece of the
// error message.
func TestMalformed(t *testing.T) {
	for _, c := range []struct {
		name, body, msg string
	}{
		{"empty", "", "unexpected end"},
		{"not an array", "81 01 80", "want array, got map"},
		{"array of 3", "93 05 80 80", "array of 3 elements"},
		{"array of 1", "91 05", "array of 1 elements"},
		{"type is a str", "92 a1 31 80", "type: want uint, got str"},
		{"payload is an array", "92 05 90", "Ack: want map, got array"},
		{"payload is a str", "92 05 a0", "Ack: want map, got str"},
		{"trailing byte", "92 05 80 00", "1 trailing bytes"},
		{"trailing body", "92 05 80 92 05 80", "3 trailing bytes"},

		// Wrong types of known keys.
		{"str for uint", "92 05 81 01 a1 35", "Ack.Seq: want uint, got str"},
		{"float for uint", "92 05 81 01 cb 4014000000000000", "Ack.Seq: want uint, got float"},
		{"uint for str", "92 01 81 01 05", "Hello.AgentID: want str, got positive fixint"},
		{"bin for str", "92 01 81 01 c4 01 61", "Hello.AgentID: want str, got bin"},
		{"int for bool", "92 02 81 04 01", "Welcome.NeedFullState: want bool, got positive fixint"},
		{"map for array", "92 02 81 05 80", "Welcome.Servers: want array, got map"},
		{"uint in Servers", "92 02 81 05 92 a0 07", "Welcome.Servers[1]: want str, got positive fixint"},
		{"array for entry", "92 03 81 05 92 80 90", "DeltaBatch.Entries[1]: want map, got array"},
		{"uint for class", "92 03 81 05 92 80 81 02 05", "DeltaBatch.Entries[1].Class: want str, got positive fixint"},
		{"str for peak", "92 03 81 06 91 81 02 a0", "DeltaBatch.Peaks[0].Peak: want uint, got str"},
		{"str for label", "92 01 81 04 91 81 02 c3", "Hello.Labels[0].Value: want str, got bool"},
		{"bool for open", "92 04 81 05 91 81 03 c2", "FullState.Counts[0].Open: want uint, got bool"},
		{"uint for mode", "92 06 81 03 91 81 04 01", "TenantState.Tenants[0].Mode: want str, got positive fixint"},
		{"str for AgentTime", "92 03 81 04 a0", "DeltaBatch.AgentTime: want int, got str"},
		{"0xc1", "92 03 81 04 c1", "DeltaBatch.AgentTime: want int, got invalid code 0xc1"},

		// Negative values and overflow.
		{"negative fixint", "92 05 81 01 ff", "Ack.Seq: negative value -1"},
		{"negative int8", "92 05 81 02 d0 80", "Ack.Index: negative value -128"},
		{"negative int64", "92 09 81 01 d3 8000000000000000", "Ping.Nonce: negative value"},
		{"negative code", "92 08 81 01 e0", "Error.Code: negative value -32"},
		{"negative entry", "92 03 81 05 91 81 05 d1 8000", "DeltaBatch.Entries[0].SessionMicros: negative value -32768"},
		{"uint32 overflow", "92 01 81 03 cf 0000000100000000", "Hello.Version: 4294967296 overflows"},
		{"uint16 overflow", "92 08 81 01 ce 00010000", "Error.Code: 65536 overflows"},
		{"BurstPct overflow", "92 06 81 03 91 81 05 cf ffffffffffffffff", "TenantState.Tenants[0].BurstPct: 18446744073709551615 overflows"},
		{"int64 overflow", "92 03 81 04 cf 8000000000000000", "DeltaBatch.AgentTime: 9223372036854775808 overflows"},

		// Structure.
		{"repeated key", "92 05 82 01 01 01 02", "Ack.Seq: repeated key"},
		{"repeated nested key", "92 03 81 05 91 82 02 a0 02 a0", "DeltaBatch.Entries[0].Class: repeated key"},
		{"repeated wide key", "92 05 82 01 01 cd0001 02", "Ack.Seq: repeated key"},
		{"map count", "92 05 83 01 01 02 02", "Ack: map of 3 entries with 4 bytes left"},
		{"array count", "92 02 81 05 93 a0 a0", "Welcome.Servers: array of 3 elements with 2 bytes left"},
		{"str length", "92 01 81 01 a5 61 62", "Hello.AgentID: str of 5 bytes with 2 bytes left"},
		{"str32 length", "92 01 81 01 db ffffffff 61", "Hello.AgentID: str of 4294967295 bytes with 1 bytes left"},
		{"unknown key truncated", "92 05 81 07 c4 05 01", "Ack.key 7: unexpected end"},
		{"unknown key 0xc1", "92 05 81 07 c1", "Ack.key 7: invalid code 0xc1"},
		{"str key truncated", "92 05 81 a5 61", "Ack.unknown key: unexpected end"},
		{"unknown ext32", "92 05 81 07 c9 7fffffff 01 00", "Ack.key 7: unexpected end"},
		{"unknown array32", "92 05 81 07 dd 7fffffff 00", "Ack.key 7: array of 2147483647 elements with 1 bytes left"},
		{"unknown map32", "92 05 81 07 df 7fffffff 00 00", "Ack.key 7: map of 2147483647 entries with 2 bytes left"},
	} {
		_, err := Decode(h(t, c.body))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s (%s): %v, want ErrMalformed with %q", c.name, c.body, err, c.msg)
		}
	}
}

func TestNestingLimit(t *testing.T) {
	// Ack with an unknown key 7 whose value is n nested arrays. The body's
	// array is depth 1, the payload 2, the value 3.
	nested := func(n int) []byte {
		b := []byte{0x92, 0x05, 0x81, 0x07}
		for range n {
			b = append(b, 0x91)
		}
		return append(b, 0x00)
	}
	if _, err := Decode(nested(maxDepth - 3)); err != nil {
		t.Errorf("%d nested arrays: %v", maxDepth-3, err)
	}
	_, err := Decode(nested(maxDepth - 2))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "nested deeper than 32") {
		t.Errorf("%d nested arrays: %v", maxDepth-2, err)
	}
	// A million nested arrays: refused, without exhausting the stack.
	if _, err := Decode(nested(1 << 20)); !errors.Is(err, ErrMalformed) {
		t.Errorf("a million nested arrays: %v", err)
	}
}

// TestTruncated: every proper prefix of every golden body is refused.
func TestTruncated(t *testing.T) {
	for _, g := range goldenExamples() {
		for _, body := range [][]byte{goldenBody(t, g), withUnknownKeys(t, goldenBody(t, g))} {
			for i := range body {
				m, err := Decode(body[:i:i])
				if !errors.Is(err, ErrMalformed) || m != nil {
					t.Errorf("%s cut at %d of %d: %v, %v", g.file, i, len(body), m, err)
				}
			}
		}
	}
}

// TestHugeCounts: a count or length that the bytes left cannot hold is
// refused before anything is allocated for it.
func TestHugeCounts(t *testing.T) {
	for _, c := range []struct{ name, body string }{
		// 50 million DeltaEntries declared in 14 bytes.
		{"Entries", "92 03 81 05 dd 02faf080 80 80 80 80 80"},
		{"Usage", "92 04 81 06 dd 02faf080 80 80 80 80 80"},
		{"Counts", "92 04 81 05 dd 02faf080 80 80 80 80 80"},
		{"Peaks", "92 04 81 07 dd 02faf080 80 80 80 80 80"},
		{"Tenants", "92 06 81 03 dd 02faf080 80 80 80 80 80"},
		{"Labels", "92 01 81 04 dd 02faf080 80 80 80 80 80"},
		{"Servers", "92 07 81 02 dd 02faf080 a0 a0 a0 a0 a0"},
		{"payload map", "92 03 df 02faf080 01 02 03 04 05 06 07"},
		{"body array", "dd 02faf080 03 80 00 00 00 00 00 00 00"},
		{"string", "92 01 81 01 db 02faf080 61 62 63 64 65"},
		{"unknown bin", "92 01 81 09 c6 02faf080 61 62 63 64 65"},
		{"unknown ext", "92 01 81 09 c9 02faf080 01 62 63 64 65"},
		{"unknown array", "92 01 81 09 dd 02faf080 91 91 91 91 91"},
		{"array in entry", "92 03 81 05 91 81 09 dd 02faf080 c0 c0"},
		{"max uint32", "92 03 81 05 dd ffffffff 80 80 80 80 80"},
	} {
		body := h(t, c.body)
		var err error
		n := allocated(func() { _, err = Decode(body) })
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", c.name, err)
		}
		if n >= 64<<10 {
			t.Errorf("%s: decoding %d bytes allocated %d bytes", c.name, len(body), n)
		}
	}
	// The first case of the brief: 50 million entries in 14 bytes.
	body := h(t, "92 03 81 05 dd 02faf080 80 80 80 80 80")
	if len(body) != 14 {
		t.Fatalf("body of %d bytes", len(body))
	}
	// A handful of small allocations build the error (8 when this was
	// written; more under the race detector).
	if allocs := testing.AllocsPerRun(10, func() { _, _ = Decode(body) }); allocs > 16 {
		t.Errorf("%v allocations for a refused body", allocs)
	}
}

// TestDecodeDoesNotAlias: decoded strings do not share memory with the body,
// which a Reader reuses.
func TestDecodeDoesNotAlias(t *testing.T) {
	for _, g := range goldenExamples() {
		body := goldenBody(t, g)
		m, err := Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		for i := range body {
			body[i] = 0xc1
		}
		if !reflect.DeepEqual(m, g.msg) {
			t.Errorf("%s: the message changed with the body", g.file)
		}
	}
}

// TestLibraryInterop: the library decodes our bodies, and we decode a body
// written by the library with fixed-width integers.
func TestLibraryInterop(t *testing.T) {
	for _, g := range goldenExamples() {
		r := bytes.NewReader(goldenBody(t, g))
		dec := msgpack.NewDecoder(r)
		dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
		if _, err := dec.DecodeInterface(); err != nil || r.Len() != 0 {
			t.Errorf("%s: the library cannot decode it (%v) or leaves %d bytes", g.file, err, r.Len())
		}
		// The extra keys of the forward compatibility test are valid
		// msgpack too.
		r.Reset(withUnknownKeys(t, goldenBody(t, g)))
		if err := dec.Skip(); err != nil || r.Len() != 0 {
			t.Errorf("%s with unknown keys: the library cannot skip it (%v) or leaves %d bytes", g.file, err, r.Len())
		}
	}
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	check := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	check(e.EncodeArrayLen(2))
	check(e.EncodeUint64(uint64(TypeDeltaBatch)))
	check(e.EncodeMapLen(4))
	check(e.EncodeUint8(1))
	check(e.EncodeString("agent-1"))
	check(e.EncodeUint32(3))
	check(e.EncodeUint64(9))
	check(e.EncodeUint16(4))
	check(e.EncodeInt64(-5))
	check(e.EncodeInt8(5))
	check(e.EncodeArrayLen(1))
	check(e.EncodeMapLen(3))
	check(e.EncodeInt(1))
	check(e.EncodeString("tenant-1"))
	check(e.EncodeInt(2))
	check(e.EncodeString("ai"))
	check(e.EncodeInt(5))
	check(e.EncodeUint64(1e8))
	got, err := Decode(buf.Bytes())
	want := &DeltaBatch{AgentID: "agent-1", Seq: 9, AgentTime: -5, Entries: []DeltaEntry{{Tenant: "tenant-1", Class: "ai", SessionMicros: 1e8}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("library body: %#v, %v", got, err)
	}
}

func TestStringInterning(t *testing.T) {
	m := &DeltaBatch{Entries: []DeltaEntry{
		{Tenant: "tenant-1", Class: "audio"}, {Tenant: "tenant-1", Class: "video-hd"},
		{Tenant: "tenant-2", Class: "video-fhd"}, {Tenant: "tenant-1", Class: "video-2k+"},
	}}
	body := Append(nil, m)
	got, err := Decode(body)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("%#v, %v", got, err)
	}
	// Five strings of classes and four tenant ids, of which the second is
	// shared with the first: three string allocations, the entries and the
	// message.
	if n := testing.AllocsPerRun(20, func() { _, _ = Decode(body) }); n != 5 {
		t.Errorf("%v allocations, want 5", n)
	}
}

func TestNames(t *testing.T) {
	for c, want := range map[ErrorCode]string{
		CodeInternal: "internal", CodeBadMessage: "bad-message", CodeVersion: "version", CodeNotLeader: "not-leader",
		CodeSeqGap: "seq-gap", CodeNeedFullState: "need-full-state", CodeOldEpoch: "old-epoch",
		CodeUnauthenticated: "unauthenticated", CodeTooLarge: "too-large", 0: "code(0)", 10: "code(10)", 65535: "code(65535)",
	} {
		if got := c.String(); got != want {
			t.Errorf("ErrorCode(%d).String() = %q, want %q", uint16(c), got, want)
		}
	}
	for typ, want := range map[Type]string{TypeHello: "hello", TypeDeltaBatch: "delta-batch", TypePong: "pong", TypeRecall: "recall", 0: "type(0)", 200: "type(200)"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
	if got := (&Error{Code: CodeSeqGap, Message: "resend from 42"}).Error(); got != "wire: seq-gap: resend from 42" {
		t.Errorf("Error.Error() = %q", got)
	}
}

type alien struct{}

func (alien) Type() Type { return 99 }

func TestAppendUnsupported(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Append of a foreign Message did not panic")
		}
	}()
	Append(nil, alien{})
}

// TestFieldTables checks the codec's field tables against the structs of
// messages.go (a field added there must be added to the codec too) and
// against the key tables of PROTOCOL.md.
func TestFieldTables(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		v     any
		names []string
	}{
		{Hello{}, helloFields}, {Label{}, labelFields}, {Welcome{}, welcomeFields},
		{DeltaBatch{}, deltaBatchFields}, {DeltaEntry{}, deltaEntryFields}, {TenantPeak{}, tenantPeakFields},
		{FullState{}, fullStateFields}, {CountEntry{}, countEntryFields}, {Ack{}, ackFields},
		{TenantState{}, tenantStateFields}, {TenantInfo{}, tenantInfoFields}, {Redirect{}, redirectFields},
		{Error{}, errorFields}, {Ping{}, pingFields}, {Pong{}, pongFields}, {ClassLimit{}, classLimitFields},
		{GrantAsk{}, grantAskFields}, {GrantWant{}, grantWantFields}, {Grant{}, grantFields},
		{GrantShare{}, grantShareFields}, {Recall{}, recallFields}, {GrantPool{}, grantPoolFields},
	} {
		typ := reflect.TypeOf(c.v)
		want := []string{typ.Name()}
		for i := 0; i < typ.NumField(); i++ {
			want = append(want, typ.Field(i).Name)
		}
		if !reflect.DeepEqual(c.names, want) {
			t.Errorf("the codec knows %s as %q, messages.go declares %q", typ.Name(), c.names, want)
		}
		var rows strings.Builder
		for k, name := range c.names[1:] {
			fmt.Fprintf(&rows, `\| %d \| %s \|[^\n]*\n`, k+1, name)
		}
		if !regexp.MustCompile(rows.String()).Match(doc) {
			t.Errorf("PROTOCOL.md has no key table listing %q in order", c.names[1:])
		}
	}
}

// TestDeltaEntryPaths: entries decode the same whether they take the fast
// path (what Append writes) or the general one (wide integer forms, str8,
// keys in another order, as another encoder may write them).
func TestDeltaEntryPaths(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pick := func() uint64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return uint64(r.IntN(128))
		case 2:
			return uint64(r.IntN(1 << 20))
		}
		return r.Uint64()
	}
	str := func() string {
		return strings.Repeat("t", []int{0, 1, 11, 31, 32, 300}[r.IntN(6)])
	}
	for range 300 {
		want := &DeltaBatch{Entries: make([]DeltaEntry, 1+r.IntN(5))}
		for i := range want.Entries {
			want.Entries[i] = DeltaEntry{
				Tenant: str(), Class: []string{"", "audio", "video-2k+", "other"}[r.IntN(4)],
				Opened: pick(), Closed: pick(), SessionMicros: pick(), Peak: pick(), Refused: pick(),
			}
		}
		if got, err := Decode(Append(nil, want)); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Append's encoding: %#v, %v", got, err)
		}
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		_ = e.EncodeArrayLen(2)
		_ = e.EncodeUint8(uint8(TypeDeltaBatch))
		_ = e.EncodeMapLen(1)
		_ = e.EncodeUint16(5)
		_ = e.EncodeArrayLen(len(want.Entries))
		for _, x := range want.Entries {
			_ = e.EncodeMapLen(7)
			for _, k := range r.Perm(7) {
				_ = e.EncodeUint64(uint64(k + 1))
				switch k + 1 {
				case 1:
					_ = e.EncodeString(x.Tenant)
				case 2:
					_ = e.EncodeString(x.Class)
				case 3:
					_ = e.EncodeUint64(x.Opened)
				case 4:
					_ = e.EncodeUint64(x.Closed)
				case 5:
					_ = e.EncodeUint64(x.SessionMicros)
				case 6:
					_ = e.EncodeUint64(x.Peak)
				case 7:
					_ = e.EncodeUint64(x.Refused)
				}
			}
		}
		if got, err := Decode(buf.Bytes()); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("wide encoding: %#v, %v", got, err)
		}
	}
}
