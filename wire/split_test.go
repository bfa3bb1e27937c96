package wire

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

var testClasses = []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}

func bigFullState(tenants int) FullState {
	fs := FullState{AgentID: "agent-eu-1", Epoch: 1767225600, Seq: 977}
	for i := range tenants {
		id := fmt.Sprintf("tenant-%06d", i)
		fs.Counts = append(fs.Counts, CountEntry{Tenant: id, Class: testClasses[i%len(testClasses)], Open: uint64(i % 300)})
		if i%4 == 0 {
			fs.Usage = append(fs.Usage, DeltaEntry{Tenant: id, Class: "video-hd", SessionMicros: 1e8 + uint64(i), Peak: 9, Refused: uint64(i % 2)})
		}
		if i%2 == 0 {
			fs.Peaks = append(fs.Peaks, TenantPeak{Tenant: id, Peak: uint64(i % 1000)})
		}
	}
	return fs
}

func bigTenantState(tenants int) TenantState {
	ts := TenantState{Full: true}
	for i := range tenants {
		ts.Tenants = append(ts.Tenants, TenantInfo{
			Tenant: fmt.Sprintf("tenant-%06d", i), Plan: "pro", Ceiling: uint64(100 + i%1000), Mode: "soft",
			BurstPct: 20, Concurrency: uint64(i % 700), Suspended: i%97 == 0,
		})
	}
	return ts
}

// checkPartCount checks that a message of whole bytes was cut into as few
// parts of at most limit bytes as could be, or one more.
func checkPartCount(t *testing.T, parts, whole, limit int) {
	t.Helper()
	least := (whole + limit - 1) / limit
	if parts < least || parts > least+1 {
		t.Errorf("%d parts of at most %d bytes for a message of %d bytes, want %d or %d", parts, limit, whole, least, least+1)
	}
}

// checkParts checks that each part fits maxBody and survives a Reader with
// that limit, and that no part but the last could have taken the next
// element (up to slack bytes).
func checkParts[P Message](t *testing.T, parts []P, maxBody, slack int) {
	t.Helper()
	if len(parts) == 0 {
		t.Fatal("no parts")
	}
	var stream []byte
	for i, p := range parts {
		start := len(stream)
		stream = AppendFrame(stream, p)
		n := len(stream) - start - headerLen
		if n > maxBody {
			t.Errorf("part %d of %d: body of %d bytes, limit %d", i, len(parts), n, maxBody)
		}
		if i < len(parts)-1 && n < maxBody-slack {
			t.Errorf("part %d of %d: body of %d bytes, want at least %d", i, len(parts), n, maxBody-slack)
		}
	}
	r := NewReader(bytes.NewReader(stream), maxBody)
	for i, p := range parts {
		m, err := r.Read()
		if err != nil || !reflect.DeepEqual(m, Message(p)) {
			t.Fatalf("part %d: read back as %T, %v", i, m, err)
		}
	}
}

func TestSplitFullState(t *testing.T) {
	fs := bigFullState(200_000)
	whole := len(Append(nil, &fs))
	for _, c := range []struct {
		maxBody, limit int
		more           bool
	}{
		{64 << 10, 64 << 10, false},
		{64 << 10, 64 << 10, true},
		{DefaultMaxFrame, DefaultMaxFrame, false},
		{0, DefaultMaxFrame, true},
	} {
		fs.More = c.more
		parts := SplitFullState(fs, c.maxBody)
		checkPartCount(t, len(parts), whole, c.limit)
		checkParts(t, parts, c.limit, 64)
		var joined FullState
		for i, p := range parts {
			if p.AgentID != fs.AgentID || p.Epoch != fs.Epoch || p.Seq != fs.Seq {
				t.Fatalf("part %d: %s %d %d", i, p.AgentID, p.Epoch, p.Seq)
			}
			if want := i < len(parts)-1 || c.more; p.More != want {
				t.Errorf("maxBody %d, part %d of %d: More %v", c.maxBody, i, len(parts), p.More)
			}
			joined.Counts = append(joined.Counts, p.Counts...)
			joined.Usage = append(joined.Usage, p.Usage...)
			joined.Peaks = append(joined.Peaks, p.Peaks...)
			if cap(p.Counts) != len(p.Counts) || cap(p.Usage) != len(p.Usage) || cap(p.Peaks) != len(p.Peaks) {
				t.Errorf("part %d: a slice's capacity reaches past the part", i)
			}
		}
		if !reflect.DeepEqual(joined.Counts, fs.Counts) || !reflect.DeepEqual(joined.Usage, fs.Usage) || !reflect.DeepEqual(joined.Peaks, fs.Peaks) {
			t.Errorf("maxBody %d: the parts do not add up to the message", c.maxBody)
		}
	}
}

func TestSplitTenantState(t *testing.T) {
	ts := bigTenantState(200_000)
	whole := len(Append(nil, &ts))
	for _, c := range []struct {
		maxBody int
		full    bool
	}{{64 << 10, false}, {64 << 10, true}, {DefaultMaxFrame, true}} {
		ts.Full = c.full
		parts := SplitTenantState(ts, c.maxBody)
		checkPartCount(t, len(parts), whole, c.maxBody)
		checkParts(t, parts, c.maxBody, 100)
		var joined []TenantInfo
		for i, p := range parts {
			if p.Full != c.full || p.More != (i < len(parts)-1) {
				t.Errorf("maxBody %d, part %d of %d: Full %v More %v", c.maxBody, i, len(parts), p.Full, p.More)
			}
			joined = append(joined, p.Tenants...)
		}
		if !reflect.DeepEqual(joined, ts.Tenants) {
			t.Errorf("maxBody %d: the parts do not add up to the message", c.maxBody)
		}
	}
}

func TestSplitFits(t *testing.T) {
	for _, g := range goldenExamples() {
		switch m := g.msg.(type) {
		case *FullState:
			body := len(Append(nil, m))
			for _, maxBody := range []int{body, 0} {
				parts := SplitFullState(*m, maxBody)
				if len(parts) != 1 || !reflect.DeepEqual(parts[0], m) {
					t.Errorf("FullState of %d bytes, maxBody %d: %d parts", body, maxBody, len(parts))
				}
			}
			if parts := SplitFullState(*m, body-1); len(parts) != 2 {
				t.Errorf("FullState of %d bytes, maxBody %d: %d parts", body, body-1, len(parts))
			} else {
				checkParts(t, parts, body-1, body)
			}
		case *TenantState:
			body := len(Append(nil, m))
			parts := SplitTenantState(*m, body)
			if len(parts) != 1 || !reflect.DeepEqual(parts[0], m) {
				t.Errorf("TenantState of %d bytes: %d parts", body, len(parts))
			}
		}
	}
	if parts := SplitFullState(FullState{AgentID: "a"}, 10); len(parts) != 1 || parts[0].AgentID != "a" {
		t.Errorf("empty FullState: %v", parts)
	}
}

// TestSplitOversizeElement: an element that cannot fit goes alone.
func TestSplitOversizeElement(t *testing.T) {
	ts := TenantState{Full: true, Tenants: []TenantInfo{
		{Tenant: "a"}, {Tenant: "b"}, {Tenant: "huge", Plan: strings.Repeat("p", 300)}, {Tenant: "c"},
	}}
	parts := SplitTenantState(ts, 40)
	var got []string
	for _, p := range parts {
		var names []string
		for _, ti := range p.Tenants {
			names = append(names, ti.Tenant)
		}
		got = append(got, strings.Join(names, ","))
	}
	if want := []string{"a,b", "huge", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("parts %q, want %q", got, want)
	}
}
