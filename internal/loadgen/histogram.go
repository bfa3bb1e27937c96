package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations in log-linear buckets: 64 sub-buckets per
// power of two, so a percentile read from it is within 1/64 (1.6 %) of the
// recorded value, whatever the scale (1 ns to hours). It is not safe for
// concurrent use; give each goroutine its own and Merge them.
type Histogram struct {
	counts [64 * subBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	subBits    = 6
	subBuckets = 1 << subBits
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{} }

func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	exp := bits.Len64(v) - subBits // ≥ 1
	return exp*subBuckets + int(v>>(uint(exp)-1)) - subBuckets
}

// lowOf is the smallest value in bucket i.
func lowOf(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	exp := i / subBuckets
	sub := uint64(i%subBuckets) + subBuckets
	return sub << (uint(exp) - 1)
}

// Record adds one duration (negative counts as 0).
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

// Merge adds o's records to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count is the number of records.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest record.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of the records: the lower
// bound of the bucket holding the ⌈q·n⌉-th smallest (1.6 % below it at
// most), or the maximum for q = 1. 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(lowOf(i)), h.max)
		}
	}
	return h.max
}
