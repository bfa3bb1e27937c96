package wire

import (
	"fmt"
	"io"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// benchBatch is a DeltaBatch of 1,000 entries, one per tenant
// ("tenant-0000" to "tenant-0999", so tenant ids are never shared), classes
// "video-hd" and one in four "audio", small counts and about 1e8 µs of
// session time each.
func benchBatch() *DeltaBatch {
	b := &DeltaBatch{AgentID: "agent-eu-west-1a-07", Epoch: 1767225600, Seq: 123456, AgentTime: 1767225612345}
	for i := range 1000 {
		class := "video-hd"
		if i%4 == 0 {
			class = "audio"
		}
		b.Entries = append(b.Entries, DeltaEntry{
			Tenant:        fmt.Sprintf("tenant-%04d", i),
			Class:         class,
			Opened:        uint64(i % 5),
			Closed:        uint64(i % 3),
			SessionMicros: 1e8 + uint64(i)*7919,
			Peak:          uint64(3 + i%40),
			Refused:       uint64(i % 50 / 49),
		})
	}
	return b
}

func BenchmarkDeltaBatchEncodeDecode(b *testing.B) {
	batch := benchBatch()
	buf := Append(nil, batch)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], batch)
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "body-bytes")
}

func BenchmarkDeltaBatchEncode(b *testing.B) {
	batch := benchBatch()
	buf := Append(nil, batch)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], batch)
	}
}

func BenchmarkDeltaBatchDecode(b *testing.B) {
	body := Append(nil, benchBatch())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeltaBatchMsgpackReflect is the baseline: the msgpack library's
// reflection path, Marshal then Unmarshal of the same batch (with its own
// encoding, field names as keys). Bytes per second count our body's size,
// so that the figures compare.
func BenchmarkDeltaBatchMsgpackReflect(b *testing.B) {
	batch := benchBatch()
	lib, err := msgpack.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(Append(nil, batch))))
	b.ReportAllocs()
	for b.Loop() {
		data, err := msgpack.Marshal(batch)
		if err != nil {
			b.Fatal(err)
		}
		var out DeltaBatch
		if err := msgpack.Unmarshal(data, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(lib)), "body-bytes")
}

// BenchmarkFrameRoundTrip writes the batch with WriteFrame and reads it back
// with a Reader, as a stream does.
func BenchmarkFrameRoundTrip(b *testing.B) {
	batch := benchBatch()
	b.SetBytes(int64(len(Append(nil, batch))))
	b.ReportAllocs()
	var pipe loopback
	r := NewReader(&pipe, 0)
	for b.Loop() {
		if err := WriteFrame(&pipe, batch); err != nil {
			b.Fatal(err)
		}
		if _, err := r.Read(); err != nil {
			b.Fatal(err)
		}
	}
}

// loopback is a byte queue reusing its memory: what is written is read back.
type loopback struct {
	buf []byte
	off int
}

func (l *loopback) Write(p []byte) (int, error) {
	if l.off == len(l.buf) {
		l.buf, l.off = l.buf[:0], 0
	}
	l.buf = append(l.buf, p...)
	return len(p), nil
}

func (l *loopback) Read(p []byte) (int, error) {
	if l.off == len(l.buf) {
		return 0, io.EOF
	}
	n := copy(p, l.buf[l.off:])
	l.off += n
	return n, nil
}
