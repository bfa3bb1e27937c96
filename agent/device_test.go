package agent

import (
	"testing"

	"github.com/headroom-rtc/headroom/wire"
)

// A server of before the device class sends a Welcome without Classes and
// drops device entries: the agent refuses device sessions while it streams
// to one (class-unsupported), and admits them again once a server that lists
// the class welcomes it. Other classes are admitted throughout.
func TestDeviceClassNeedsAServerThatCountsIt(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{}) // a server of before
	waitFor(t, "stream live", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.streamLive()
	})
	waitFor(t, "device refused", func() bool {
		res, err := a.Open("t1", "device", "d1", 0)
		return err == nil && !res.Admitted && res.Reason == ReasonClassUnsupported
	})
	if res, err := a.Open("t1", "audio", "s1", 0); err != nil || !res.Admitted {
		t.Fatalf("audio beside an old server: %+v %v", res, err)
	}
	fc.c.Close()

	fc = srv.accept()
	fc.send(&wire.Welcome{Classes: []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai", "device"}})
	waitFor(t, "device admitted by a server that counts it", func() bool {
		res, err := a.Open("t1", "device", "d1", 0)
		return err == nil && res.Admitted
	})
	if st := a.Status(); st.OpenSessions != 2 {
		t.Fatalf("open %d, want 2 (s1 and d1)", st.OpenSessions)
	}
}
