package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.hex and the hex blocks of PROTOCOL.md from the examples")

// golden is the example value of one message type and the file holding its
// frame.
type golden struct {
	file string // under testdata/
	msg  Message
}

// goldenExamples returns one example per message type, every field non-zero
// and every slice with at least two elements (TestGoldenExamplesComplete
// checks it). Changing one changes its testdata file: run
// go test ./wire/ -run 'TestGolden|TestProtocolDoc' -update.
func goldenExamples() []golden {
	return []golden{
		{"hello.hex", &Hello{
			AgentID: "agent-eu-1",
			Epoch:   1767225600,
			Version: ProtocolVersion,
			Labels:  []Label{{"region", "eu-west"}, {"zone", "eu-west-1a"}},
			Token:   "tok-3f9a",
		}},
		{"welcome.hex", &Welcome{
			ServerID:      "srv-2",
			Version:       ProtocolVersion,
			LastSeq:       41,
			NeedFullState: true,
			Servers:       []string{"10.0.0.1:7070", "10.0.0.2:7070"},
			Classes:       []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai", "device"},
		}},
		{"delta_batch.hex", &DeltaBatch{
			AgentID:   "agent-eu-1",
			Epoch:     1767225600,
			Seq:       42,
			AgentTime: 1767225612345,
			Entries: []DeltaEntry{
				{Tenant: "tenant-0042", Class: "video-hd", Opened: 3, Closed: 1, SessionMicros: 123456789, Peak: 300, Refused: 200, ClosedMinutes: 4, Reconciled: 2},
				{Tenant: "tenant-0042", Class: "audio", Opened: 12, Closed: 2, SessionMicros: 98765, Peak: 20, Refused: 1, ClosedMinutes: 3, Reconciled: 5},
			},
			Peaks: []TenantPeak{{Tenant: "tenant-0042", Peak: 310}, {Tenant: "tenant-0043", Peak: 7}},
			Users: []UserSet{
				{Tenant: "tenant-0042", Day: 20453, Hashes: []uint64{0x9e3779b97f4a7c15, 42}},
				{Tenant: "tenant-0043", Day: 20454, Hashes: []uint64{7, 0xffffffffffffffff}},
			},
		}},
		{"full_state.hex", &FullState{
			AgentID: "agent-eu-1",
			Epoch:   1767225600,
			Seq:     41,
			More:    true,
			Counts: []CountEntry{
				{Tenant: "tenant-0042", Class: "video-hd", Open: 7},
				{Tenant: "tenant-0043", Class: "ai", Open: 70000},
			},
			Usage: []DeltaEntry{
				{Tenant: "tenant-0042", Class: "video-hd", Opened: 1, Closed: 1, SessionMicros: 5000000, Peak: 8, Refused: 2, ClosedMinutes: 1, Reconciled: 1},
				{Tenant: "tenant-0043", Class: "ai", Opened: 4, Closed: 3, SessionMicros: 1 << 33, Peak: 70001, Refused: 9, ClosedMinutes: 143166, Reconciled: 3},
			},
			Peaks: []TenantPeak{{Tenant: "tenant-0042", Peak: 8}, {Tenant: "tenant-0043", Peak: 70001}},
			Users: []UserSet{
				{Tenant: "tenant-0042", Day: 20453, Hashes: []uint64{1, 2}},
				{Tenant: "tenant-0043", Day: 20453, Hashes: []uint64{300, 0x0123456789abcdef}},
			},
		}},
		{"ack.hex", &Ack{Seq: 42, Index: 90210}},
		{"tenant_state.hex", &TenantState{
			Full: true,
			More: true,
			Tenants: []TenantInfo{
				{Tenant: "tenant-0042", Plan: "pro", Ceiling: 500, Mode: "soft", BurstPct: 20, Concurrency: 123, Suspended: true,
					ClassLimits: []ClassLimit{{Class: "video-hd", Ceiling: 50, Concurrency: 12, Over: 2}, {Class: "ai", Ceiling: 10, Concurrency: 10, Over: 1}}, Over: 3},
				{Tenant: "tenant-0043", Plan: "enterprise-eu", Ceiling: 100000, Mode: "strict", BurstPct: 5, Concurrency: 99999, Suspended: true,
					ClassLimits: []ClassLimit{{Class: "audio", Ceiling: 90000, Concurrency: 1, Over: 4}, {Class: "video-2k+", Ceiling: 100, Concurrency: 99, Over: 5}}, Over: 6},
			},
		}},
		{"redirect.hex", &Redirect{
			Leader:  "10.0.0.3:7070",
			Servers: []string{"10.0.0.1:7070", "10.0.0.2:7070", "10.0.0.3:7070"},
		}},
		{"error.hex", &Error{Code: CodeSeqGap, Message: "batch 44 after 41", LastSeq: 41}},
		{"ping.hex", &Ping{Nonce: 0x0123456789abcdef}},
		{"pong.hex", &Pong{Nonce: 0x0123456789abcdef}},
		{"grant_ask.hex", &GrantAsk{
			AgentID: "agent-eu-1",
			ReqID:   7,
			Wants:   []GrantWant{{Tenant: "tenant-0042", Class: "video-hd", Want: 12, Hold: 10, Open: 9}, {Tenant: "tenant-0043", Class: "ai", Want: 40, Hold: 25, Open: 31}},
		}},
		{"grant.hex", &Grant{
			ReqID:       7,
			LeaseMillis: 10000,
			Shares:      []GrantShare{{Tenant: "tenant-0042", Class: "video-hd", Grant: 12, Free: 30, Ceiling: 50, Over: 1}, {Tenant: "tenant-0043", Class: "ai", Grant: 25, Free: 1, Ceiling: 100, Over: 2}},
		}},
		{"recall.hex", &Recall{Pools: []GrantPool{{Tenant: "tenant-0042", Class: "video-hd"}, {Tenant: "tenant-0043", Class: "ai"}}}},
	}
}

// formatHex renders a frame as the testdata files hold it: the header on a
// line of its own, then the body in lines of 32 bytes.
func formatHex(frame []byte) string {
	var sb strings.Builder
	sb.WriteString(hex.EncodeToString(frame[:headerLen]))
	sb.WriteByte('\n')
	for b := frame[headerLen:]; len(b) > 0; {
		n := min(len(b), 32)
		sb.WriteString(hex.EncodeToString(b[:n]))
		sb.WriteByte('\n')
		b = b[n:]
	}
	return sb.String()
}

// parseHex decodes hex text, ignoring whitespace.
func parseHex(text string) ([]byte, error) {
	return hex.DecodeString(strings.Join(strings.Fields(text), ""))
}

func readGolden(t testing.TB, file string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	frame, err := parseHex(string(text))
	if err != nil {
		t.Fatalf("testdata/%s: %v", file, err)
	}
	return frame
}

func TestGolden(t *testing.T) {
	for _, g := range goldenExamples() {
		t.Run(g.file, func(t *testing.T) {
			frame := AppendFrame(nil, g.msg)
			if *update {
				if err := os.WriteFile(filepath.Join("testdata", g.file), []byte(formatHex(frame)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := readGolden(t, g.file)
			if !bytes.Equal(frame, want) {
				t.Errorf("encoding of the example differs from testdata/%s (run with -update if the change is intended and compatible):\ngot:\n%swant:\n%s",
					g.file, formatHex(frame), formatHex(want))
			}
			r := NewReader(bytes.NewReader(want), 0)
			m, err := r.Read()
			if err != nil {
				t.Fatalf("decoding testdata/%s: %v", g.file, err)
			}
			if !reflect.DeepEqual(m, g.msg) {
				t.Errorf("testdata/%s decodes to\n%#v\nwant\n%#v", g.file, m, g.msg)
			}
			if again := AppendFrame(nil, m); !bytes.Equal(again, want) {
				t.Errorf("re-encoding testdata/%s gives different bytes:\n%s", g.file, formatHex(again))
			}
			if _, err := r.Read(); err != io.EOF {
				t.Errorf("after the frame: %v, want io.EOF", err)
			}
		})
	}
}

// TestGoldenExamplesComplete checks that there is an example of every type,
// and that every field of every example (nested ones included) is non-zero,
// every slice holding at least two elements, so that the vectors exercise
// every key.
func TestGoldenExamplesComplete(t *testing.T) {
	have := map[Type]bool{}
	for _, g := range goldenExamples() {
		have[g.msg.Type()] = true
		if want := strings.ReplaceAll(g.msg.Type().String(), "-", "_") + ".hex"; g.file != want {
			t.Errorf("the example of %s is in %s, want %s", g.msg.Type(), g.file, want)
		}
		checkNonZero(t, reflect.TypeOf(g.msg).Elem().Name(), reflect.ValueOf(g.msg).Elem())
	}
	for typ := Type(1); int(typ) < len(typeNames); typ++ {
		if !have[typ] {
			t.Errorf("no golden example of %s", typ)
		}
	}
}

func checkNonZero(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			checkNonZero(t, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case reflect.Slice:
		if v.Len() < 2 {
			t.Errorf("%s has %d elements, want at least 2", path, v.Len())
		}
		for i := 0; i < v.Len(); i++ {
			checkNonZero(t, fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	default:
		if v.IsZero() {
			t.Errorf("%s is zero", path)
		}
	}
}

// TestProtocolDoc checks that PROTOCOL.md shows every golden vector as it is
// in testdata, and its example value as it is in goldenExamples. With
// -update it rewrites those blocks. Each block follows a marker line:
//
//	<!-- example: hello -->
//	```json
//	...the example, as JSON...
//	```
//	<!-- testdata/hello.hex -->
//	```text
//	...the file's hex...
//	```
func TestProtocolDoc(t *testing.T) {
	const doc = "PROTOCOL.md"
	raw, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	hexEqual := func(a, b string) bool {
		x, err1 := parseHex(a)
		y, err2 := parseHex(b)
		return err1 == nil && err2 == nil && bytes.Equal(x, y)
	}
	for _, g := range goldenExamples() {
		file, err := os.ReadFile(filepath.Join("testdata", g.file))
		if err != nil {
			t.Fatal(err)
		}
		value, err := json.MarshalIndent(g.msg, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []struct {
			marker, lang, want string
			equal              func(a, b string) bool
		}{
			{"<!-- example: " + g.msg.Type().String() + " -->", "json", string(value) + "\n", func(a, b string) bool { return a == b }},
			{"<!-- testdata/" + g.file + " -->", "text", string(file), hexEqual},
		} {
			open := b.marker + "\n```" + b.lang + "\n"
			start := strings.Index(text, open)
			if start < 0 {
				t.Errorf("%s has no block for %s: add the lines\n%s```\nto the section of %s, then run go test ./wire/ -run TestProtocolDoc -update",
					doc, g.file, open, g.msg.Type())
				continue
			}
			start += len(open)
			end := strings.Index(text[start:], "```")
			if end < 0 {
				t.Errorf("%s: the block after %s is not closed", doc, b.marker)
				continue
			}
			end += start
			if *update {
				text = text[:start] + b.want + text[end:]
			} else if !b.equal(text[start:end], b.want) {
				t.Errorf("%s: the block after %s is stale; run go test ./wire/ -run TestProtocolDoc -update to regenerate it", doc, b.marker)
			}
		}
	}
	if *update && text != string(raw) {
		if err := os.WriteFile(doc, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
