package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file holds the msgpack primitives the codec is built from: append-style
// writers of single values, and a bounds-checked cursor that reads them. See
// https://github.com/msgpack/msgpack/blob/master/spec.md for the formats.

// Format codes. They equal the variables of
// github.com/vmihailenco/msgpack/v5/msgpcode (a test checks it); they are
// constants here so that they can label switch cases.
const (
	mpPosFixintMax = 0x7f // 0x00-0x7f: positive fixint
	mpFixmap       = 0x80 // 0x80-0x8f: fixmap, count in the low 4 bits
	mpFixarray     = 0x90 // 0x90-0x9f: fixarray, count in the low 4 bits
	mpFixstr       = 0xa0 // 0xa0-0xbf: fixstr, length in the low 5 bits
	mpNil          = 0xc0
	mpNeverUsed    = 0xc1
	mpFalse        = 0xc2
	mpTrue         = 0xc3
	mpBin8         = 0xc4
	mpBin16        = 0xc5
	mpBin32        = 0xc6
	mpExt8         = 0xc7
	mpExt16        = 0xc8
	mpExt32        = 0xc9
	mpFloat32      = 0xca
	mpFloat64      = 0xcb
	mpUint8        = 0xcc
	mpUint16       = 0xcd
	mpUint32       = 0xce
	mpUint64       = 0xcf
	mpInt8         = 0xd0
	mpInt16        = 0xd1
	mpInt32        = 0xd2
	mpInt64        = 0xd3
	mpFixext1      = 0xd4
	mpFixext2      = 0xd5
	mpFixext4      = 0xd6
	mpFixext8      = 0xd7
	mpFixext16     = 0xd8
	mpStr8         = 0xd9
	mpStr16        = 0xda
	mpStr32        = 0xdb
	mpArray16      = 0xdc
	mpArray32      = 0xdd
	mpMap16        = 0xde
	mpMap32        = 0xdf
	mpNegFixintMin = 0xe0 // 0xe0-0xff: negative fixint, -32..-1
)

// maxDepth bounds the nesting of arrays and maps in a body, the body's own
// array counting as depth 1.
const maxDepth = 32

// ---- Encoding ----

// appendUint appends v in the smallest unsigned form: positive fixint,
// uint8, uint16, uint32 or uint64.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= mpPosFixintMax:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, mpUint8, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpUint16), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
	}
}

// appendInt appends v: a non-negative v exactly as appendUint does, a negative
// one in the smallest signed form: negative fixint, int8, int16, int32 or
// int64.
func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, mpInt8, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, mpInt16), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, mpInt32), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, mpInt64), uint64(v))
	}
}

// appendStr appends s as a str in its smallest form.
func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n <= 31:
		b = append(b, mpFixstr|byte(n))
	case n <= math.MaxUint8:
		b = append(b, mpStr8, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, mpStr16), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
	}
	return append(b, s...)
}

// appendArrayHeader appends the header of an array of n elements.
func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, mpFixarray|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpArray16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, mpArray32), uint32(n))
	}
}

// The field writers below append one map entry (key, value) unless the value
// is the zero value, and count it in the fixmap header at b[h]. No message
// has more than 15 fields, so a map header is always one byte. Keys are
// positive fixints.

func strField(b []byte, h int, key byte, s string) []byte {
	if s == "" {
		return b
	}
	b[h]++
	return appendStr(append(b, key), s)
}

func uintField(b []byte, h int, key byte, v uint64) []byte {
	if v == 0 {
		return b
	}
	b[h]++
	return appendUint(append(b, key), v)
}

func intField(b []byte, h int, key byte, v int64) []byte {
	if v == 0 {
		return b
	}
	b[h]++
	return appendInt(append(b, key), v)
}

func boolField(b []byte, h int, key byte, v bool) []byte {
	if !v {
		return b
	}
	b[h]++
	return append(b, key, mpTrue)
}

// arrayField starts a non-empty array field: the key and the array header.
// The caller appends the n elements.
func arrayField(b []byte, h int, key byte, n int) []byte {
	b[h]++
	return appendArrayHeader(append(b, key), n)
}

// ---- Decoding ----

// decodeError is a decoding failure. path locates it in the message (for
// example "Entries[3].Class"); it is built from the inside out as the error
// returns through the nested decoders.
type decodeError struct {
	path   string
	detail string
}

func (e *decodeError) Error() string {
	if e.path == "" {
		return e.detail
	}
	return e.path + ": " + e.detail
}

// at prefixes the path of err (a *decodeError) with a field name.
func at(err error, field string) error {
	if e, ok := err.(*decodeError); ok {
		switch {
		case e.path == "":
			e.path = field
		case e.path[0] == '[':
			e.path = field + e.path
		default:
			e.path = field + "." + e.path
		}
	}
	return err
}

// atIndex prefixes the path of err with an array index.
func atIndex(err error, i int) error {
	return at(err, fmt.Sprintf("[%d]", i))
}

// atKey prefixes the path of err with the name of map key k, names[k], or
// "key k" for a key without a name (k = 0 stands for any key that is not a
// positive integer).
func atKey(err error, names []string, k uint64) error {
	switch {
	case k == 0:
		return at(err, "unknown key")
	case k < uint64(len(names)):
		return at(err, names[k])
	}
	return at(err, fmt.Sprintf("key %d", k))
}

func errorf(format string, args ...any) error {
	return &decodeError{detail: fmt.Sprintf(format, args...)}
}

func truncated() error { return &decodeError{detail: "unexpected end of body"} }

// describe names the msgpack format of code c, for error messages.
func describe(c byte) string {
	switch {
	case c <= mpPosFixintMax:
		return "positive fixint"
	case c < mpFixarray:
		return "map"
	case c < mpFixstr:
		return "array"
	case c <= 0xbf:
		return "str"
	case c >= mpNegFixintMin:
		return "negative fixint"
	}
	switch c {
	case mpNil:
		return "nil"
	case mpNeverUsed:
		return "invalid code 0xc1"
	case mpFalse, mpTrue:
		return "bool"
	case mpBin8, mpBin16, mpBin32:
		return "bin"
	case mpExt8, mpExt16, mpExt32, mpFixext1, mpFixext2, mpFixext4, mpFixext8, mpFixext16:
		return "ext"
	case mpFloat32, mpFloat64:
		return "float"
	case mpUint8, mpUint16, mpUint32, mpUint64:
		return "uint"
	case mpInt8, mpInt16, mpInt32, mpInt64:
		return "int"
	case mpStr8, mpStr16, mpStr32:
		return "str"
	case mpArray16, mpArray32:
		return "array"
	default: // mpMap16, mpMap32
		return "map"
	}
}

func wrongType(want string, c byte) error {
	return errorf("want %s, got %s", want, describe(c))
}

// decoder is a cursor over a body. Every read checks the bytes left first;
// nothing is allocated for a declared count or length before it has been
// checked against them. Decoded strings never alias the body.
type decoder struct {
	b []byte // the bytes not read yet

	// tenant is the last tenant id decoded. Entries of one tenant are
	// usually adjacent, so the next id is often the same string and can be
	// shared instead of allocated again.
	tenant string

	// A Decoder's: reuse lets the Entries of a DeltaBatch take the memory
	// of entries, and intern (if set) finds a tenant id the caller holds.
	reuse      bool
	entries    []DeltaEntry
	intern     func([]byte) (string, any)
	known      any   // intern's handle on tenant
	entryKnown any   // the handle of the entry being decoded's tenant
	knownOf    []any // the handles of the entries decoded

}

// be reads a big-endian unsigned integer of n (1, 2, 4 or 8) bytes that
// follow a one-byte format code.
func (d *decoder) be(n int) (uint64, error) {
	if len(d.b) < 1+n {
		return 0, truncated()
	}
	var v uint64
	switch n {
	case 1:
		v = uint64(d.b[1])
	case 2:
		v = uint64(binary.BigEndian.Uint16(d.b[1:]))
	case 4:
		v = uint64(binary.BigEndian.Uint32(d.b[1:]))
	default:
		v = binary.BigEndian.Uint64(d.b[1:])
	}
	d.b = d.b[1+n:]
	return v, nil
}

// signed reads the int8-int64 value whose format code is c.
func (d *decoder) signed(c byte) (int64, error) {
	switch c {
	case mpInt8:
		v, err := d.be(1)
		return int64(int8(v)), err
	case mpInt16:
		v, err := d.be(2)
		return int64(int16(v)), err
	case mpInt32:
		v, err := d.be(4)
		return int64(int32(v)), err
	default:
		v, err := d.be(8)
		return int64(v), err
	}
}

// uint reads an unsigned integer no greater than max (which is at least
// 127), in any integer form. A signed form must hold a non-negative value.
// Nil reads as 0.
func (d *decoder) uint(max uint64) (uint64, error) {
	if len(d.b) != 0 && d.b[0] <= mpPosFixintMax { // the usual case first
		c := d.b[0]
		d.b = d.b[1:]
		return uint64(c), nil
	}
	return d.uintSlow(max)
}

func (d *decoder) uintSlow(max uint64) (uint64, error) {
	if len(d.b) == 0 {
		return 0, truncated()
	}
	c := d.b[0]
	var v uint64
	var err error
	switch c {
	case mpUint8:
		v, err = d.be(1)
	case mpUint16:
		v, err = d.be(2)
	case mpUint32:
		v, err = d.be(4)
	case mpUint64:
		v, err = d.be(8)
	case mpInt8, mpInt16, mpInt32, mpInt64:
		var s int64
		s, err = d.signed(c)
		if err == nil && s < 0 {
			return 0, errorf("negative value %d for an unsigned field", s)
		}
		v = uint64(s)
	case mpNil:
		d.b = d.b[1:]
		return 0, nil
	default:
		if c >= mpNegFixintMin {
			return 0, errorf("negative value %d for an unsigned field", int8(c))
		}
		return 0, wrongType("uint", c)
	}
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, errorf("%d overflows the field (max %d)", v, max)
	}
	return v, nil
}

// int reads a signed 64-bit integer in any integer form. Nil reads as 0.
func (d *decoder) int() (int64, error) {
	if len(d.b) == 0 {
		return 0, truncated()
	}
	c := d.b[0]
	if c <= mpPosFixintMax || c >= mpNegFixintMin {
		d.b = d.b[1:]
		return int64(int8(c)), nil
	}
	switch c {
	case mpInt8, mpInt16, mpInt32, mpInt64:
		return d.signed(c)
	case mpUint8, mpUint16, mpUint32, mpUint64:
		v, err := d.uint(math.MaxInt64)
		return int64(v), err
	case mpNil:
		d.b = d.b[1:]
		return 0, nil
	}
	return 0, wrongType("int", c)
}

// bool reads a bool. Nil reads as false.
func (d *decoder) bool() (bool, error) {
	if len(d.b) == 0 {
		return false, truncated()
	}
	switch d.b[0] {
	case mpTrue:
		d.b = d.b[1:]
		return true, nil
	case mpFalse, mpNil:
		d.b = d.b[1:]
		return false, nil
	}
	return false, wrongType("bool", d.b[0])
}

// strBytes reads a str and returns its bytes, which alias the body. Nil
// reads as an empty string.
func (d *decoder) strBytes() ([]byte, error) {
	if len(d.b) != 0 { // a fixstr, the usual case, first
		if c := d.b[0]; c&0xe0 == mpFixstr {
			if n := int(c & 0x1f); n < len(d.b) {
				s := d.b[1 : 1+n]
				d.b = d.b[1+n:]
				return s, nil
			}
		}
	}
	return d.strBytesSlow()
}

func (d *decoder) strBytesSlow() ([]byte, error) {
	if len(d.b) == 0 {
		return nil, truncated()
	}
	c := d.b[0]
	var n uint64
	var h int // header length
	switch {
	case c >= mpFixstr && c <= 0xbf:
		n, h = uint64(c&0x1f), 1
	case c == mpStr8:
		if len(d.b) < 2 {
			return nil, truncated()
		}
		n, h = uint64(d.b[1]), 2
	case c == mpStr16:
		if len(d.b) < 3 {
			return nil, truncated()
		}
		n, h = uint64(binary.BigEndian.Uint16(d.b[1:])), 3
	case c == mpStr32:
		if len(d.b) < 5 {
			return nil, truncated()
		}
		n, h = uint64(binary.BigEndian.Uint32(d.b[1:])), 5
	case c == mpNil:
		d.b = d.b[1:]
		return nil, nil
	default:
		return nil, wrongType("str", c)
	}
	if n > uint64(len(d.b)-h) {
		return nil, errorf("str of %d bytes with %d bytes left", n, len(d.b)-h)
	}
	s := d.b[h : h+int(n)]
	d.b = d.b[h+int(n):]
	return s, nil
}

// str reads a str.
func (d *decoder) str() (string, error) {
	b, err := d.strBytes()
	if err != nil || len(b) == 0 {
		return "", err
	}
	return string(b), nil
}

// tenantID reads a str that is a tenant id, sharing the string of the last
// tenant id read when it is equal.
func (d *decoder) tenantID() (string, error) {
	b, err := d.strBytes()
	if err != nil || len(b) == 0 {
		d.known = nil
		return "", err
	}
	return d.internTenant(b), nil
}

// internTenant returns b, a tenant id, as a string, sharing the last one
// returned when it is equal, or the one intern knows (its handle in known).
func (d *decoder) internTenant(b []byte) string {
	if string(b) == d.tenant { // compiled without a conversion
		return d.tenant
	}
	d.known = nil
	if d.intern != nil {
		if s, h := d.intern(b); h != nil {
			d.tenant, d.known = s, h
			return s
		}
	}
	d.tenant = string(b)
	return d.tenant
}

// class reads a str that is a session class name.
func (d *decoder) class() (string, error) {
	b, err := d.strBytes()
	if err != nil || len(b) == 0 {
		return "", err
	}
	return internClass(b), nil
}

// internClass returns b, a session class name, as a string. The known names
// come back as constants, without allocating.
func internClass(b []byte) string {
	switch string(b) { // compiled without a conversion
	case "audio":
		return "audio"
	case "video-hd":
		return "video-hd"
	case "video-fhd":
		return "video-fhd"
	case "video-2k":
		return "video-2k"
	case "video-2k+":
		return "video-2k+"
	case "ai":
		return "ai"
	}
	return string(b)
}

// header reads an array or map header (whose formats are given by fix, c16
// and c32) and returns the declared count. Nil reads as a count of 0.
func (d *decoder) header(fix, c16, c32 byte, want string) (uint64, error) {
	if len(d.b) == 0 {
		return 0, truncated()
	}
	c := d.b[0]
	switch {
	case c&0xf0 == fix:
		d.b = d.b[1:]
		return uint64(c & 0x0f), nil
	case c == c16:
		return d.be(2)
	case c == c32:
		return d.be(4)
	case c == mpNil:
		d.b = d.b[1:]
		return 0, nil
	}
	return 0, wrongType(want, c)
}

// arrayLen reads an array header. Every element takes at least one byte, so
// a count above the bytes left is refused before the caller allocates.
func (d *decoder) arrayLen() (int, error) {
	n, err := d.header(mpFixarray, mpArray16, mpArray32, "array")
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.b)) {
		return 0, errorf("array of %d elements with %d bytes left", n, len(d.b))
	}
	return int(n), nil
}

// mapLen reads a map header. Every entry takes at least two bytes (a key and
// a value), so a count above half the bytes left is refused.
func (d *decoder) mapLen() (int, error) {
	n, err := d.header(mpFixmap, mpMap16, mpMap32, "map")
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.b))/2 {
		return 0, errorf("map of %d entries with %d bytes left", n, len(d.b))
	}
	return int(n), nil
}

// key reads the key of a map entry. A key that is not a non-negative
// integer is skipped and reported as 0, which no field uses, so that the
// caller skips its value too. seen records the keys below 64 already read in
// this map: a repeated key is an error, since what a peer meant by it would
// be ambiguous.
func (d *decoder) key(seen *uint64, depth int) (uint64, error) {
	if len(d.b) != 0 { // a new key from 1 to 63, the usual case, first
		if k := d.b[0]; k-1 < 63 && *seen&(1<<k) == 0 {
			*seen |= 1 << k
			d.b = d.b[1:]
			return uint64(k), nil
		}
	}
	return d.keySlow(seen, depth)
}

func (d *decoder) keySlow(seen *uint64, depth int) (uint64, error) {
	var k uint64
	if len(d.b) > 0 && d.b[0] <= mpPosFixintMax { // the usual case
		k = uint64(d.b[0])
		d.b = d.b[1:]
	} else {
		save := d.b
		var err error
		if k, err = d.uint(math.MaxUint64); err != nil {
			// Not a non-negative integer: a key of a kind no version
			// of this package uses.
			d.b = save
			return 0, d.skip(depth)
		}
	}
	if k != 0 && k < 64 {
		if *seen&(1<<k) != 0 {
			return k, errorf("repeated key")
		}
		*seen |= 1 << k
	}
	return k, nil
}

// skip skips one value of any type, nested up to maxDepth. depth is the
// nesting depth of the value itself.
func (d *decoder) skip(depth int) error {
	if depth > maxDepth {
		return errorf("nested deeper than %d", maxDepth)
	}
	if len(d.b) == 0 {
		return truncated()
	}
	c := d.b[0]
	var n uint64 // bytes of data after a header of h bytes
	var h int
	switch {
	case c <= mpPosFixintMax || c >= mpNegFixintMin:
		h = 1
	case c < mpFixarray || c == mpMap16 || c == mpMap32:
		count, err := d.mapLen()
		if err != nil {
			return err
		}
		for i := 0; i < 2*count; i++ {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case c < mpFixstr || c == mpArray16 || c == mpArray32:
		count, err := d.arrayLen()
		if err != nil {
			return err
		}
		for i := 0; i < count; i++ {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case c <= 0xbf:
		n, h = uint64(c&0x1f), 1
	default:
		switch c {
		case mpNil, mpFalse, mpTrue:
			h = 1
		case mpNeverUsed:
			return errorf("invalid code 0xc1")
		case mpUint8, mpInt8:
			h = 2
		case mpUint16, mpInt16:
			h = 3
		case mpUint32, mpInt32, mpFloat32:
			h = 5
		case mpUint64, mpInt64, mpFloat64:
			h = 9
		case mpFixext1, mpFixext2, mpFixext4, mpFixext8, mpFixext16:
			n, h = 1<<(c-mpFixext1), 2 // type byte in the header
		case mpStr8, mpBin8, mpExt8:
			if len(d.b) < 2 {
				return truncated()
			}
			n, h = uint64(d.b[1]), 2
		case mpStr16, mpBin16, mpExt16:
			if len(d.b) < 3 {
				return truncated()
			}
			n, h = uint64(binary.BigEndian.Uint16(d.b[1:])), 3
		default: // mpStr32, mpBin32, mpExt32
			if len(d.b) < 5 {
				return truncated()
			}
			n, h = uint64(binary.BigEndian.Uint32(d.b[1:])), 5
		}
		if c == mpExt8 || c == mpExt16 || c == mpExt32 {
			h++ // the type byte
		}
	}
	if uint64(h) > uint64(len(d.b)) || n > uint64(len(d.b)-h) {
		return truncated()
	}
	d.b = d.b[h+int(n):]
	return nil
}
