package fsm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// smallMap maps a few strings (agent regions) to values: a slice searched
// in order, which for the handful of regions a tenant has beats a Go map on
// Apply's path (no hashing) and allocates nothing per entry. It is kept
// sorted by key, and encoded in snapshots as a msgpack map, the form of the
// map[string]V it replaced, so snapshots written before and after read the
// same.
type smallMap[V any] []kv[V]

type kv[V any] struct {
	Key string
	Val V
}

// find returns the index of key, or where it would be and false.
func (m smallMap[V]) find(key string) (int, bool) {
	for i := range m {
		if m[i].Key == key {
			return i, true
		}
		if m[i].Key > key {
			return i, false
		}
	}
	return len(m), false
}

// get returns key's value, or the zero value.
func (m smallMap[V]) get(key string) V {
	if i, ok := m.find(key); ok {
		return m[i].Val
	}
	var zero V
	return zero
}

// ptr returns a pointer to key's value, adding the zero value when absent;
// valid until the next change of m.
func (m *smallMap[V]) ptr(key string) *V {
	i, ok := m.find(key)
	if !ok {
		*m = slices.Insert(*m, i, kv[V]{Key: key})
	}
	return &(*m)[i].Val
}

// set sets key's value.
func (m *smallMap[V]) set(key string, v V) { *m.ptr(key) = v }

// del removes key; an emptied map becomes nil (as a snapshot restores it).
func (m *smallMap[V]) del(key string) {
	if i, ok := m.find(key); ok {
		*m = slices.Delete(*m, i, i+1)
		if len(*m) == 0 {
			*m = nil
		}
	}
}

// EncodeMsgpack implements msgpack.CustomEncoder: a map, keys in order.
func (m smallMap[V]) EncodeMsgpack(enc *msgpack.Encoder) error {
	if m == nil {
		return enc.EncodeNil()
	}
	if err := enc.EncodeMapLen(len(m)); err != nil {
		return err
	}
	for i := range m {
		if err := enc.EncodeString(m[i].Key); err != nil {
			return err
		}
		if err := enc.Encode(m[i].Val); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack implements msgpack.CustomDecoder: a map of any key order.
func (m *smallMap[V]) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	*m = nil
	if n <= 0 {
		return nil
	}
	out := make(smallMap[V], 0, min(n, 1024))
	for range n {
		k, err := dec.DecodeString()
		if err != nil {
			return err
		}
		var v V
		if err := dec.Decode(&v); err != nil {
			return err
		}
		out = append(out, kv[V]{Key: k, Val: v})
	}
	slices.SortFunc(out, func(a, b kv[V]) int { return strings.Compare(a.Key, b.Key) })
	for i := 1; i < len(out); i++ {
		if out[i].Key == out[i-1].Key {
			return fmt.Errorf("key %q twice", out[i].Key)
		}
	}
	*m = out
	return nil
}
