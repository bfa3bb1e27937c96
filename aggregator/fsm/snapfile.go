package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// A snapshot file — what `headroom snapshot save` writes, what the leader's
// backups are, what `snapshot restore` and `snapshot inspect` read — is:
//
//	headroom-snapshot 1\n
//	{"index":…,"term":…,"time":"…","server":"…","size":N,"configuration":[…]}\n
//	N bytes: the state machine's snapshot, exactly as Raft keeps it
//	sha256 <64 hex digits>\n
//
// The SHA-256 covers every byte before its line, the first two lines too.
// Files saved before the format had a checksum (the state machine's snapshot
// alone) still read, as "legacy", with nothing to verify.

const (
	SnapshotMagic     = "headroom-snapshot 1\n"
	snapshotSumPrefix = "sha256 "
	SnapshotSumLen    = len(snapshotSumPrefix) + 64 + 1
	maxSnapshotHeader = 1 << 20
)

// SnapshotHeader is the second line of a snapshot file.
type SnapshotHeader struct {
	Index  uint64    `json:"index"`  // the last Raft index the state holds
	Term   uint64    `json:"term"`   // that entry's term
	Time   time.Time `json:"time"`   // when the file was written
	Server string    `json:"server"` // the server that wrote it
	Size   int64     `json:"size"`   // bytes of state that follow
	// Configuration is the Raft configuration as of Index.
	Configuration []SnapshotServer `json:"configuration"`
}

// SnapshotServer is one server of a snapshot's Raft configuration.
type SnapshotServer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// SnapshotServers lists the servers of a Raft configuration.
func SnapshotServers(c raft.Configuration) []SnapshotServer {
	out := make([]SnapshotServer, 0, len(c.Servers))
	for _, s := range c.Servers {
		out = append(out, SnapshotServer{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out
}

// SnapshotPreamble is what comes before the state: the magic line and the
// header line.
func SnapshotPreamble(hdr *SnapshotHeader) ([]byte, error) {
	j, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(SnapshotMagic), j...), '\n'), nil
}

// WriteSnapshotFile writes a snapshot file of hdr and hdr.Size bytes read
// from state to w, and returns its checksum.
func WriteSnapshotFile(w io.Writer, hdr *SnapshotHeader, state io.Reader) (string, error) {
	pre, err := SnapshotPreamble(hdr)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	if _, err := mw.Write(pre); err != nil {
		return "", err
	}
	n, err := io.Copy(mw, io.LimitReader(state, hdr.Size))
	if err != nil {
		return "", err
	}
	if n != hdr.Size {
		return "", fmt.Errorf("the snapshot's state ended after %d of %d bytes", n, hdr.Size)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if _, err := io.WriteString(w, snapshotSumPrefix+sum+"\n"); err != nil {
		return "", err
	}
	return sum, nil
}

// ErrSnapshotCorrupt is wrapped by every error about a snapshot file whose
// bytes are not what was written: a checksum mismatch, a truncated or
// damaged file.
var ErrSnapshotCorrupt = errors.New("corrupt")

func corruptSnapshot(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSnapshotCorrupt, fmt.Sprintf(format, args...))
}

// snapshotRead is what readSnapshotFile found.
type snapshotRead struct {
	Header *SnapshotHeader // nil for a legacy file
	Legacy bool
	Offset int64  // of the state in the file
	Size   int64  // of the state
	Sum    string // checksum read from the file ("" legacy)
}

// ReadSnapshotFile reads a whole snapshot file from r: the header, then the
// state, handed to state (if not nil) as a reader of exactly its bytes —
// what state leaves unread is read and hashed all the same — then the
// checksum, which must match. A legacy file is handed to state whole. A
// checksum that does not match wins over state's error, since damage
// explains both.
func ReadSnapshotFile(r io.Reader, state func(io.Reader) error) (*snapshotRead, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(SnapshotMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if string(head) != SnapshotMagic {
		// A legacy file is a msgpack map: fixmap, map16 or map32.
		if len(head) == 0 || !(head[0]&0xf0 == 0x80 || head[0] == 0xde || head[0] == 0xdf) {
			return nil, corruptSnapshot("the first line is not %q, nor is it a snapshot saved before checksums", strings.TrimSpace(SnapshotMagic))
		}
		out := &snapshotRead{Legacy: true}
		if state != nil {
			cr := &countingReader{r: br}
			if err := state(cr); err != nil {
				return out, err
			}
			out.Size = cr.n
		}
		return out, nil
	}
	h := sha256.New()
	tr := io.TeeReader(br, h)
	line, err := readLine(tr, maxSnapshotHeader)
	if err != nil {
		return nil, corruptSnapshot("the first line: %v", err)
	}
	if line != SnapshotMagic {
		return nil, corruptSnapshot("the first line is %q", line)
	}
	line, err = readLine(tr, maxSnapshotHeader)
	if err != nil {
		return nil, corruptSnapshot("the header line: %v", err)
	}
	var hdr SnapshotHeader
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hdr); err != nil || hdr.Size < 0 {
		return nil, corruptSnapshot("the header line does not read (%v)", err)
	}
	out := &snapshotRead{Header: &hdr, Offset: int64(len(SnapshotMagic) + len(line)), Size: hdr.Size}
	body := &countingReader{r: io.LimitReader(tr, hdr.Size)}
	var stateErr error
	if state != nil {
		stateErr = state(body)
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return out, err
	}
	if body.n != hdr.Size {
		return out, corruptSnapshot("truncated: the state ends after %d of %d bytes", body.n, hdr.Size)
	}
	want := hex.EncodeToString(h.Sum(nil))
	trailer := make([]byte, SnapshotSumLen)
	n, _ := io.ReadFull(br, trailer)
	trailer = trailer[:n]
	if !bytes.HasPrefix(trailer, []byte(snapshotSumPrefix)) || n != SnapshotSumLen || trailer[n-1] != '\n' {
		return out, corruptSnapshot("truncated: no checksum at the end")
	}
	out.Sum = string(trailer[len(snapshotSumPrefix) : n-1])
	if out.Sum != want {
		return out, corruptSnapshot("checksum mismatch: the file says sha256 %s, its bytes hash to %s", out.Sum, want)
	}
	if extra, _ := br.Read(make([]byte, 1)); extra > 0 {
		return out, corruptSnapshot("bytes after the checksum")
	}
	return out, stateErr
}

// readLine reads up to and including '\n', at most limit bytes.
func readLine(r io.Reader, limit int) (string, error) {
	var b strings.Builder
	var c [1]byte
	for b.Len() < limit {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return "", fmt.Errorf("ends before its newline (%v)", err)
		}
		b.WriteByte(c[0])
		if c[0] == '\n' {
			return b.String(), nil
		}
	}
	return "", fmt.Errorf("longer than %d bytes", limit)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// SnapshotInfo is what `headroom snapshot inspect` shows of a snapshot
// file, read offline.
type SnapshotInfo struct {
	Format string `json:"format"` // "headroom-snapshot 1" or "legacy (no checksum)"
	// Index and Term are the last entry the state holds (Term 0 in a
	// legacy file, which does not record it); Time when the file was
	// written (empty: legacy).
	Index         uint64           `json:"index"`
	Term          uint64           `json:"term"`
	Time          string           `json:"time,omitempty"`
	Server        string           `json:"server,omitempty"`
	StateBytes    int64            `json:"state_bytes"`
	Checksum      string           `json:"checksum"` // "ok", "none" (legacy) or "mismatch"
	SHA256        string           `json:"sha256,omitempty"`
	Configuration []SnapshotServer `json:"configuration,omitempty"`
	// Counts of what the state holds; OpenSessions is the sessions open
	// across all tenants as the cluster last knew them.
	Counts struct {
		Tenants      int    `json:"tenants"`
		Plans        int    `json:"plans"`
		Tokens       int    `json:"tokens"`
		Agents       int    `json:"agents"`
		OpenSessions uint64 `json:"open_sessions"`
	} `json:"counts"`
	Tenants []SnapshotTenant `json:"tenants"`
	Plans   []SnapshotPlan   `json:"plans"`
	Tokens  []SnapshotToken  `json:"tokens"` // accessors only, never secrets or their hashes
}

// SnapshotTenant is one tenant of SnapshotInfo.
type SnapshotTenant struct {
	Tenant       string `json:"tenant"`
	Plan         string `json:"plan"`
	OpenSessions uint64 `json:"open_sessions"`
	Suspended    bool   `json:"suspended,omitempty"`
}

// SnapshotPlan is one plan of SnapshotInfo.
type SnapshotPlan struct {
	Name    string `json:"name"`
	Mode    string `json:"mode"`
	Ceiling uint64 `json:"ceiling"`
	Tenants int    `json:"tenants"`
}

// SnapshotToken is one token of SnapshotInfo.
type SnapshotToken struct {
	Accessor string `json:"accessor"`
	Role     string `json:"role"`
	Tenant   string `json:"tenant,omitempty"`
}

// InspectSnapshot reads a snapshot file from r offline and describes it. A
// file that fails its checksum or does not decode returns what could be read
// (nil if nothing) with an error wrapping ErrSnapshotCorrupt, or the decode
// error.
func InspectSnapshot(r io.Reader) (*SnapshotInfo, error) {
	sm := NewFSM(nil)
	rd, err := ReadSnapshotFile(r, func(state io.Reader) error { return sm.Restore(io.NopCloser(state)) })
	if rd == nil {
		return nil, err
	}
	info := &SnapshotInfo{Format: strings.TrimSpace(SnapshotMagic), StateBytes: rd.Size, SHA256: rd.Sum, Checksum: "ok"}
	if rd.Legacy {
		info.Format, info.Checksum = "legacy (no checksum)", "none"
	} else {
		h := rd.Header
		info.Index, info.Term, info.Server, info.Configuration = h.Index, h.Term, h.Server, h.Configuration
		info.Time = h.Time.UTC().Format(time.RFC3339)
	}
	if errors.Is(err, ErrSnapshotCorrupt) {
		info.Checksum = "mismatch"
		return info, err
	}
	if err != nil {
		return info, fmt.Errorf("the state does not decode: %w", err)
	}
	sm.Read(func(v View) { describeState(v.s, info) })
	return info, nil
}

func describeState(st *State, info *SnapshotInfo) {
	if info.Index == 0 {
		info.Index = st.Index
	}
	onPlan := map[string]int{}
	for _, t := range st.Tenants {
		open := t.Open.Total()
		info.Tenants = append(info.Tenants, SnapshotTenant{Tenant: t.Name, Plan: t.Plan, OpenSessions: open, Suspended: t.Suspended})
		info.Counts.OpenSessions += open
		onPlan[t.Plan]++
	}
	for _, p := range st.Plans {
		info.Plans = append(info.Plans, SnapshotPlan{Name: p.Name, Mode: string(p.Mode), Ceiling: p.Ceiling, Tenants: onPlan[p.Name]})
	}
	for _, tk := range st.Tokens {
		info.Tokens = append(info.Tokens, SnapshotToken{Accessor: tk.Accessor, Role: tk.Role, Tenant: tk.Tenant})
	}
	sort.Slice(info.Tenants, func(i, j int) bool { return info.Tenants[i].Tenant < info.Tenants[j].Tenant })
	sort.Slice(info.Plans, func(i, j int) bool { return info.Plans[i].Name < info.Plans[j].Name })
	sort.Slice(info.Tokens, func(i, j int) bool { return info.Tokens[i].Accessor < info.Tokens[j].Accessor })
	info.Counts.Tenants, info.Counts.Plans, info.Counts.Tokens, info.Counts.Agents = len(st.Tenants), len(st.Plans), len(st.Tokens), len(st.Agents)
}
