package livekit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/livekit/protocol/auth"
	lk "github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/webhook"
	"github.com/twitchtv/twirp"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/connect"
	"github.com/headroom-rtc/headroom/plans"
)

// Name is the connector's name: the source of its sessions.
const Name = "livekit"

// Defaults and bounds.
const (
	DefaultReconcileInterval = 30 * time.Second
	DefaultTenantAttribute   = "tenant"
	// seenEvents is how many event ids are remembered for deduplication.
	seenEvents = 4096
	// maxTombs bounds the participants remembered as gone (so that a
	// joined arriving after its left is dropped); they are forgotten after
	// tombLife.
	maxTombs = 10_000
	tombLife = 10 * time.Minute
)

// Config configures the connector.
type Config struct {
	// APIKey and APISecret (required) are the LiveKit server's: webhooks
	// are signed with them, RoomService calls authorised with them.
	APIKey, APISecret string
	// URL (optional) of the LiveKit server (http(s):// or ws(s)://): turns
	// on the RoomService reconcile every ReconcileInterval (optional,
	// default DefaultReconcileInterval) and the removal of participants
	// that joined without a reservation while their tenant's strict plan
	// refuses them.
	URL               string
	ReconcileInterval time.Duration
	// Tenant (optional, default attr:tenant) derives the tenant of a
	// participant that joined without a reservation (its attributes are the
	// rules' arguments, the room name their name).
	Tenant connect.Rules
	// HTTPClient (optional, default a 10 s timeout) for RoomService.
	HTTPClient *http.Client
	// Logger (optional, default a null logger).
	Logger hclog.Logger
}

// Connector serves LiveKit's webhooks for one agent. It is safe for
// concurrent use; events are handled one at a time, in arrival order.
type Connector struct {
	cfg   Config
	h     *agent.Connector
	log   hclog.Logger
	keys  auth.KeyProvider
	rooms lk.RoomService // nil without URL

	mu       sync.Mutex
	seen     map[string]bool
	seenRing []string
	seenNext int
	parts    map[string]*part     // session id → participant
	byRoom   map[string]*room     // room name → what is known of it
	tombs    map[string]tomb      // room/identity/sid → when it left
	tombRing []string             // insertion order of tombs
	finished map[string]time.Time // room sids finished
	removing sync.WaitGroup
}

type part struct {
	room, identity, sid string
	agent               bool // kind AGENT: class ai
}

type room struct {
	tracks  map[string]uint64 // video track sid → pixels
	members map[string]bool   // session ids
}

type tomb struct {
	at time.Time
}

// New makes the connector of agent a. It picks up the sessions of source
// livekit the agent restored from its state.
func New(a *agent.Agent, cfg Config) (*Connector, error) {
	if cfg.APIKey == "" || cfg.APISecret == "" {
		return nil, errors.New("livekit: the API key and secret are required (webhooks are verified with them)")
	}
	h, err := a.Connector(Name)
	if err != nil {
		return nil, err
	}
	if len(cfg.Tenant) == 0 {
		cfg.Tenant, _ = connect.ParseRules("arg", DefaultTenantAttribute)
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	c := &Connector{
		cfg: cfg, h: h, log: cfg.Logger, keys: auth.NewSimpleKeyProvider(cfg.APIKey, cfg.APISecret),
		seen: map[string]bool{}, seenRing: make([]string, seenEvents),
		parts: map[string]*part{}, byRoom: map[string]*room{}, tombs: map[string]tomb{}, finished: map[string]time.Time{},
	}
	if cfg.URL != "" {
		u, err := httpURL(cfg.URL)
		if err != nil {
			return nil, err
		}
		c.rooms = lk.NewRoomServiceProtobufClient(u, cfg.HTTPClient)
	}
	for _, s := range h.Sessions() {
		if r, ident, ok := parseSessionID(s.Session); ok {
			c.addPart(s.Session, &part{room: r, identity: ident, agent: s.Class == plans.AI.String()})
		}
	}
	return c, nil
}

// httpURL turns a LiveKit URL (ws:// as clients use it) into RoomService's.
func httpURL(u string) (string, error) {
	switch {
	case strings.HasPrefix(u, "ws://"):
		u = "http://" + strings.TrimPrefix(u, "ws://")
	case strings.HasPrefix(u, "wss://"):
		u = "https://" + strings.TrimPrefix(u, "wss://")
	case strings.HasPrefix(u, "http://"), strings.HasPrefix(u, "https://"):
	default:
		return "", fmt.Errorf("livekit URL %q: want http(s):// or ws(s)://", u)
	}
	return strings.TrimRight(u, "/"), nil
}

// ServeHTTP serves POST /hooks/livekit. A webhook whose signature does not
// verify (none, another key, a body that is not the one signed) is 401 and
// changes nothing; a verified body that is not an event 400; otherwise 200.
func (c *Connector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "LiveKit webhooks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	c.h.Hook()
	defer c.h.Answered(time.Now())
	r.Body = http.MaxBytesReader(w, r.Body, MaxEventBody)
	data, err := webhook.Receive(r, c.keys)
	if err != nil {
		c.h.BadRequest()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, fmt.Sprintf("webhook body over %d bytes", MaxEventBody), http.StatusRequestEntityTooLarge)
			return
		}
		c.log.Warn("LiveKit webhook refused: its signature does not verify", "remote", r.RemoteAddr, "error", err)
		http.Error(w, "webhook not verified: "+err.Error(), http.StatusUnauthorized)
		return
	}
	ev, err := DecodeEvent(data)
	if err != nil {
		c.h.BadRequest()
		c.log.Warn("LiveKit webhook refused", "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	dup := ev.Id != "" && c.seen[ev.Id]
	if !dup {
		c.remember(ev.Id)
		c.handleLocked(ev)
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if dup {
		fmt.Fprintln(w, `{"ok":true,"duplicate":true}`)
		return
	}
	fmt.Fprintln(w, `{"ok":true}`)
}

// remember notes an event id, forgetting the oldest past seenEvents.
func (c *Connector) remember(id string) {
	if id == "" {
		return
	}
	if old := c.seenRing[c.seenNext]; old != "" {
		delete(c.seen, old)
	}
	c.seenRing[c.seenNext] = id
	c.seenNext = (c.seenNext + 1) % len(c.seenRing)
	c.seen[id] = true
}

func (c *Connector) handleLocked(ev *lk.WebhookEvent) {
	switch ev.Event {
	case evJoined:
		c.joinedLocked(ev)
	case evLeft, evAborted:
		c.leftLocked(ev)
	case evRoomFinished:
		c.finishedLocked(ev)
	case evTrackPublished, evTrackUnpublished:
		c.trackLocked(ev)
	}
}

func tombKey(roomName, identity, sid string) string {
	return roomName + "\x00" + identity + "\x00" + sid
}

// joinedLocked confirms the participant's reservation, or counts a
// participant that joined without one.
func (c *Connector) joinedLocked(ev *lk.WebhookEvent) {
	roomName, p := ev.Room.GetName(), ev.Participant
	id := SessionID(roomName, p.GetIdentity())
	if _, gone := c.tombs[tombKey(roomName, p.GetIdentity(), p.GetSid())]; gone {
		c.log.Debug("LiveKit participant_joined after its participant_left: dropped", "room", roomName, "identity", p.GetIdentity())
		return
	}
	if _, gone := c.finished[ev.Room.GetSid()]; gone && ev.Room.GetSid() != "" {
		c.log.Debug("LiveKit participant_joined of a finished room: dropped", "room", roomName)
		return
	}
	a := c.h.Agent()
	if pt := c.parts[id]; pt != nil && a.Keepalive(id) == nil {
		pt.sid = p.GetSid() // a fast reconnect of the same identity: the session goes on
		return
	}
	pt := &part{room: roomName, identity: p.GetIdentity(), sid: p.GetSid(), agent: p.GetKind() == lk.ParticipantInfo_AGENT}
	cls := c.classLocked(roomName, pt)
	switch err := a.Confirm(id, Name); {
	case err == nil:
		c.h.Admitted()
		if err := a.SetClass(id, cls.String()); err != nil {
			c.log.Warn("LiveKit: cannot class a confirmed session", "session", id, "error", err)
		}
		c.addPart(id, pt)
		c.log.Debug("LiveKit reservation confirmed", "session", id, "class", cls)
		return
	case !errors.Is(err, agent.ErrNotReservation):
		c.log.Warn("LiveKit participant_joined: cannot confirm", "session", id, "error", err)
		return
	}
	// No reservation: the participant is in the room all the same, so it is
	// counted; admission only says whether it should be.
	tenant, err := c.cfg.Tenant.Tenant(connect.Input{Args: p.GetAttributes(), Name: roomName})
	if err != nil {
		c.h.Refuse(agent.ReasonUnmappedTenant)
		c.log.Warn("LiveKit participant joined without a reservation and no tenant could be derived: not counted",
			"room", roomName, "identity", p.GetIdentity(), "rule", c.cfg.Tenant.String(), "why", err)
		return
	}
	o := agent.OpenOptions{Tenant: tenant, Class: cls.String(), Session: id, User: agent.UserOf(p.GetIdentity())}
	res, err := c.h.Open(o)
	if err != nil {
		c.log.Warn("LiveKit participant joined without a reservation: cannot count it", "session", id, "error", err)
		return
	}
	c.addPart(id, pt)
	if res.Admitted {
		c.log.Info("LiveKit participant joined without a reservation: admitted", "session", id, "tenant", tenant)
		return
	}
	o.Force = true
	if _, err := c.h.Open(o); err != nil {
		c.log.Warn("LiveKit participant joined without a reservation: cannot count it", "session", id, "error", err)
		return
	}
	// A strict plan admits nothing beyond its shares: a participant that
	// admission refuses (at the ceiling, or no share to be had in time) is
	// removed. Soft and meter plans keep it (metered, as overage).
	strict := a.TenantMode(tenant) == string(plans.Strict)
	if strict && c.rooms != nil {
		c.log.Warn("LiveKit participant joined without a reservation and its tenant's strict plan refuses it: removing it",
			"session", id, "tenant", tenant, "reason", res.Reason)
		c.removeAsync(roomName, p.GetIdentity())
		return
	}
	c.log.Warn("LiveKit participant joined without a reservation that admission refuses: counted (metering never misses it)",
		"session", id, "tenant", tenant, "reason", res.Reason, "removal", c.rooms != nil && strict)
}

// leftLocked closes the participant's session, unless the event is about
// an earlier connection of an identity that has reconnected since.
func (c *Connector) leftLocked(ev *lk.WebhookEvent) {
	roomName, p := ev.Room.GetName(), ev.Participant
	id := SessionID(roomName, p.GetIdentity())
	c.tombLocked(tombKey(roomName, p.GetIdentity(), p.GetSid()))
	if pt := c.parts[id]; pt != nil && pt.sid != "" && p.GetSid() != "" && pt.sid != p.GetSid() {
		c.log.Debug("LiveKit participant_left of an earlier connection: the identity is back", "session", id)
		return
	}
	c.closeLocked(id, ev.Event)
}

func (c *Connector) closeLocked(id, why string) {
	if d, err := c.h.Agent().Close(id); err == nil {
		c.log.Debug("LiveKit session closed", "session", id, "event", why, "duration", d)
	}
	if pt := c.parts[id]; pt != nil {
		if r := c.byRoom[pt.room]; r != nil {
			delete(r.members, id)
		}
		delete(c.parts, id)
	}
}

// finishedLocked closes every session of the room.
func (c *Connector) finishedLocked(ev *lk.WebhookEvent) {
	roomName := ev.Room.GetName()
	if sid := ev.Room.GetSid(); sid != "" {
		c.finished[sid] = time.Now()
		for s, at := range c.finished {
			if time.Since(at) > tombLife {
				delete(c.finished, s)
			}
		}
	}
	r := c.byRoom[roomName]
	if r == nil {
		return
	}
	for id := range r.members {
		if pt := c.parts[id]; pt != nil {
			c.tombLocked(tombKey(pt.room, pt.identity, pt.sid))
		}
		c.closeLocked(id, ev.Event)
	}
	delete(c.byRoom, roomName)
}

// trackLocked follows the room's video tracks and classes its
// participants by the largest.
func (c *Connector) trackLocked(ev *lk.WebhookEvent) {
	roomName, tr := ev.Room.GetName(), ev.Track
	r := c.roomLocked(roomName)
	before := pixelsOf(r)
	if ev.Event == evTrackPublished && tr.GetType() == lk.TrackType_VIDEO {
		r.tracks[tr.GetSid()] = uint64(tr.GetWidth()) * uint64(tr.GetHeight())
	} else {
		delete(r.tracks, tr.GetSid())
	}
	if pixelsOf(r) != before {
		c.reclassLocked(roomName)
	}
}

// reclassLocked sets every participant of the room to the room's class.
func (c *Connector) reclassLocked(roomName string) {
	r := c.byRoom[roomName]
	if r == nil {
		return
	}
	a := c.h.Agent()
	for id := range r.members {
		pt := c.parts[id]
		if pt == nil {
			continue
		}
		if err := a.SetClass(id, c.classLocked(roomName, pt).String()); err != nil && !errors.Is(err, agent.ErrUnknownSession) {
			c.log.Warn("LiveKit: cannot class a session", "session", id, "error", err)
		}
	}
}

// classLocked is DESIGN's pixel rule over the room's largest video track:
// webhooks say what is published, not who subscribes to what, so every
// participant is taken to receive the room's largest video (audio when the
// room has none). An agent participant is ai.
func (c *Connector) classLocked(roomName string, pt *part) plans.Class {
	if pt.agent {
		return plans.AI
	}
	return plans.VideoClassForPixels(pixelsOf(c.byRoom[roomName]))
}

func pixelsOf(r *room) uint64 {
	var px uint64
	if r != nil {
		for _, p := range r.tracks {
			px = max(px, p)
		}
	}
	return px
}

func (c *Connector) roomLocked(name string) *room {
	r := c.byRoom[name]
	if r == nil {
		r = &room{tracks: map[string]uint64{}, members: map[string]bool{}}
		c.byRoom[name] = r
	}
	return r
}

func (c *Connector) addPart(id string, pt *part) {
	c.parts[id] = pt
	c.roomLocked(pt.room).members[id] = true
}

// tombLocked remembers a participant as gone, forgetting the oldest past
// maxTombs and those older than tombLife.
func (c *Connector) tombLocked(key string) {
	now := time.Now()
	for len(c.tombRing) > 0 && (len(c.tombRing) >= maxTombs || now.Sub(c.tombs[c.tombRing[0]].at) > tombLife) {
		delete(c.tombs, c.tombRing[0])
		c.tombRing = c.tombRing[1:]
	}
	if _, ok := c.tombs[key]; !ok {
		c.tombRing = append(c.tombRing, key)
	}
	c.tombs[key] = tomb{at: now}
}

// authorised returns ctx carrying a RoomService token for roomName ("" for
// ListRooms).
func (c *Connector) authorised(ctx context.Context, roomName string) (context.Context, error) {
	g := &auth.VideoGrant{RoomList: roomName == "", RoomAdmin: roomName != "", Room: roomName}
	tok, err := auth.NewAccessToken(c.cfg.APIKey, c.cfg.APISecret).SetVideoGrant(g).SetValidFor(time.Minute).ToJWT()
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	return twirp.WithHTTPRequestHeaders(ctx, h)
}

// removeAsync removes a participant through RoomService, off the webhook's
// path.
func (c *Connector) removeAsync(roomName, identity string) {
	c.removing.Add(1)
	go func() {
		defer c.removing.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		actx, err := c.authorised(ctx, roomName)
		if err == nil {
			_, err = c.rooms.RemoveParticipant(actx, &lk.RoomParticipantIdentity{Room: roomName, Identity: identity})
		}
		if err != nil {
			c.log.Error("LiveKit RemoveParticipant failed; the participant stays counted", "room", roomName, "identity", identity, "error", err)
			return
		}
		c.log.Info("LiveKit participant removed (joined without a reservation; its strict plan refused it)", "room", roomName, "identity", identity)
	}()
}

// Run reconciles every ReconcileInterval until ctx ends; without a URL it
// returns at once. It waits for removals in flight before returning.
func (c *Connector) Run(ctx context.Context) {
	defer c.removing.Wait()
	if c.rooms == nil {
		return
	}
	t := time.NewTicker(c.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		c.ReconcileNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconcileNow lists every room's participants through RoomService and
// reconciles the connector's sessions with them: a listed participant that
// holds a reservation is confirmed, one without a session is counted (its
// tenant by the rules), every one is classed by its room's largest video
// track (from the tracks RoomService lists), and a session whose
// participant is not listed is closed; reservations are left to their TTL.
// A listing that fails changes nothing.
func (c *Connector) ReconcileNow(ctx context.Context) (agent.ReconcileResult, error) {
	if c.rooms == nil {
		return agent.ReconcileResult{}, errors.New("livekit: no URL, no RoomService")
	}
	began := time.Now()
	listing, err := c.list(ctx)
	if err != nil {
		c.h.ReconcileFailed(err)
		c.log.Warn("LiveKit RoomService listing failed; nothing reconciled", "error", err)
		return agent.ReconcileResult{}, err
	}
	a := c.h.Agent()
	open := map[string]agent.SessionInfo{}
	for _, s := range a.Sessions("") {
		open[s.Session] = s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var list []agent.SessionSpec
	var adopt []string
	for _, rp := range listing {
		roomName, p := rp.room.GetName(), rp.p
		id := SessionID(roomName, p.GetIdentity())
		if t, gone := c.tombs[tombKey(roomName, p.GetIdentity(), p.GetSid())]; gone && !t.at.Before(began) {
			continue // left while the listing ran
		}
		r := c.roomLocked(roomName)
		r.tracks = rp.tracks
		pt := &part{room: roomName, identity: p.GetIdentity(), sid: p.GetSid(), agent: p.GetKind() == lk.ParticipantInfo_AGENT}
		tenant := ""
		if s, ok := open[id]; ok {
			tenant = s.Tenant
			if s.Source != Name || s.TTLSeconds > 0 {
				adopt = append(adopt, id)
			}
		} else if tenant, err = c.cfg.Tenant.Tenant(connect.Input{Args: p.GetAttributes(), Name: roomName}); err != nil {
			c.log.Warn("LiveKit participant listed by RoomService with no session and no tenant: not counted", "session", id, "why", err)
			continue
		}
		// When it joined: a participant the agent does not hold (its join
		// was lost, or the agent restarted) counts from then.
		var joined time.Time
		if ms := p.GetJoinedAtMs(); ms > 0 {
			joined = time.UnixMilli(ms)
		} else if s := p.GetJoinedAt(); s > 0 {
			joined = time.Unix(s, 0)
		}
		list = append(list, agent.SessionSpec{Tenant: tenant, Class: c.classLocked(roomName, pt).String(), Session: id, StartedAt: joined})
		c.addPart(id, pt)
	}
	for _, id := range adopt {
		if err := a.Confirm(id, Name); err == nil {
			c.log.Info("LiveKit participant found joined by RoomService: its reservation is confirmed", "session", id)
		}
	}
	res, err := c.h.Reconcile(agent.ReconcileScope{SeenBefore: began, KeepTTL: true}, list)
	if err != nil {
		c.log.Error("LiveKit reconcile refused", "error", err)
		return res, err
	}
	for _, id := range res.Ended() {
		if pt := c.parts[id]; pt != nil {
			if r := c.byRoom[pt.room]; r != nil {
				delete(r.members, id)
			}
			delete(c.parts, id)
		}
	}
	if len(res.Opened) > 0 || len(res.Ended()) > 0 {
		c.log.Info("LiveKit reconcile", "listed", len(list), "opened", len(res.Opened)-len(res.Reclassed), "closed", len(res.Ended()))
	}
	return res, nil
}

type listed struct {
	room   *lk.Room
	p      *lk.ParticipantInfo
	tracks map[string]uint64 // the room's video tracks, from every participant's
}

// list reads every room's participants.
func (c *Connector) list(ctx context.Context) ([]listed, error) {
	actx, err := c.authorised(ctx, "")
	if err != nil {
		return nil, err
	}
	rooms, err := c.rooms.ListRooms(actx, &lk.ListRoomsRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListRooms: %w", err)
	}
	var out []listed
	for _, r := range rooms.GetRooms() {
		actx, err := c.authorised(ctx, r.GetName())
		if err != nil {
			return nil, err
		}
		ps, err := c.rooms.ListParticipants(actx, &lk.ListParticipantsRequest{Room: r.GetName()})
		if err != nil {
			return nil, fmt.Errorf("ListParticipants %s: %w", r.GetName(), err)
		}
		tracks := map[string]uint64{}
		for _, p := range ps.GetParticipants() {
			for _, t := range p.GetTracks() {
				if t.GetType() == lk.TrackType_VIDEO {
					tracks[t.GetSid()] = uint64(t.GetWidth()) * uint64(t.GetHeight())
				}
			}
		}
		for _, p := range ps.GetParticipants() {
			if p.GetIdentity() == "" {
				continue
			}
			out = append(out, listed{room: r, p: p, tracks: tracks})
		}
	}
	return out, nil
}

// WaitRemovals waits for the RemoveParticipant calls in flight (tests).
func (c *Connector) WaitRemovals() { c.removing.Wait() }
