// Package livekittest holds what tests of the LiveKit connector need from
// LiveKit's side, made with LiveKit's own library: webhooks signed as
// livekit-server signs them, and an in-process RoomService behind the
// protocol module's generated Twirp server, which checks every call's token
// as the server does.
package livekittest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	lk "github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/protojson"
	"github.com/livekit/protocol/webhook"
)

// Sign returns the Authorization header livekit-server sends with body: a
// JWT of key, signed with secret, carrying the body's SHA-256
// (webhook/url_notifier.go).
func Sign(key, secret string, body []byte) (string, error) {
	sum := sha256.Sum256(body)
	return auth.NewAccessToken(key, secret).SetValidFor(5 * time.Minute).
		SetSha256(base64.StdEncoding.EncodeToString(sum[:])).ToJWT()
}

// Post encodes ev as livekit-server does (protojson), signs it and POSTs it
// to url; it returns the status code and body of the answer.
func Post(url, key, secret string, ev *lk.WebhookEvent) (int, string, error) {
	body, err := protojson.Marshal(ev)
	if err != nil {
		return 0, "", err
	}
	tok, err := Sign(key, secret, body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", webhook.ContentType)
	req.Header.Set("Authorization", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// RoomService is an in-process LiveKit RoomService: ListRooms,
// ListParticipants and RemoveParticipant, over rooms the test sets. Calls
// must carry a token of its key and secret with the grants livekit-server
// asks for (roomList; roomAdmin of the room).
type RoomService struct {
	lk.RoomService // the other calls are not served (they panic)
	key, secret    string
	srv            *httptest.Server

	mu      sync.Mutex
	rooms   map[string][]*lk.ParticipantInfo
	removed []string
}

// NewRoomService serves a RoomService on a loopback port; Close stops it.
func NewRoomService(key, secret string) *RoomService {
	rs := &RoomService{key: key, secret: secret, rooms: map[string][]*lk.ParticipantInfo{}}
	ts := lk.NewRoomServiceServer(rs)
	rs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), headersKey{}, r.Header)))
	}))
	return rs
}

type headersKey struct{}

// URL is the server's URL (the agent's --livekit-url).
func (s *RoomService) URL() string { return s.srv.URL }

// Close stops the server: calls fail from then on.
func (s *RoomService) Close() { s.srv.Close() }

// SetRoom sets the participants of a room (none: the room is gone).
func (s *RoomService) SetRoom(name string, ps ...*lk.ParticipantInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ps) == 0 {
		delete(s.rooms, name)
		return
	}
	s.rooms[name] = ps
}

// Removed lists the participants removed, as room/identity.
func (s *RoomService) Removed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.removed)
}

func (s *RoomService) authorize(ctx context.Context, roomName string) error {
	h, _ := ctx.Value(headersKey{}).(http.Header)
	v, err := auth.ParseAPIToken(strings.TrimPrefix(h.Get("Authorization"), "Bearer "))
	if err != nil {
		return err
	}
	if v.APIKey() != s.key {
		return fmt.Errorf("unknown API key %q", v.APIKey())
	}
	_, grants, err := v.Verify(s.secret)
	if err != nil {
		return err
	}
	if roomName == "" && !grants.Video.RoomList || roomName != "" && (!grants.Video.RoomAdmin || grants.Video.Room != roomName) {
		return fmt.Errorf("grants %+v do not allow this call", grants.Video)
	}
	return nil
}

// ListRooms implements lk.RoomService.
func (s *RoomService) ListRooms(ctx context.Context, _ *lk.ListRoomsRequest) (*lk.ListRoomsResponse, error) {
	if err := s.authorize(ctx, ""); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &lk.ListRoomsResponse{}
	for name := range s.rooms {
		out.Rooms = append(out.Rooms, &lk.Room{Name: name, Sid: "RM_" + name})
	}
	return out, nil
}

// ListParticipants implements lk.RoomService.
func (s *RoomService) ListParticipants(ctx context.Context, req *lk.ListParticipantsRequest) (*lk.ListParticipantsResponse, error) {
	if err := s.authorize(ctx, req.Room); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &lk.ListParticipantsResponse{Participants: s.rooms[req.Room]}, nil
}

// RemoveParticipant implements lk.RoomService: it records the removal and
// drops the participant from its room.
func (s *RoomService) RemoveParticipant(ctx context.Context, req *lk.RoomParticipantIdentity) (*lk.RemoveParticipantResponse, error) {
	if err := s.authorize(ctx, req.Room); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, req.Room+"/"+req.Identity)
	s.rooms[req.Room] = slices.DeleteFunc(s.rooms[req.Room], func(p *lk.ParticipantInfo) bool { return p.Identity == req.Identity })
	return &lk.RemoveParticipantResponse{}, nil
}
