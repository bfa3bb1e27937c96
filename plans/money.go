package plans

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// mulDivHalfUp returns a×b/d rounded half up (…0.5 goes up), computed
// exactly in 128 bits, and false when d is 0 or the result does not fit a
// Micro.
func mulDivHalfUp(a, b, d uint64) (uint64, bool) {
	if d == 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(a, b)
	if hi >= d {
		return 0, false
	}
	q, r := bits.Div64(hi, lo, d)
	if r >= d-r { // 2r ≥ d without overflow
		q++
	}
	return q, q <= math.MaxInt64
}

// mulDivFloor returns ⌊a×b/d⌋ exactly, and false when d is 0 or the result
// does not fit in 64 bits.
func mulDivFloor(a, b, d uint64) (uint64, bool) {
	if d == 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(a, b)
	if hi >= d {
		return 0, false
	}
	q, _ := bits.Div64(hi, lo, d)
	return q, true
}

// mul64 is a×b and whether it did not overflow.
func mul64(a, b uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	return lo, hi == 0
}

// add64 is a+b and whether it did not overflow.
func add64(a, b uint64) (uint64, bool) {
	s, c := bits.Add64(a, b, 0)
	return s, c == 0
}

// FormatMicro formats an amount as currency units with thousands
// separators and two decimals, rounding half away from zero to the cent:
// 1_300_000_000 is "1,300.00", -5_000 is "-0.01".
func FormatMicro(m Micro) string { return string(appendMicro(nil, m)) }

// appendMicro appends FormatMicro(m) to b.
func appendMicro(b []byte, m Micro) []byte {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = -u // two's complement: also right for math.MinInt64
	}
	cents := u / 10_000
	if u%10_000 >= 5_000 {
		cents++
	}
	if neg && cents != 0 {
		b = append(b, '-')
	}
	b = appendThousands(b, cents/100)
	return append(b, '.', byte('0'+cents%100/10), byte('0'+cents%10))
}

// groupThousands formats n with a comma every three digits: 1,234,567.
func groupThousands(n uint64) string { return string(appendThousands(nil, n)) }

// appendThousands appends groupThousands(n) to b.
func appendThousands(b []byte, n uint64) []byte {
	var buf [32]byte
	i := len(buf)
	for k := 0; ; k++ {
		if k > 0 && k%3 == 0 {
			i--
			buf[i] = ','
		}
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, buf[i:]...)
}

// ParseMicro reads a decimal amount such as "1499", "0.89" or "1,499.00"
// (at most 6 decimals, not negative) into micro-units, exactly.
func ParseMicro(s string) (Micro, error) {
	in := s
	s = strings.ReplaceAll(s, ",", "")
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || len(frac) > 6 {
		return 0, fmt.Errorf("amount %q: want a number with at most 6 decimals", in)
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("amount %q: want a number with at most 6 decimals", in)
			}
		}
	}
	var w uint64
	if whole != "" {
		var err error
		if w, err = strconv.ParseUint(whole, 10, 64); err != nil || w > math.MaxInt64/1_000_000 {
			return 0, fmt.Errorf("amount %q: too large", in)
		}
	}
	f := uint64(0)
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return Micro(w*1_000_000 + f), nil
}
