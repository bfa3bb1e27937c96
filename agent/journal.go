package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"
)

// The agent's state on disk (version 2) is a base and the journal that
// continues it, in generations:
//
//	agent.base.N     the sessions as of the start of generation N (and,
//	                 when written whole, the rest of the state)
//	agent.journal.N  what changed since, one record per persist
//	agent.state      a marker naming the format (version 2), so that a
//	                 build of version 1 refuses the directory rather than
//	                 starting afresh; in a directory of version 1 it is the
//	                 whole state, loaded as the base of generation 0
//	agent.clean      written at a clean shutdown: the last journal and its
//	                 size, checked at the next start
//
// Both files are sequences of frames: a 4-byte big-endian length, the
// CRC-32C (Castagnoli) of the payload, and the payload, the msgpack of a
// jRecord. A persist appends one record to the current journal with a
// single write and fsyncs it: the session changes since the previous
// record, and the rest of the state (identity, sequence numbers, usage not
// yet cut, tenants' states, active users), which is small; of the cut,
// unacknowledged batches only those new since the previous record (the
// first record of a journal has them all). Its cost follows what changed,
// not how many sessions are open.
//
// When the journal outgrows twice the base (and CompactMin), compaction
// starts generation N+1: the next records go to journal N+1, and a
// goroutine writes base N+1 from the table, a few thousand sessions per
// hold of the agent's mutex. Sessions change meanwhile, so the base holds
// each as it was at some instant after the generation began; journal N+1
// has every change since, in order, and replaying it over the base
// (opens set a session whole, closes remove it, keepalives set its times)
// gives the state of its last record. Base N+1 is written to a temporary
// file and renamed only once journal N+1 holds a record taken after the
// base was read whole; then the files of earlier generations go. Until
// then the state is base N and journals N and N+1.
//
// At start the highest base is read (none: empty; or agent.state of
// version 1), then the journals from its generation on, which must follow
// each other. A frame cut short at the end of the last journal is what a
// crash during a write leaves: it is dropped, with a warning (its persist
// never completed, so nothing it held was sent), unless agent.clean says
// the journal was closed cleanly, in which case the file was damaged. Any
// other bad frame is corruption, refused.

const (
	stateVersion  = 2 // of the format; version 1 was one state file
	legacyVersion = 1

	baseFilePrefix    = "agent.base."
	journalFilePrefix = "agent.journal."
	cleanFileName     = "agent.clean"

	frameHeader = 8
	// maxFrame bounds a frame's payload: a record of a whole table of
	// sessions stays far below.
	maxFrame = 1 << 30
	// baseChunk is how many sessions the compaction copies per hold of
	// the mutex, and writes per frame.
	baseChunk = 4096
	// defaultCompactMin is the least journal size that is compacted.
	defaultCompactMin = 16 << 20
)

// jRecord is a frame's payload.
type jRecord struct {
	// Head is the state but the sessions, whole; Head.Unacked are all the
	// unacknowledged batches when Full, else those cut since the previous
	// record, UnackedFrom the first seq still unacknowledged.
	Head        *stateFile `msgpack:"h,omitempty"`
	Full        bool       `msgpack:"f,omitempty"`
	UnackedFrom uint64     `msgpack:"uf,omitempty"`
	Changes     []stChange `msgpack:"c,omitempty"`
	// End closes a base: the number of session records it holds, plus 1.
	End uint64 `msgpack:"end,omitempty"`
	// Restored, in the first record after a restart, is the instant the
	// sessions then open are in doubt from (see restore), unless they were
	// in doubt already; the record's changes come after.
	Restored int64 `msgpack:"rs,omitempty"`
	// SameTenants, in a partial record, says the tenants' states are those
	// of the record before (Head.Tenants is then empty).
	SameTenants bool `msgpack:"stn,omitempty"`
}

// stChange is a session change on disk: [1, session] an open (or a
// session of a base), [2, id] a close, [3, id, last keepalive, anchor] a
// keepalive.
type stChange struct {
	Op uint8
	S  stSession
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (c stChange) EncodeMsgpack(enc *msgpack.Encoder) error {
	switch c.Op {
	case jOpen:
		if err := enc.EncodeArrayLen(2); err != nil {
			return err
		}
		if err := enc.EncodeUint8(jOpen); err != nil {
			return err
		}
		return c.S.EncodeMsgpack(enc)
	case jClose:
		if err := enc.EncodeArrayLen(2); err != nil {
			return err
		}
		if err := enc.EncodeUint8(jClose); err != nil {
			return err
		}
		return enc.EncodeString(c.S.ID)
	case jTouch:
		if err := enc.EncodeArrayLen(4); err != nil {
			return err
		}
		if err := enc.EncodeUint8(jTouch); err != nil {
			return err
		}
		if err := enc.EncodeString(c.S.ID); err != nil {
			return err
		}
		if err := enc.EncodeInt(c.S.LastKA); err != nil {
			return err
		}
		return enc.EncodeInt(c.S.Anchor)
	}
	return fmt.Errorf("session change of op %d", c.Op)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (c *stChange) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 2 {
		return fmt.Errorf("session change of %d elements", n)
	}
	if c.Op, err = dec.DecodeUint8(); err != nil {
		return err
	}
	*c = stChange{Op: c.Op}
	switch {
	case c.Op == jOpen:
		err = c.S.DecodeMsgpack(dec)
		n -= 2
	case c.Op == jClose:
		c.S.ID, err = dec.DecodeString()
		n -= 2
	case c.Op == jTouch && n >= 4:
		if c.S.ID, err = dec.DecodeString(); err == nil {
			if c.S.LastKA, err = dec.DecodeInt64(); err == nil {
				c.S.Anchor, err = dec.DecodeInt64()
			}
		}
		n -= 4
	default:
		return fmt.Errorf("session change of op %d and %d elements", c.Op, n)
	}
	for ; err == nil && n > 0; n-- {
		err = dec.Skip()
	}
	return err
}

// sessionSink takes the sessions being read back, in order: an open sets
// a session whole, a close removes it, a keepalive sets its times.
type sessionSink interface {
	open(ss *stSession) error
	close(id string)
	touch(id string, lastKA, anchor int64)
	// restored puts the sessions without a TTL not in doubt in doubt
	// from at (jRecord.Restored).
	restored(at int64)
}

// apply applies c to the sessions being read back.
func (c *stChange) apply(sink sessionSink) error {
	switch c.Op {
	case jOpen:
		return sink.open(&c.S)
	case jClose:
		sink.close(c.S.ID)
	case jTouch:
		sink.touch(c.S.ID, c.S.LastKA, c.S.Anchor)
	}
	return nil
}

// appendFrame appends a frame holding payload to b.
func appendFrame(b, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

// errTorn is a frame cut short at the end of a file.
var errTorn = errors.New("a frame cut short at the end")

// readFrames calls fn with each frame's payload in data. It returns the
// size of the frames read whole; a frame cut short at the end is errTorn,
// any other damage an error.
func readFrames(data []byte, fn func(payload []byte) error) (int, error) {
	off := 0
	for off < len(data) {
		rest := data[off:]
		if len(rest) < frameHeader {
			return off, errTorn
		}
		n := binary.BigEndian.Uint32(rest)
		if n > maxFrame {
			return off, fmt.Errorf("a frame of %d bytes at offset %d", n, off)
		}
		if len(rest) < frameHeader+int(n) {
			return off, errTorn
		}
		payload := rest[frameHeader : frameHeader+int(n)]
		if want, got := binary.BigEndian.Uint32(rest[4:]), crc32.Checksum(payload, castagnoli); want != got {
			return off, fmt.Errorf("checksum mismatch at offset %d (crc32c %08x, the frame says %08x)", off, got, want)
		}
		if err := fn(payload); err != nil {
			return off, fmt.Errorf("frame at offset %d: %w", off, err)
		}
		off += frameHeader + int(n)
	}
	return off, nil
}

// decodeRecord decodes a frame's payload; a decoder that panics on bytes no
// encoder wrote is an error too.
func decodeRecord(payload []byte, r *jRecord) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("undecodable: %v", p)
		}
	}()
	*r = jRecord{}
	return msgpack.Unmarshal(payload, r)
}

// cleanMark is agent.clean: the journal a clean shutdown left and its size.
type cleanMark struct {
	Gen  uint64 `msgpack:"gen"`
	Size int64  `msgpack:"size"`
}

// stateFiles are the state files found in a data directory.
type stateFiles struct {
	bases, journals []uint64 // generations, ascending
}

func (sf *stateFiles) has(list []uint64, gen uint64) bool {
	_, ok := slices.BinarySearch(list, gen)
	return ok
}

// listStateFiles lists the bases and journals of dir, and removes the
// temporary files an interrupted write left.
func listStateFiles(dir string) (stateFiles, error) {
	var sf stateFiles
	ents, err := os.ReadDir(dir)
	if err != nil {
		return sf, err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") && strings.HasPrefix(name, "agent.") {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		for _, k := range []struct {
			prefix string
			list   *[]uint64
		}{{baseFilePrefix, &sf.bases}, {journalFilePrefix, &sf.journals}} {
			if rest, ok := strings.CutPrefix(name, k.prefix); ok {
				if gen, err := strconv.ParseUint(rest, 10, 64); err == nil && gen > 0 {
					*k.list = append(*k.list, gen)
				}
			}
		}
	}
	slices.Sort(sf.bases)
	slices.Sort(sf.journals)
	return sf, nil
}

func basePath(dir string, gen uint64) string {
	return filepath.Join(dir, baseFilePrefix+strconv.FormatUint(gen, 10))
}

func journalPath(dir string, gen uint64) string {
	return filepath.Join(dir, journalFilePrefix+strconv.FormatUint(gen, 10))
}

// recovered is the state read back from a data directory.
type recovered struct {
	head     *stateFile
	sessions int    // opens read (0: none at all)
	gen      uint64 // the last journal's generation: where appends go
	size     int64  // its size up to its last whole frame
	baseGen  uint64
	baseSize int64
	torn     int64 // bytes of a frame cut short dropped from the last journal
	legacy   bool  // agent.state held the state of version 1
	sink     sessionSink
	clean    bool // agent.clean was found
	marker   bool // agent.state is the marker of version 2
	files    stateFiles
}

// corruptFile is a damaged state file.
type corruptFile struct {
	path string
	err  error
}

func (e *corruptFile) Error() string { return fmt.Sprintf("%s: %v", e.path, e.err) }

// recoverState reads the state of dir (see the top of this file), the
// sessions into sink. It returns a nil head for a directory without any.
func recoverState(dir string, sink sessionSink) (*recovered, error) {
	files, err := listStateFiles(dir)
	if err != nil {
		return nil, err
	}
	rc := &recovered{files: files, sink: sink}
	statePath := filepath.Join(dir, stateFileName)
	if data, err := os.ReadFile(statePath); err == nil {
		var st stateFile
		if err := decodeState(data, &st); err != nil {
			return nil, &corruptFile{statePath, err}
		}
		switch st.Version {
		case legacyVersion:
			if len(files.bases) == 0 { // else a base replaced it
				rc.legacy, rc.head = true, &st
				seen := make(map[string]struct{}, len(st.Sessions))
				for i := range st.Sessions {
					if _, twice := seen[st.Sessions[i].ID]; twice { // a file of version 1 lists each once
						return nil, &corruptFile{statePath, fmt.Errorf("session %q twice", st.Sessions[i].ID)}
					}
					seen[st.Sessions[i].ID] = struct{}{}
					if err := sink.open(&st.Sessions[i]); err != nil {
						return nil, &corruptFile{statePath, err}
					}
				}
				rc.sessions += len(st.Sessions)
				st.Sessions = nil
			}
		case stateVersion:
			rc.marker = true
		default:
			return nil, fmt.Errorf("%s: unsupported version %d (this build reads %d)", statePath, st.Version, stateVersion)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var mark *cleanMark
	if data, err := os.ReadFile(filepath.Join(dir, cleanFileName)); err == nil {
		rc.clean, mark = true, &cleanMark{}
		if body, err := checkStateSum(data); err != nil || len(body) == len(data) || msgpack.Unmarshal(body, mark) != nil {
			return nil, &corruptFile{filepath.Join(dir, cleanFileName), errors.New("undecodable")}
		}
	}
	first := uint64(1) // the first journal to replay
	if n := len(files.bases); n > 0 {
		rc.baseGen, first = files.bases[n-1], files.bases[n-1]
		path := basePath(dir, rc.baseGen)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		rc.baseSize = int64(len(data))
		var count, end uint64
		if _, err := readFrames(data, func(payload []byte) error {
			var r jRecord
			if err := decodeRecord(payload, &r); err != nil {
				return err
			}
			if end != 0 {
				return errors.New("a frame after the end")
			}
			if err := rc.replay(&r); err != nil {
				return err
			}
			count += uint64(len(r.Changes))
			end = r.End
			return nil
		}); err != nil {
			return nil, &corruptFile{path, err}
		}
		if end != count+1 {
			return nil, &corruptFile{path, fmt.Errorf("the base ends after %d sessions without its end frame", count)}
		}
	}
	journals := files.journals[:0:0]
	for _, g := range files.journals {
		if g >= first {
			journals = append(journals, g)
		}
	}
	rc.gen = first
	for i, g := range journals {
		if g != first+uint64(i) {
			return nil, &corruptFile{journalPath(dir, g), fmt.Errorf("journal %d follows journal %d", g, first+uint64(i)-1)}
		}
		path := journalPath(dir, g)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		last := i == len(journals)-1
		n, err := readFrames(data, func(payload []byte) error {
			var r jRecord
			if err := decodeRecord(payload, &r); err != nil {
				return err
			}
			return rc.replay(&r)
		})
		switch {
		case errors.Is(err, errTorn) && last && (mark == nil || mark.Gen != g):
			rc.torn = int64(len(data) - n)
		case errors.Is(err, errTorn) && last:
			return nil, &corruptFile{path, fmt.Errorf("%w, after a clean shutdown (%s): the file was damaged", err, cleanFileName)}
		case err != nil:
			return nil, &corruptFile{path, err}
		case last && mark != nil && mark.Gen == g && mark.Size != int64(n):
			return nil, &corruptFile{path, fmt.Errorf("%d bytes long, but it was %d at the last clean shutdown", n, mark.Size)}
		}
		rc.gen, rc.size = g, int64(n)
	}
	if mark != nil && (len(journals) == 0 || journals[len(journals)-1] != mark.Gen) {
		return nil, &corruptFile{journalPath(dir, mark.Gen), errors.New("the journal of the last clean shutdown is missing")}
	}
	if rc.head == nil && rc.sessions > 0 {
		return nil, &corruptFile{basePath(dir, rc.baseGen), errors.New("sessions without the journal that says whose")}
	}
	return rc, nil
}

// replay applies one record.
func (rc *recovered) replay(r *jRecord) error {
	if h := r.Head; h != nil {
		if h.Version != stateVersion {
			return fmt.Errorf("unsupported version %d (this build reads %d)", h.Version, stateVersion)
		}
		if !r.Full {
			if rc.head == nil || rc.head.Epoch != h.Epoch || rc.head.AgentID != h.AgentID {
				return errors.New("a partial record without the whole one before it")
			}
			// The unacknowledged batches are always the last ones cut, up
			// to NextSeq-1: drop those acknowledged, add those cut since.
			prev := rc.head.Unacked
			first := rc.head.NextSeq - uint64(len(prev))
			drop := min(uint64(len(prev)), max(r.UnackedFrom, first)-first)
			h.Unacked = append(slices.Clip(prev[drop:]), h.Unacked...)
			if r.SameTenants {
				h.Tenants = rc.head.Tenants
			}
		}
		rc.head = h
	}
	if r.Restored != 0 {
		rc.sink.restored(r.Restored)
	}
	for i := range r.Changes {
		if err := r.Changes[i].apply(rc.sink); err != nil {
			return err
		}
		if r.Changes[i].Op == jOpen {
			rc.sessions++
		}
	}
	return nil
}

// writeFrames writes a file (a base's temporary file) with frames,
// fsynced, and also every syncEvery bytes if not 0: a large base then
// reaches the disk in steps rather than in one burst that the journal's
// next fsync would wait behind. It returns the file's size.
func writeFrames(path string, syncEvery int64, frames func(w io.Writer) error) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	cw := &countWriter{w: bw, f: f, bw: bw, every: syncEvery}
	err = frames(cw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return 0, err
	}
	return cw.n, nil
}

// commitFile renames tmp over path durably.
func commitFile(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

type countWriter struct {
	w      io.Writer
	n      int64
	f      *os.File
	bw     *bufio.Writer
	every  int64
	synced int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err == nil && c.every > 0 && c.n-c.synced >= c.every {
		if err = c.bw.Flush(); err == nil {
			err = c.f.Sync()
		}
		c.synced = c.n
	}
	return n, err
}

// recordEncoder encodes records into a reused buffer.
type recordEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
	out []byte
}

// frame returns the frame of r, valid until the next call.
func (e *recordEncoder) frame(r any) ([]byte, error) {
	if e.enc == nil {
		e.enc = msgpack.NewEncoder(&e.buf)
	}
	e.buf.Reset()
	if err := e.enc.Encode(r); err != nil {
		return nil, err
	}
	e.out = appendFrame(e.out[:0], e.buf.Bytes())
	return e.out, nil
}

// release lets the memory of a large frame go once it is written.
func (e *recordEncoder) release() {
	if cap(e.out) > 4<<20 {
		e.out, e.buf = nil, bytes.Buffer{}
	}
}

// persister is the writing side, owned by Agent.persistM.
type persister struct {
	dir        string
	gen        uint64   // the journal records go to
	f          *os.File // journal gen, open for appending; nil: opened at the next
	size       int64    // its size up to its last whole record
	baseGen    uint64
	baseSize   int64
	wroteEpoch uint64 // the journal's last record: its epoch (0: none yet)
	wroteSeq   uint64 // and the last batch it holds
	wroteTen   uint64 // and the table's tenantsGen its tenants are of
	needBase   bool   // the next persist writes a base whole
	restoredAt int64  // for the next record's Restored
	marker     bool   // agent.state is the marker of version 2
	clean      bool   // agent.clean exists: removed before the next append
	retry      []sessChange
	spare      []sessChange
	enc        recordEncoder
	files      stateFiles // found at start, older than the base: removed
	compaction *compaction
	compactMin int64
	// fault, if set (tests), fails the next writes with its error.
	fault func() error
}

// compaction is a base being written in the background.
type compaction struct {
	gen   uint64
	done  chan struct{}
	err   error  // set before done is closed
	size  int64  // of the base written
	after uint64 // Agent.snaps when the table was read whole
	// committed, once the journal holds a record after the base, is closed
	// when commitBase is done; commitErr is then set.
	committed chan struct{}
	commitErr error
	marked    bool // commitBase wrote the marker
}

// appendRecord appends the record of st and changes to the journal.
func (a *Agent) appendRecord(st *stateFile, changes []sessChange) error {
	p := &a.pst
	if p.clean {
		if err := os.Remove(filepath.Join(p.dir, cleanFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(p.dir); err != nil {
			return err
		}
		p.clean = false
	}
	if p.f == nil {
		path := journalPath(p.dir, p.gen)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		if err := f.Truncate(p.size); err != nil { // a record cut short, or a failed append
			f.Close()
			return err
		}
		if p.size == 0 {
			if err := syncDir(p.dir); err != nil {
				f.Close()
				return err
			}
		}
		p.f = f
	}
	rec := jRecordOut{Head: st, Changes: changeList{a: a, ch: changes}, Restored: p.restoredAt}
	if p.wroteEpoch == 0 || p.wroteEpoch != st.Epoch || p.size == 0 {
		rec.Full = true
	} else {
		rec.UnackedFrom = st.NextSeq - uint64(len(st.Unacked))
		if p.wroteSeq >= rec.UnackedFrom { // those the journal holds already
			st.Unacked = st.Unacked[min(uint64(len(st.Unacked)), p.wroteSeq-rec.UnackedFrom+1):]
		}
		if st.tenantsGen == p.wroteTen {
			st.Tenants, rec.SameTenants = nil, true
		}
	}
	frame, err := p.enc.frame(&rec)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if _, err = p.f.Write(frame); err == nil {
		err = p.f.Sync()
	}
	if err != nil {
		// Cut back to the last whole record; if that fails the file is
		// unsure, and the next persist writes a new generation whole.
		if terr := p.f.Truncate(p.size); terr != nil {
			p.f.Close()
			p.f, p.needBase = nil, true
		}
		return err
	}
	p.size += int64(len(frame))
	p.wroteEpoch, p.wroteSeq, p.wroteTen = st.Epoch, st.NextSeq-1, st.tenantsGen
	p.restoredAt = 0
	p.enc.release()
	return nil
}

// jRecordOut is jRecord as written: its changes are encoded straight from
// the table's journal (same msgpack).
type jRecordOut struct {
	Head        *stateFile `msgpack:"h,omitempty"`
	Full        bool       `msgpack:"f,omitempty"`
	UnackedFrom uint64     `msgpack:"uf,omitempty"`
	Changes     changeList `msgpack:"c,omitempty"`
	End         uint64     `msgpack:"end,omitempty"`
	Restored    int64      `msgpack:"rs,omitempty"`
	SameTenants bool       `msgpack:"stn,omitempty"`
}

// changeList encodes journal changes as an array of stChange.
type changeList struct {
	a  *Agent
	ch []sessChange
}

// IsZero lets msgpack omit an empty list.
func (l changeList) IsZero() bool { return len(l.ch) == 0 }

// EncodeMsgpack implements msgpack.CustomEncoder.
func (l changeList) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(len(l.ch)); err != nil {
		return err
	}
	for i := range l.ch {
		if err := l.a.stChangeOf(&l.ch[i]).EncodeMsgpack(enc); err != nil {
			return err
		}
	}
	return nil
}

// writeFrame writes the frame of r to w.
func writeFrame(w io.Writer, e *recordEncoder, r any) error {
	frame, err := e.frame(r)
	if err == nil {
		_, err = w.Write(frame)
	}
	return err
}

// writeBaseWhole writes a new generation's base holding st and every
// session (sessions, all opens), and commits it: the journal goes on in
// that generation.
func (a *Agent) writeBaseWhole(st *stateFile, sessions []sessChange) error {
	p := &a.pst
	if c := p.compaction; c != nil { // superseded
		if c.committed != nil {
			a.commitTaken(c)
		} else {
			<-c.done
			os.Remove(basePath(p.dir, c.gen) + ".tmp")
			p.compaction = nil
		}
	}
	gen := p.gen + 1
	path := basePath(p.dir, gen)
	size, err := writeFrames(path+".tmp", 0, func(w io.Writer) error {
		if err := writeFrame(w, &p.enc, &jRecordOut{Head: st, Full: true}); err != nil {
			return err
		}
		for rest := sessions; len(rest) > 0; {
			n := min(len(rest), baseChunk)
			if err := writeFrame(w, &p.enc, &jRecordOut{Changes: changeList{a: a, ch: rest[:n]}}); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return writeFrame(w, &p.enc, &jRecordOut{End: uint64(len(sessions)) + 1})
	})
	if err == nil {
		err = commitFile(path+".tmp", path)
	}
	if err != nil {
		return err
	}
	if p.f != nil {
		p.f.Close()
	}
	p.f, p.gen, p.size = nil, gen, 0
	p.wroteEpoch, p.wroteSeq = 0, 0 // the journal's first record has everything
	p.baseGen, p.baseSize, p.needBase = gen, size, false
	p.restoredAt = 0 // the base holds every session's doubt
	if p.clean {     // the clean journal is gone with its generation
		os.Remove(filepath.Join(p.dir, cleanFileName))
		p.clean = false
	}
	p.enc.release()
	return a.baseCommitted(gen)
}

// baseCommitted makes agent.state the marker of this format (once) and
// removes the generations before gen.
func (a *Agent) baseCommitted(gen uint64) error {
	p := &a.pst
	if !p.marker {
		if err := writeMarker(p.dir, a.id); err != nil {
			return err
		}
		p.marker = true
	}
	a.removeBefore(gen)
	return nil
}

// writeMarker writes agent.state as the marker of this format.
func writeMarker(dir, id string) error {
	data, err := msgpack.Marshal(&stateFile{Version: stateVersion, AgentID: id})
	if err != nil {
		return err
	}
	data = binary.BigEndian.AppendUint32(append(data, stateSumMagic...), crc32.Checksum(data, castagnoli))
	tmp := filepath.Join(dir, stateFileName+".tmp")
	if _, err := writeFrames(tmp, 0, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		return err
	}
	return commitFile(tmp, filepath.Join(dir, stateFileName))
}

// removeBefore removes the bases and journals of generations before gen.
func (a *Agent) removeBefore(gen uint64) {
	p := &a.pst
	removeGenerations(p.dir, gen, p.files, a.log)
	p.files = stateFiles{}
}

// removeGenerations removes the bases and journals of the generations
// before gen (older: those found at start).
func removeGenerations(dir string, gen uint64, older stateFiles, log hclog.Logger) {
	for g := uint64(1); g < gen; g++ { // the generations are few: most are gone already
		if g+64 < gen && !older.has(older.bases, g) && !older.has(older.journals, g) {
			continue
		}
		for _, path := range []string{basePath(dir, g), journalPath(dir, g)} {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.Warn("cannot remove an old state file", "file", path, "error", err)
			}
		}
	}
}

// commitBase commits base c.gen, written by compact, once the journal of
// its generation holds a record taken after it: renamed into place, the
// marker written if need be (!marked), the generations before removed. It
// runs in the background, so that a persist does not wait for the
// renames, the directory's fsyncs and the removal of large files;
// commitTaken takes its outcome.
func (a *Agent) commitBase(c *compaction, marker bool, older stateFiles) {
	defer close(c.committed)
	dir := a.pst.dir // set once at start
	tmp := basePath(dir, c.gen) + ".tmp"
	if c.commitErr = commitFile(tmp, basePath(dir, c.gen)); c.commitErr != nil {
		os.Remove(tmp)
		return
	}
	if !marker {
		if c.commitErr = writeMarker(dir, a.id); c.commitErr != nil {
			c.commitErr = fmt.Errorf("cannot write the state marker: %w", c.commitErr)
			return
		}
		c.marked = true
	}
	removeGenerations(dir, c.gen, older, a.log)
}

// commitTaken waits for c's commitBase and takes its outcome; persistM is
// held. A base that could not be committed leaves the generations before
// it in place, which with the journals after them hold the state still.
func (a *Agent) commitTaken(c *compaction) {
	p := &a.pst
	<-c.committed
	p.compaction = nil
	if c.marked {
		p.marker = true
	}
	if c.commitErr != nil {
		a.log.Warn("cannot compact the agent's journal; it goes on growing until it can", "error", c.commitErr)
		return
	}
	p.baseGen, p.baseSize, p.files = c.gen, c.size, stateFiles{}
}

// compactStep, after a record was appended (snap: its Agent.snaps),
// commits a base written in the background once the journal holds a
// record taken after it, or starts one when the journal outgrew its base.
func (a *Agent) compactStep(snap uint64) {
	p := &a.pst
	if c := p.compaction; c != nil {
		if c.committed != nil {
			select {
			case <-c.committed:
				a.commitTaken(c)
			default:
			}
			return
		}
		select {
		case <-c.done:
		default:
			return
		}
		switch {
		case c.err != nil || c.gen != p.gen:
			os.Remove(basePath(p.dir, c.gen) + ".tmp")
			p.compaction = nil
			if c.err != nil {
				a.log.Warn("cannot compact the agent's journal; it goes on growing until it can", "error", c.err)
			}
		case snap > c.after:
			c.committed = make(chan struct{})
			go a.commitBase(c, p.marker, p.files)
		}
		return
	}
	min := p.compactMin
	if min == 0 {
		min = defaultCompactMin
	}
	if p.size < max(min, 2*p.baseSize) {
		return
	}
	c := &compaction{gen: p.gen + 1, done: make(chan struct{})}
	p.f.Close()
	p.f, p.gen, p.size = nil, c.gen, 0
	p.wroteEpoch, p.wroteSeq = 0, 0
	p.compaction = c
	go a.compact(c)
}

// compact writes base c.gen from the table, baseChunk sessions per hold of
// a.mu (see the top of this file).
func (a *Agent) compact(c *compaction) {
	defer close(c.done)
	chunk := make([]sessChange, 0, baseChunk)
	var enc recordEncoder // p.enc is the persister's
	var count uint64
	c.size, c.err = writeFrames(basePath(a.pst.dir, c.gen)+".tmp", 1<<20, func(w io.Writer) error {
		write := func() error {
			err := writeFrame(w, &enc, &jRecordOut{Changes: changeList{a: a, ch: chunk}})
			count += uint64(len(chunk))
			clear(chunk)
			chunk = chunk[:0]
			return err
		}
		a.mu.Lock()
		for _, s := range a.tab.sessions {
			chunk = append(chunk, s.openChange())
			if len(chunk) < baseChunk {
				continue
			}
			a.mu.Unlock() // the range goes on over a map changed meanwhile: see above
			if err := write(); err != nil {
				return err
			}
			a.mu.Lock()
		}
		c.after = a.snaps
		a.mu.Unlock()
		if err := write(); err != nil {
			return err
		}
		return writeFrame(w, &enc, &jRecordOut{End: count + 1})
	})
}

// waitCompaction waits for a compaction in progress to finish writing.
func (a *Agent) waitCompaction() {
	a.persistM.Lock()
	defer a.persistM.Unlock()
	if c := a.pst.compaction; c != nil {
		<-c.done // compact takes no persistM
		if c.committed != nil {
			a.commitTaken(c)
		}
	}
}

// closeState is the last persist of Run: it lets a compaction finish and
// commit, persists, and marks the journal closed cleanly (agent.clean).
func (a *Agent) closeState() error {
	a.waitCompaction()
	if err := a.persist(); err != nil {
		return err
	}
	a.persistM.Lock()
	defer a.persistM.Unlock()
	p := &a.pst
	if c := p.compaction; c != nil && c.committed != nil {
		a.commitTaken(c)
	}
	if p.compaction != nil || p.f == nil {
		return nil // not settled: no mark, the next start is as after a crash
	}
	data, err := msgpack.Marshal(&cleanMark{Gen: p.gen, Size: p.size})
	if err != nil {
		return err
	}
	data = binary.BigEndian.AppendUint32(append(data, stateSumMagic...), crc32.Checksum(data, castagnoli))
	tmp := filepath.Join(p.dir, cleanFileName+".tmp")
	if _, err := writeFrames(tmp, 0, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		return err
	}
	if err := commitFile(tmp, filepath.Join(p.dir, cleanFileName)); err != nil {
		return err
	}
	p.clean = true
	return nil
}
