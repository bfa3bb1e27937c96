package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// countingWriter records the Write calls it gets.
type countingWriter struct {
	calls int
	buf   bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	return w.buf.Write(p)
}

func TestWriteFrame(t *testing.T) {
	for _, g := range goldenExamples() {
		var w countingWriter
		if err := WriteFrame(&w, g.msg); err != nil {
			t.Fatal(err)
		}
		if w.calls != 1 {
			t.Errorf("%s: %d Write calls", g.file, w.calls)
		}
		if want := readGolden(t, g.file); !bytes.Equal(w.buf.Bytes(), want) {
			t.Errorf("%s: WriteFrame wrote %x", g.file, w.buf.Bytes())
		}
		if got := AppendFrame([]byte("prefix"), g.msg); !bytes.Equal(got, append([]byte("prefix"), w.buf.Bytes()...)) {
			t.Errorf("%s: AppendFrame after a prefix gives %x", g.file, got)
		}
	}
}

func TestWriteFrameErrors(t *testing.T) {
	var w countingWriter
	if err := WriteFrame(&w, alien{}); err == nil || w.calls != 0 {
		t.Errorf("WriteFrame of a foreign Message: %v, %d writes", err, w.calls)
	}
	big := &Redirect{Leader: strings.Repeat("x", DefaultMaxFrame)}
	if err := WriteFrame(&w, big); !errors.Is(err, ErrFrameTooLarge) || w.calls != 0 {
		t.Errorf("WriteFrame over the limit: %v, %d writes", err, w.calls)
	}
	fits := &Redirect{Leader: strings.Repeat("x", DefaultMaxFrame-9)} // 92 07 81 01 db xxxxxxxx
	if err := WriteFrame(&w, fits); err != nil || w.buf.Len() != headerLen+DefaultMaxFrame {
		t.Errorf("WriteFrame at the limit: %v, %d bytes", err, w.buf.Len())
	}
	wantErr := errors.New("broken pipe")
	if err := WriteFrame(errWriter{wantErr}, &Ping{}); !errors.Is(err, wantErr) {
		t.Errorf("WriteFrame to a broken writer: %v", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// allFrames returns the golden frames one after the other, and their
// messages.
func allFrames(t testing.TB) ([]byte, []Message) {
	var stream []byte
	var msgs []Message
	for _, g := range goldenExamples() {
		stream = append(stream, readGolden(t, g.file)...)
		msgs = append(msgs, g.msg)
	}
	return stream, msgs
}

func TestReader(t *testing.T) {
	stream, msgs := allFrames(t)
	for name, r := range map[string]io.Reader{
		"whole":       bytes.NewReader(stream),
		"byte a time": iotest.OneByteReader(bytes.NewReader(stream)),
		"data+EOF":    iotest.DataErrReader(bytes.NewReader(stream)),
	} {
		fr := NewReader(r, 0)
		for i, want := range msgs {
			got, err := fr.Read()
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: frame %d: %#v, %v", name, i, got, err)
			}
		}
		for range 2 {
			if m, err := fr.Read(); err != io.EOF || m != nil {
				t.Errorf("%s: at the end: %v, %v; want io.EOF", name, m, err)
			}
		}
	}
}

func TestReaderTruncated(t *testing.T) {
	stream, _ := allFrames(t)
	first := len(readGolden(t, goldenExamples()[0].file))
	for i := 1; i < len(stream); i++ {
		fr := NewReader(bytes.NewReader(stream[:i]), 0)
		var err error
		for err == nil {
			_, err = fr.Read()
		}
		// Frame boundaries are clean ends; anything else is not.
		var atBoundary bool
		for b := 0; b <= i; {
			if b == i {
				atBoundary = true
			}
			if b >= len(stream) {
				break
			}
			b += headerLen + int(binary.BigEndian.Uint32(stream[b:]))
		}
		want := io.ErrUnexpectedEOF
		if atBoundary {
			want = io.EOF
		}
		if err != want {
			t.Errorf("stream cut at %d: %v, want %v", i, err, want)
		}
		if i < first {
			if _, err2 := fr.Read(); err2 != err {
				t.Errorf("stream cut at %d: the next Read gives %v, want %v again", i, err2, err)
			}
		}
	}
}

// readCounter counts the bytes read from it.
type readCounter struct {
	r io.Reader
	n int
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReaderFrameTooLarge(t *testing.T) {
	for _, c := range []struct {
		max, limit int
		length     uint32
	}{
		{0, DefaultMaxFrame, DefaultMaxFrame + 1},
		{0, DefaultMaxFrame, 0xffffffff},
		{100, 100, 101},
		{-1, DefaultMaxFrame, 1 << 30},
	} {
		src := &readCounter{r: io.MultiReader(
			bytes.NewReader(binary.BigEndian.AppendUint32(nil, c.length)),
			strings.NewReader(strings.Repeat("\x00", 1000)))}
		fr := NewReader(src, c.max)
		var err error
		n := allocated(func() { _, err = fr.Read() })
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("length %d, limit %d: %v", c.length, c.limit, err)
		}
		if src.n != headerLen {
			t.Errorf("length %d: read %d bytes, want the header only", c.length, src.n)
		}
		if n >= 64<<10 {
			t.Errorf("length %d: allocated %d bytes", c.length, n)
		}
		if _, err2 := fr.Read(); err2 != err {
			t.Errorf("length %d: the next Read gives %v, want the same error", c.length, err2)
		}
	}
	// At the limit, a frame is read.
	frame := AppendFrame(nil, &Ping{Nonce: 1})
	if m, err := NewReader(bytes.NewReader(frame), len(frame)-headerLen).Read(); err != nil || !reflect.DeepEqual(m, &Ping{Nonce: 1}) {
		t.Errorf("frame at the limit: %v, %v", m, err)
	}
}

// TestReaderAllocatesWhatArrives: a header announcing a large frame costs
// memory only for the bytes that really follow it.
func TestReaderAllocatesWhatArrives(t *testing.T) {
	stream := append(binary.BigEndian.AppendUint32(nil, DefaultMaxFrame), make([]byte, 100)...)
	fr := NewReader(bytes.NewReader(stream), 0)
	var err error
	n := allocated(func() { _, err = fr.Read() })
	if err != io.ErrUnexpectedEOF {
		t.Errorf("%v, want io.ErrUnexpectedEOF", err)
	}
	if n > 2*growStep {
		t.Errorf("allocated %d bytes for 100 bytes received", n)
	}
}

func TestReaderMalformedFrames(t *testing.T) {
	var stream []byte
	stream = append(stream, 0, 0, 0, 0)                      // zero length
	stream = append(stream, 0, 0, 0, 3, 0x92, 0x2a, 0x80)    // unknown type
	stream = append(stream, 0, 0, 0, 3, 0x92, 0x05, 0x90)    // bad payload
	stream = AppendFrame(stream, &Pong{Nonce: 7})            // fine
	stream = append(stream, 0, 0, 0, 4, 0x92, 0x05, 0x80, 0) // trailing byte
	stream = AppendFrame(stream, &Ack{Seq: 1})
	fr := NewReader(bytes.NewReader(stream), 0)
	for i, want := range []any{ErrMalformed, ErrUnknownType, ErrMalformed, &Pong{Nonce: 7}, ErrMalformed, &Ack{Seq: 1}, io.EOF} {
		m, err := fr.Read()
		if e, ok := want.(error); ok {
			if !errors.Is(err, e) {
				t.Errorf("frame %d: %v, %v; want %v", i, m, err, e)
			}
		} else if err != nil || !reflect.DeepEqual(m, want) {
			t.Errorf("frame %d: %v, %v; want %v", i, m, err, want)
		}
	}
}

func TestReaderBuffer(t *testing.T) {
	big := &Redirect{Leader: strings.Repeat("x", 3*growStep)}
	small := &Ping{Nonce: 1}
	var stream []byte
	stream = AppendFrame(stream, small)
	stream = AppendFrame(stream, big)
	bigBody := len(Append(nil, big))
	for range shrinkAfter {
		stream = AppendFrame(stream, small)
	}
	stream = AppendFrame(stream, &Redirect{Leader: "y"})
	fr := NewReader(bytes.NewReader(stream), 0)
	read := func() Message {
		t.Helper()
		m, err := fr.Read()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	read()
	if c := cap(fr.buf); c != len(Append(nil, small)) {
		t.Errorf("after a small frame: buffer of %d bytes", c)
	}
	if m := read(); !reflect.DeepEqual(m, big) {
		t.Fatal("big frame differs")
	}
	if c := cap(fr.buf); c != bigBody {
		t.Errorf("after a frame of %d bytes: buffer of %d bytes", bigBody, c)
	}
	// Small frames reuse the buffer without allocating, until a run of
	// them lets it go.
	if n := testing.AllocsPerRun(1, func() { read() }); n != 1 {
		t.Errorf("a small frame costs %v allocations, want 1 (the message)", n)
	}
	for range shrinkAfter - 3 { // AllocsPerRun read two
		read()
	}
	if c := cap(fr.buf); c != bigBody {
		t.Errorf("after %d small frames: buffer of %d bytes", shrinkAfter-1, c)
	}
	read()
	if c := cap(fr.buf); c >= growStep {
		t.Errorf("after %d small frames: buffer of %d bytes", shrinkAfter, c)
	}
	if m := read(); !reflect.DeepEqual(m, &Redirect{Leader: "y"}) {
		t.Errorf("last frame: %v", m)
	}
}
