package livekit

import (
	"testing"

	"github.com/livekit/protocol/utils/protojson"
)

// FuzzDecodeEvent: DecodeEvent never panics; an event it accepts that the
// connector acts on names its room (and participant, and track), within
// bounds, and decodes the same again from its re-encoding. The seeds
// (testdata/fuzz/FuzzDecodeEvent) are events as protojson writes them for
// livekit-server.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"event":"participant_joined","room":{"sid":"RM_1","name":"standup"},"participant":{"sid":"PA_1","identity":"alice","state":"ACTIVE","attributes":{"tenant":"acme"}},"id":"EV_1","createdAt":"1764720000"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := DecodeEvent(body)
		if err != nil {
			return
		}
		switch ev.Event {
		case evJoined, evLeft, evAborted, evTrackPublished, evTrackUnpublished:
			if ev.Participant.GetIdentity() == "" || len(ev.Participant.GetIdentity()) > maxRoomOrIdentity {
				t.Fatalf("accepted %s with identity %q", ev.Event, ev.Participant.GetIdentity())
			}
			fallthrough
		case evRoomFinished:
			if ev.Room.GetName() == "" || len(ev.Room.GetName()) > maxRoomOrIdentity {
				t.Fatalf("accepted %s with room %q", ev.Event, ev.Room.GetName())
			}
		}
		again, err := protojson.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		ev2, err := DecodeEvent(again)
		if err != nil || ev2.Event != ev.Event || ev2.Id != ev.Id || ev2.Room.GetName() != ev.Room.GetName() ||
			ev2.Participant.GetIdentity() != ev.Participant.GetIdentity() {
			t.Fatalf("re-encoded %s: %v %v", again, ev2, err)
		}
		if id := SessionID(ev.Room.GetName(), ev.Participant.GetIdentity()); len(id) > 128 || id == "" {
			t.Fatalf("session id %q", id)
		}
	})
}
