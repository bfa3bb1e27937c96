package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"unsafe"
)

// maxElemSize is the size of the largest struct an array of the protocol
// decodes into. An element of such an array can be as small as one byte of
// msgpack (an empty map, 0x80, or nil).
var maxElemSize = max(
	unsafe.Sizeof(Label{}), unsafe.Sizeof(DeltaEntry{}), unsafe.Sizeof(TenantPeak{}),
	unsafe.Sizeof(CountEntry{}), unsafe.Sizeof(TenantInfo{}), unsafe.Sizeof(ClassLimit{}),
	unsafe.Sizeof(GrantWant{}), unsafe.Sizeof(GrantShare{}), unsafe.Sizeof(GrantPool{}), unsafe.Sizeof(""),
)

// allocBound is the most heap memory Decode may allocate for a body of n
// bytes, successful or not.
//
// Every allocation is for something the body holds, and is checked against
// the bytes left before it is made:
//
//   - A slice of structs (or of strings) takes at least one byte per element
//     (0x80, 0xa0 or 0xc0), and is allocated at its exact length: at most
//     maxElemSize bytes (112, a TenantInfo) per byte of body.
//   - A string of L ≥ 1 bytes takes at least L+1 bytes of body and allocates
//     L bytes, or a 16-byte block of the tiny allocator: at most 8 bytes per
//     byte of body. Empty strings and the known class and mode names
//     allocate nothing.
//   - The runtime rounds an allocation up: to its size class up to 32 KiB
//     (by less than 1/6 for the sizes at issue), to whole 8 KiB pages beyond
//     (by at most 1/4, for a little over 32 KiB). Hence the factor 5/4.
//   - The rest does not grow with the body: the message struct (at most 120
//     bytes), an error with its message, and the noise of measuring with
//     runtime.ReadMemStats. 64 KiB covers them.
//
// Each byte of body counts once: an element's first byte for the element, a
// string's bytes for the string. So the bound is 140 bytes per byte of body,
// plus 64 KiB. TestAllocBoundWorstCases checks the worst bodies against it.
func allocBound(n int) uint64 {
	return uint64(n)*uint64(maxElemSize)*5/4 + 64<<10
}

func TestAllocBoundWorstCases(t *testing.T) {
	if maxElemSize != 112 {
		t.Errorf("the largest element has %d bytes; update the comment of allocBound", maxElemSize)
	}
	// Arrays of n empty elements of each list, as one-element payloads.
	lists := []struct {
		name   string
		prefix []byte
		elem   byte
	}{
		{"Hello.Labels", []byte{0x92, 0x01, 0x81, 0x04}, 0x80},
		{"Welcome.Servers", []byte{0x92, 0x02, 0x81, 0x05}, 0xa0},
		{"DeltaBatch.Entries", []byte{0x92, 0x03, 0x81, 0x05}, 0x80},
		{"FullState.Counts", []byte{0x92, 0x04, 0x81, 0x05}, 0xc0},
		{"FullState.Peaks", []byte{0x92, 0x04, 0x81, 0x07}, 0x80},
		{"TenantState.Tenants", []byte{0x92, 0x06, 0x81, 0x03}, 0x80},
		{"TenantState.Tenants[0].ClassLimits", []byte{0x92, 0x06, 0x81, 0x03, 0x91, 0x81, 0x08}, 0x80},
		{"GrantAsk.Wants", []byte{0x92, 0x0b, 0x81, 0x03}, 0x80},
		{"Grant.Shares", []byte{0x92, 0x0c, 0x81, 0x03}, 0x80},
		{"Recall.Pools", []byte{0x92, 0x0d, 0x81, 0x01}, 0x80},
		{"DeltaBatch.Users", []byte{0x92, 0x03, 0x81, 0x07}, 0x80},
		{"DeltaBatch.Users[0].Hashes", []byte{0x92, 0x03, 0x81, 0x07, 0x91, 0x81, 0x03}, 0x00},
		{"FullState.Users", []byte{0x92, 0x04, 0x81, 0x08}, 0x80},
	}
	for _, l := range lists {
		for _, n := range []int{1, 15, 16, 100, 409, 410, 1000, 65535, 65536, 200_000} {
			body := appendArrayHeader(append([]byte(nil), l.prefix...), n)
			body = append(body, bytes.Repeat([]byte{l.elem}, n)...)
			var err error
			got := allocated(func() { _, err = Decode(body) })
			if err != nil {
				t.Fatalf("%s of %d: %v", l.name, n, err)
			}
			if got > allocBound(len(body)) {
				t.Errorf("%s of %d: body of %d bytes allocated %d bytes, bound %d", l.name, n, len(body), got, allocBound(len(body)))
			}
		}
	}
	// Strings of 1 byte, each in 2 bytes of body.
	body := []byte{0x92, 0x02, 0x81, 0x05, mpArray32, 0, 1, 0, 0}
	body = append(body, bytes.Repeat([]byte{0xa1, 'x'}, 65536)...)
	if got := allocated(func() { _, _ = Decode(body) }); got > allocBound(len(body)) {
		t.Errorf("one-byte strings: body of %d bytes allocated %d bytes", len(body), got)
	}
}

// checkDecode checks what FuzzDecode promises of one body.
func checkDecode(t *testing.T, body []byte) {
	var m Message
	var err error
	if n := allocated(func() { m, err = Decode(body) }); n > allocBound(len(body)) {
		t.Fatalf("decoding %d bytes allocated %d bytes (bound %d)", len(body), n, allocBound(len(body)))
	}
	if err != nil {
		if m != nil {
			t.Fatalf("a message with an error: %v", err)
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		return
	}
	enc := Append(nil, m)
	if len(enc) > len(body) {
		// Append writes every value in its smallest form and drops
		// what is zero or unknown: it never needs more bytes.
		t.Fatalf("re-encoding %d bytes gives %d bytes", len(body), len(enc))
	}
	m2, err := Decode(enc)
	if err != nil {
		t.Fatalf("re-encoded body refused: %v\n%x", err, enc)
	}
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("re-encoded body decodes to\n%#v\nwant\n%#v", m2, m)
	}
	if enc2 := Append(nil, m2); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable:\n%x\n%x", enc, enc2)
	}
}

// FuzzDecode: Decode never panics, stays within allocBound, and what it
// accepts re-encodes to an equal message.
func FuzzDecode(f *testing.F) {
	for _, g := range goldenExamples() {
		f.Add(goldenBody(f, g))
		f.Add(withUnknownKeys(f, goldenBody(f, g)))
	}
	f.Add([]byte{0x92, 0x03, 0x81, 0x05, 0xdd, 0x02, 0xfa, 0xf0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80})
	f.Add([]byte{0x92, 0x06, 0x81, 0x03, 0x93, 0x80, 0xc0, 0x81, 0x04, 0xa5, 's', 't', 'r', 'i', 'c'})
	f.Fuzz(checkDecode)
}

// FuzzReader: a Reader never panics, ends on an error it documents, and
// returns messages that re-encode to frames no larger than the ones read.
func FuzzReader(f *testing.F) {
	stream, _ := allFrames(f)
	f.Add(stream, uint16(0))
	f.Add(stream, uint16(40))
	f.Add(stream[:len(stream)-3], uint16(0))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 3, 0x92, 0x2a, 0x80, 0, 0x40, 0, 0, 1}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, maxFrame uint16) {
		r := NewReader(bytes.NewReader(data), int(maxFrame))
		for {
			m, err := r.Read()
			switch {
			case err == nil:
				frame := AppendFrame(nil, m)
				if len(frame) > len(data) {
					t.Fatalf("a frame of %d bytes from %d bytes of stream", len(frame), len(data))
				}
				m2, err := NewReader(bytes.NewReader(frame), int(maxFrame)).Read()
				if err != nil || !reflect.DeepEqual(m, m2) {
					t.Fatalf("frame read back as %#v, %v", m2, err)
				}
			case errors.Is(err, ErrMalformed), errors.Is(err, ErrUnknownType):
				// The Reader is at the next frame.
			case err == io.EOF, err == io.ErrUnexpectedEOF, errors.Is(err, ErrFrameTooLarge):
				if _, err2 := r.Read(); err2 != err {
					t.Fatalf("after %v, Read gives %v", err, err2)
				}
				return
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
	})
}
