package emqx

import (
	"os"
	"testing"
)

// The decoders never panic, and what they accept holds their promises.
func FuzzDecodeEvent(f *testing.F) {
	for _, n := range []string{"client_connected.json", "client_disconnected.json", "auth.json"} {
		b, err := os.ReadFile("testdata/" + n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"event":"client.disconnected","clientid":"x","disconnected_at":1,"reason":"takenover"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := DecodeEvent(b); err == nil {
			if e.ClientID == "" || (e.Event == "client.connected") == (e.Event == "client.disconnected") ||
				e.Event == "client.connected" && e.ConnectedAt <= 0 || e.Event == "client.disconnected" && e.DisconnectedAt <= 0 {
				t.Fatalf("accepted %+v", e)
			}
		}
		if r, err := DecodeAuth(b); err == nil && r.ClientID == "" {
			t.Fatalf("accepted an auth request without a client id: %+v", r)
		}
	})
}
