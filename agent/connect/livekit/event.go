// Package livekit is the agent's connector for LiveKit. LiveKit has no
// synchronous join hook, so admission happens where the application mints
// the join token: its token endpoint reserves the session on the agent
// first (POST /v1/sessions with a ttl_seconds, the session id SessionID(room,
// identity), source "livekit"), and mints no token when refused. LiveKit's
// signed webhooks, served at POST /hooks/livekit, then confirm the
// reservation (participant_joined: the session stops being TTL-bound and
// counts from the join), close it (participant_left,
// participant_connection_aborted, room_finished) and class it by the room's
// largest published video track (track_published, track_unpublished). With
// a LiveKit URL, RoomService reconciles the connector's sessions and
// removes participants that joined without a reservation while their
// tenant's strict plan refuses them.
//
// Webhooks are verified with LiveKit's own library (webhook.Receive with an
// auth.NewSimpleKeyProvider: a JWT signed with the API secret carrying the
// body's SHA-256), and decoded as webhook.ReceiveWebhookEvent decodes them.
package livekit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	lk "github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/protojson"

	"github.com/headroom-rtc/headroom/plans"
)

// MaxEventBody bounds a webhook body (LiveKit's are a few KiB; a room's
// full participant list is not sent in them).
const MaxEventBody = 1 << 20

// ErrBadEvent: a verified webhook whose body is not a LiveKit event the
// connector can use.
var ErrBadEvent = errors.New("bad LiveKit webhook event")

// The events the connector acts on (webhook.Event* in LiveKit's library).
const (
	evRoomFinished     = "room_finished"
	evJoined           = "participant_joined"
	evLeft             = "participant_left"
	evAborted          = "participant_connection_aborted"
	evTrackPublished   = "track_published"
	evTrackUnpublished = "track_unpublished"
	maxRoomOrIdentity  = 1 << 10
	maxTracksPerEvent  = 1 << 10
)

// DecodeEvent decodes a webhook body as webhook.ReceiveWebhookEvent does
// (protojson, unknown fields discarded) and checks that an event the
// connector acts on names what it needs: a room (name) for every one, a
// participant (identity) for participant events, a track for track events.
// Other events decode and are ignored by the caller.
func DecodeEvent(data []byte) (*lk.WebhookEvent, error) {
	if len(data) > MaxEventBody {
		return nil, fmt.Errorf("%w: body of %d bytes (at most %d)", ErrBadEvent, len(data), MaxEventBody)
	}
	var ev lk.WebhookEvent
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, AllowPartial: true}).Unmarshal(data, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if ev.Event == "" {
		return nil, fmt.Errorf("%w: no event name", ErrBadEvent)
	}
	switch ev.Event {
	case evRoomFinished, evJoined, evLeft, evAborted, evTrackPublished, evTrackUnpublished:
	default:
		return &ev, nil
	}
	if ev.Room.GetName() == "" {
		return nil, fmt.Errorf("%w: %s without a room name", ErrBadEvent, ev.Event)
	}
	if len(ev.Room.GetName()) > maxRoomOrIdentity {
		return nil, fmt.Errorf("%w: room name of %d bytes", ErrBadEvent, len(ev.Room.GetName()))
	}
	switch ev.Event {
	case evJoined, evLeft, evAborted, evTrackPublished, evTrackUnpublished:
		if ev.Participant.GetIdentity() == "" {
			return nil, fmt.Errorf("%w: %s without a participant identity", ErrBadEvent, ev.Event)
		}
		if len(ev.Participant.GetIdentity()) > maxRoomOrIdentity {
			return nil, fmt.Errorf("%w: identity of %d bytes", ErrBadEvent, len(ev.Participant.GetIdentity()))
		}
		if len(ev.Participant.GetTracks()) > maxTracksPerEvent {
			return nil, fmt.Errorf("%w: %d tracks", ErrBadEvent, len(ev.Participant.GetTracks()))
		}
	}
	if (ev.Event == evTrackPublished || ev.Event == evTrackUnpublished) && ev.Track.GetSid() == "" {
		return nil, fmt.Errorf("%w: %s without a track sid", ErrBadEvent, ev.Event)
	}
	return &ev, nil
}

// SessionID is the agent session of participant identity in room: both
// path-escaped, joined by '/' (neither can then hold the separator), or,
// when that is longer than a session id may be, "lk-" and the first 32 hex
// digits of the SHA-256 of room, a NUL and identity. A token endpoint in
// another language builds the same id with its URL path escaping (RFC 3986:
// every byte but unreserved characters and !$&'()*+,;=:@ as %XX).
func SessionID(room, identity string) string {
	id := url.PathEscape(room) + "/" + url.PathEscape(identity)
	if len(id) <= plans.MaxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(room + "\x00" + identity))
	return "lk-" + hex.EncodeToString(sum[:16])
}

// parseSessionID returns the room of an id SessionID made, when it is not
// hashed.
func parseSessionID(id string) (room, identity string, ok bool) {
	r, i, found := strings.Cut(id, "/")
	if !found {
		return "", "", false
	}
	room, err1 := url.PathUnescape(r)
	identity, err2 := url.PathUnescape(i)
	return room, identity, err1 == nil && err2 == nil
}
