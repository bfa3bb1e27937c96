package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// A frame is a 4-byte big-endian body length followed by the body. The
// length counts the body only and is never 0.

// ErrFrameTooLarge is wrapped by the error returned for a frame whose body is
// over the limit: by Reader.Read for a frame it receives (before allocating
// anything for it), by WriteFrame for a message it would send.
var ErrFrameTooLarge = errors.New("wire: frame too large")

// headerLen is the length of a frame's header.
const headerLen = 4

// WriteFrame writes m to w as one frame, with a single Write call, so that
// goroutines writing frames to one net.Conn (whose Write calls do not
// interleave) need no lock of their own.
//
// A message whose body is over DefaultMaxFrame is refused with an error
// wrapping ErrFrameTooLarge, since a peer with the default limit would
// refuse it: split large messages with SplitFullState and SplitTenantState,
// or use AppendFrame for a peer known to accept larger frames. m must be a
// non-nil pointer to one of this package's message types.
func WriteFrame(w io.Writer, m Message) error {
	bp := framePool.Get().(*[]byte)
	b, ok := appendBody(append((*bp)[:0], 0, 0, 0, 0), m)
	var err error
	switch n := len(b) - headerLen; {
	case !ok:
		err = fmt.Errorf("wire: WriteFrame of unsupported message type %T", m)
	case n > DefaultMaxFrame:
		err = fmt.Errorf("%w: %s body of %d bytes, limit %d", ErrFrameTooLarge, m.Type(), n, DefaultMaxFrame)
	default:
		binary.BigEndian.PutUint32(b, uint32(n))
		_, err = w.Write(b)
	}
	if cap(b) <= maxPooledBuffer {
		*bp = b[:0]
		framePool.Put(bp)
	}
	return err
}

// framePool holds WriteFrame's buffers.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// maxPooledBuffer is the largest buffer WriteFrame keeps for reuse, so that
// one large message does not keep its buffer alive.
const maxPooledBuffer = 64 << 10

// AppendFrame appends m as a frame (header and body) to dst and returns the
// extended slice. Unlike WriteFrame it enforces no limit on the body. m must
// be a non-nil pointer to one of this package's message types; anything else
// panics.
func AppendFrame(dst []byte, m Message) []byte {
	start := len(dst)
	dst = Append(append(dst, 0, 0, 0, 0), m)
	n := len(dst) - start - headerLen
	if uint64(n) > math.MaxUint32 {
		panic(fmt.Sprintf("wire: AppendFrame: %s body of %d bytes does not fit a frame", m.Type(), n))
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return dst
}

// Reader reads frames from a stream and decodes them. It is not safe for
// concurrent use.
//
// Each frame takes at least two Read calls on the underlying reader (header,
// then body); wrap a network connection in a bufio.Reader to save system
// calls on small frames.
type Reader struct {
	r   io.Reader
	max int
	hdr [headerLen]byte

	// buf is reused from frame to frame. It grows as a frame's bytes
	// arrive, never beyond the frame, and is let go after a run of frames
	// that used a small part of it, so that one large frame does not pin
	// its memory for the life of the stream.
	buf   []byte
	small int // consecutive frames of at most a quarter of cap(buf)

	err error // a stream error, returned by every later Read
}

const (
	// growStep is the first allocation for a frame larger than the
	// buffer; the buffer then doubles as bytes arrive.
	growStep = 64 << 10
	// shrinkAfter is the number of consecutive frames using at most a
	// quarter of a buffer larger than growStep after which it is let go.
	shrinkAfter = 16
)

// NewReader returns a Reader of r that refuses frames with a body over
// maxFrame bytes; maxFrame ≤ 0 means DefaultMaxFrame.
func NewReader(r io.Reader, maxFrame int) *Reader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	return &Reader{r: r, max: maxFrame}
}

// Read reads the next frame and decodes its body.
//
// At a clean end of the stream, between frames, it returns io.EOF; in the
// middle of a frame, io.ErrUnexpectedEOF. A frame over the limit gives an
// error wrapping ErrFrameTooLarge, returned before the body is read or any
// memory allocated for it. A zero-length frame or a body Decode refuses gives
// an error wrapping ErrMalformed (or ErrUnknownType) and leaves the Reader at
// the next frame, so the caller may go on (or, as the protocol asks, close
// the stream). After any other error the stream is out of step: every later
// Read returns the same error.
func (r *Reader) Read() (Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	body, err := r.readFrame()
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			r.err = err
		}
		return nil, err
	}
	return Decode(body) // the decoded message does not alias body
}

// readFrame reads one frame and returns its body, valid until the next call.
func (r *Reader) readFrame() ([]byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return nil, err // io.EOF before the first byte, else io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n == 0 {
		return nil, fmt.Errorf("%w: zero-length frame", ErrMalformed)
	}
	if uint64(n) > uint64(r.max) {
		return nil, fmt.Errorf("%w: body of %d bytes, limit %d", ErrFrameTooLarge, n, r.max)
	}
	body, err := r.readBody(int(n))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return body, err
}

func (r *Reader) readBody(n int) ([]byte, error) {
	if n <= cap(r.buf) {
		if n <= cap(r.buf)/4 && cap(r.buf) > growStep {
			if r.small++; r.small >= shrinkAfter {
				r.buf, r.small = nil, 0
				return r.readBody(n)
			}
		} else {
			r.small = 0
		}
		b := r.buf[:n]
		_, err := io.ReadFull(r.r, b)
		return b, err
	}
	// The frame is larger than the buffer. Allocate for the bytes received
	// rather than the bytes announced, so that memory follows what a peer
	// sends, not what it claims it will send.
	r.small = 0
	b := r.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, max(2*cap(b), growStep)))
			copy(nb, b)
			b = nb
			r.buf = b
		}
		k, err := io.ReadFull(r.r, b[len(b):cap(b)])
		b = b[:len(b)+k]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}
