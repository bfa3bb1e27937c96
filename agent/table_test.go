package agent

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
)

const sec = int64(time.Second)

func TestValidIDs(t *testing.T) {
	tests := []struct {
		id     string
		max    int
		wantOK bool
	}{
		{"s-1", maxSessionID, true},
		{"", maxSessionID, false},
		{"a b", maxSessionID, false},
		{"tab\t", maxSessionID, false},
		{"é", maxSessionID, false},
		{"x\x7f", maxSessionID, false},
		{strings.Repeat("x", 128), maxSessionID, true},
		{strings.Repeat("x", 129), maxSessionID, false},
		{strings.Repeat("t", 64), maxTenantID, true},
		{strings.Repeat("t", 65), maxTenantID, false},
		{"!~/%?#", maxSessionID, true},
	}
	for _, tc := range tests {
		err := validID("x", tc.id, tc.max)
		if (err == nil) != tc.wantOK {
			t.Errorf("validID(%q, %d) = %v, want ok=%v", tc.id, tc.max, err, tc.wantOK)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("validID(%q): %v does not wrap ErrInvalid", tc.id, err)
		}
	}
	if numClasses != len(plans.AllClasses) {
		t.Fatalf("numClasses %d, plans has %d classes", numClasses, len(plans.AllClasses))
	}
}

func TestTableOpenCloseExpire(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	s1 := tab.open(te, "s1", plans.Audio, 0, 0)
	tab.open(te, "s2", plans.VideoHD, 10*time.Second, 1*sec)
	if got := tab.openCount(); got != 2 {
		t.Fatalf("open = %d", got)
	}
	if te.open != 2 || te.cells[plans.Audio-1].count != 1 || te.cells[plans.VideoHD-1].count != 1 {
		t.Fatalf("counts: %+v", te)
	}
	if d := tab.close(s1, 5*sec); d != 5*time.Second {
		t.Fatalf("close duration %v", d)
	}
	// s2: keepalive at 4 s moves the deadline to 14 s.
	tab.keepalive(tab.lookup("s2", 4*sec), 4*sec)
	if n := tab.expireDue(11 * sec); n != 0 {
		t.Fatalf("expired %d at 11 s", n)
	}
	if n := tab.expireDue(14 * sec); n != 0 {
		t.Fatalf("expired %d at exactly the deadline", n)
	}
	if n := tab.expireDue(14*sec + 1); n != 1 {
		t.Fatalf("expired %d after the deadline", n)
	}
	if tab.openCount() != 0 || te.open != 0 || len(tab.heap) != 0 {
		t.Fatalf("after expiry: open %d/%d heap %d", tab.openCount(), te.open, len(tab.heap))
	}
}

func TestTableLookupExpiresLapsed(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	tab.open(te, "s", plans.Audio, time.Second, 0)
	if tab.lookup("s", sec) == nil {
		t.Fatal("lapsed too early")
	}
	if tab.lookup("s", sec+1) != nil {
		t.Fatal("lapsed session still found")
	}
	if tab.openCount() != 0 {
		t.Fatal("lapsed session not removed")
	}
}

func TestTableHeapManySessions(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	const n = 500
	for i := 0; i < n; i++ {
		ttl := time.Duration(1+(i*7919)%97) * time.Second
		tab.open(te, "s"+itoa(i), plans.Audio, ttl, 0)
	}
	// Close every third, keepalive every fifth at 50 s.
	for i := 0; i < n; i += 3 {
		if s := tab.sessions["s"+itoa(i)]; s != nil {
			tab.close(s, 0)
		}
	}
	for i := 0; i < n; i += 5 {
		if s := tab.sessions["s"+itoa(i)]; s != nil && !s.lapsed(50*sec) {
			tab.keepalive(s, 50*sec)
		}
	}
	for now := int64(0); now <= 200*sec; now += sec / 2 {
		tab.expireDue(now)
		for _, s := range tab.sessions {
			if s.lapsed(now) {
				t.Fatalf("session %s lapsed at %d but still open", s.id, now)
			}
		}
		for i, s := range tab.heap {
			if s.heapIdx != i {
				t.Fatalf("heap index broken")
			}
		}
	}
	if tab.openCount() != 0 {
		t.Fatalf("%d sessions left", tab.openCount())
	}
}

func TestTableReset(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	for i := 0; i < 10; i++ {
		tab.open(te, "s"+itoa(i), plans.Audio, time.Minute, 0)
	}
	if n := tab.reset(sec); n != 10 {
		t.Fatalf("reset closed %d", n)
	}
	if tab.openCount() != 0 || te.open != 0 || len(tab.heap) != 0 {
		t.Fatal("reset left sessions")
	}
}

func TestTableReconcile(t *testing.T) {
	tab := newTable()
	t1 := tab.tenant("t1", true)
	tab.open(t1, "keep", plans.Audio, time.Minute, 0)
	tab.open(t1, "gone", plans.Audio, 0, 0)
	tab.open(t1, "moved", plans.Audio, 0, 0)
	want := map[string]reconItem{
		"keep":  {tenant: "t1", class: plans.Audio},
		"moved": {tenant: "t2", class: plans.Audio},
		"new":   {tenant: "t2", class: plans.VideoFHD},
	}
	opened, closed := tab.reconcile(want, 30*sec)
	if !slices.Equal(opened, []string{"moved", "new"}) || !slices.Equal(closed, []string{"gone", "moved"}) {
		t.Fatalf("opened %v closed %v", opened, closed)
	}
	if s := tab.sessions["keep"]; s == nil || s.lastKA != 30*sec {
		t.Fatalf("kept session not refreshed: %+v", s)
	}
	if s := tab.sessions["moved"]; s == nil || s.tenant.id != "t2" {
		t.Fatalf("moved session: %+v", s)
	}
	if tab.tenants["t2"].open != 2 || t1.open != 1 {
		t.Fatalf("counts t1 %d t2 %d", t1.open, tab.tenants["t2"].open)
	}
	// Idempotent.
	opened, closed = tab.reconcile(want, 31*sec)
	if len(opened) != 0 || len(closed) != 0 {
		t.Fatalf("second reconcile: %v %v", opened, closed)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
