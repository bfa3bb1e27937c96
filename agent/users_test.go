package agent

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

func cutUserSets(a *Agent) []wire.UserSet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tab.cutUsers(a.now())
}

// usersOf flattens sets into tenant/day → hashes.
func usersOf(sets []wire.UserSet) map[string][]uint64 {
	out := map[string][]uint64{}
	for _, s := range sets {
		k := s.Tenant + "/" + itoa(int(s.Day))
		out[k] = append(out[k], s.Hashes...)
	}
	for _, hs := range out {
		slices.Sort(hs)
	}
	return out
}

// TestUsersShipped: the users of opened sessions go out once per tenant
// and UTC day, whatever the number of their sessions; sessions without a
// user count toward concurrency only.
func TestUsersShipped(t *testing.T) {
	a, clk := newTestAgent(t, Config{}) // 2026-01-01 00:00 UTC
	pushTenants(t, a, true, meter("t1"), meter("t2"))
	day := uint32(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 86400)
	for i, o := range []OpenOptions{
		{Tenant: "t1", Class: "audio", Session: "s1", User: "alice"},
		{Tenant: "t1", Class: "audio", Session: "s2", User: "alice"},
		{Tenant: "t1", Class: "video-hd", Session: "s3", User: "bob"},
		{Tenant: "t2", Class: "audio", Session: "s4", User: "alice"},
		{Tenant: "t2", Class: "audio", Session: "s5"},
	} {
		if res, err := a.OpenWith(o); err != nil || !res.Admitted {
			t.Fatalf("open %d: %+v %v", i, res, err)
		}
	}
	got := usersOf(cutUserSets(a))
	want := map[string][]uint64{
		"t1/" + itoa(int(day)): sortedHashes("alice", "bob"),
		"t2/" + itoa(int(day)): sortedHashes("alice"),
	}
	if !mapsEqual(got, want) {
		t.Fatalf("users %v, want %v", got, want)
	}
	// The same users again that day: nothing more to ship.
	a.Close("s1")
	a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "s6", User: "alice"})
	if sets := cutUserSets(a); len(sets) != 0 {
		t.Fatalf("alice again the same day shipped %v", sets)
	}
	// The next UTC day: the users of the sessions still open are active on
	// it too (alice on s2 and s6, bob on s3, alice on t2).
	clk.advance(24 * time.Hour)
	got = usersOf(cutUserSets(a))
	want = map[string][]uint64{
		"t1/" + itoa(int(day+1)): sortedHashes("alice", "bob"),
		"t2/" + itoa(int(day+1)): sortedHashes("alice"),
	}
	if !mapsEqual(got, want) {
		t.Fatalf("users of the next day %v, want %v", got, want)
	}
	if ss := a.Sessions("t1"); ss[0].User != "alice" {
		t.Errorf("sessions list: %+v", ss[0])
	}
}

func sortedHashes(users ...string) []uint64 {
	var out []uint64
	for _, u := range users {
		out = append(out, UserHash(u))
	}
	slices.Sort(out)
	return out
}

func mapsEqual(a, b map[string][]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestUsersPersisted: users not yet cut survive a crash (the state file),
// and so do the sessions' users (the next day counts them again).
func TestUsersPersisted(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "s1", User: "carol"})
	mustPersist(t, a) // then kill -9, before the cut
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	if got := usersOf(cutUserSets(b)); len(got) != 1 {
		t.Fatalf("after the restart %v, want carol", got)
	}
	clk.advance(24 * time.Hour)
	if got := usersOf(cutUserSets(b)); len(got) != 1 {
		t.Fatalf("the next day %v, want carol of the restored session", got)
	}
}

// TestBadUser: an over-long or malformed user id is refused, nothing
// stored, through the Go API, the HTTP API and a reconcile.
func TestBadUser(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	long := strings.Repeat("u", maxSessionID+1)
	if _, err := a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "s", User: long}); err == nil {
		t.Fatal("an over-long user was accepted")
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	for _, body := range []string{
		`{"tenant":"t1","class":"audio","session":"s","user":"` + long + `"}`,
		`{"tenant":"t1","class":"audio","session":"s","user":"has space"}`,
	} {
		resp, err := http.Post(srv.URL+"/v1/sessions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("bad user: %d, want 400", resp.StatusCode)
		}
	}
	if _, err := a.ReconcileScoped(ReconcileScope{}, []SessionSpec{{Tenant: "t1", Class: "audio", Session: "r", User: long}}); err == nil {
		t.Error("a reconcile with an over-long user was accepted")
	}
	if st := a.Status(); st.OpenSessions != 0 {
		t.Errorf("%d sessions stored", st.OpenSessions)
	}
	if sets := cutUserSets(a); len(sets) != 0 {
		t.Errorf("users stored: %v", sets)
	}
}

// TestUsersInBatches: the users go out with the batches, and a FullState
// carries those of the unacknowledged ones.
func TestUsersInBatches(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	a.OpenWith(OpenOptions{Tenant: "t1", Class: "audio", Session: "s1", User: "dave"})
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.cutLocked(a.now()) {
		t.Fatal("nothing cut")
	}
	b := a.unacked[len(a.unacked)-1].msg
	if len(b.Users) != 1 || b.Users[0].Hashes[0] != UserHash("dave") {
		t.Fatalf("batch users %+v", b.Users)
	}
	if fs := a.fullStateLocked(); len(fs.Users) != 1 {
		t.Fatalf("full state users %+v", fs.Users)
	}
}
