// Command livekit-token-server is an application's LiveKit token endpoint
// that admits through the headroom agent before it mints a join token:
// LiveKit has no synchronous join hook, so the token is where admission
// happens. A refused admission means no token.
//
//	LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... livekit-token-server \
//	    -addr 127.0.0.1:8088 -agent http://127.0.0.1:9380 -livekit-url ws://127.0.0.1:7880
//	curl '127.0.0.1:8088/token?tenant=acme&room=standup&identity=alice&class=video-hd'
//	# {"token":"eyJ...","url":"ws://127.0.0.1:7880","session":"standup/alice"}
//
// The reservation is the agent's POST /v1/sessions with ttl_seconds and
// source "livekit", under the session id the LiveKit connector uses
// (livekit.SessionID: room and identity path-escaped, joined by '/'). The
// agent's LiveKit connector (headroom agent --livekit-api-key/secret)
// confirms it when LiveKit's participant_joined webhook arrives; one never
// joined lapses after the TTL and bills nothing. The token carries the
// tenant as the participant attribute "tenant", which the connector's
// RoomService reconcile reads. In a real application the tenant and the
// class come from the application's own authentication, not from the query.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/connect/livekit"
)

// tokenServer mints LiveKit tokens for admitted sessions.
type tokenServer struct {
	agent       string // the headroom agent's API, http://host:port
	key, secret string // LiveKit's API key pair
	url         string // the LiveKit URL handed to clients
	ttl         time.Duration
	client      *http.Client
}

type tokenResponse struct {
	Token   string `json:"token,omitempty"`
	URL     string `json:"url,omitempty"`
	Session string `json:"session,omitempty"`
	Error   string `json:"error,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tenant, room, identity, class := q.Get("tenant"), q.Get("room"), q.Get("identity"), q.Get("class")
	if class == "" {
		class = "video-hd"
	}
	if tenant == "" || room == "" || identity == "" {
		reply(w, http.StatusBadRequest, tokenResponse{Error: "tenant, room and identity are required"})
		return
	}
	session := livekit.SessionID(room, identity)
	code, ans, retry, err := s.reserve(tenant, class, session, agent.UserOf(identity))
	switch {
	case err != nil:
		// No answer, no token: admission fails closed.
		reply(w, http.StatusServiceUnavailable, tokenResponse{Error: "the headroom agent does not answer: " + err.Error()})
		return
	case code == http.StatusTooManyRequests:
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		reply(w, http.StatusTooManyRequests, tokenResponse{Error: "refused", Reason: ans.Reason})
		return
	case code != http.StatusCreated && code != http.StatusOK:
		reply(w, http.StatusBadRequest, tokenResponse{Error: "the agent refused the request: " + ans.Error})
		return
	}
	at := auth.NewAccessToken(s.key, s.secret).
		SetIdentity(identity).
		SetValidFor(s.ttl).
		SetAttributes(map[string]string{"tenant": tenant}).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room})
	tok, err := at.ToJWT()
	if err != nil {
		reply(w, http.StatusInternalServerError, tokenResponse{Error: err.Error()})
		return
	}
	reply(w, http.StatusOK, tokenResponse{Token: tok, URL: s.url, Session: session})
}

type agentAnswer struct {
	Admitted bool   `json:"admitted"`
	Reason   string `json:"reason"`
	Error    string `json:"error"`
}

// reserve asks the agent to admit the session, with a TTL, as a LiveKit
// session of user (the participant's identity: counted among the
// tenant's active users).
func (s *tokenServer) reserve(tenant, class, session, user string) (int, agentAnswer, string, error) {
	body, _ := json.Marshal(map[string]any{"tenant": tenant, "class": class, "session": session,
		"ttl_seconds": s.ttl.Seconds(), "source": livekit.Name, "user": user})
	resp, err := s.client.Post(s.agent+"/v1/sessions", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, agentAnswer{}, "", err
	}
	defer resp.Body.Close()
	var ans agentAnswer
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(b, &ans); err != nil {
		return 0, ans, "", fmt.Errorf("agent answered %s: %s", resp.Status, b)
	}
	return resp.StatusCode, ans, resp.Header.Get("Retry-After"), nil
}

func reply(w http.ResponseWriter, code int, v tokenResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8088", "listen address")
	agentURL := flag.String("agent", "http://127.0.0.1:9380", "the headroom agent's API")
	lkURL := flag.String("livekit-url", "ws://127.0.0.1:7880", "the LiveKit URL handed to clients")
	ttl := flag.Duration("ttl", time.Minute, "how long a reservation (and its token) waits for the participant to join")
	flag.Parse()
	s := &tokenServer{agent: *agentURL, key: os.Getenv("LIVEKIT_API_KEY"), secret: os.Getenv("LIVEKIT_API_SECRET"),
		url: *lkURL, ttl: *ttl, client: &http.Client{Timeout: 5 * time.Second}}
	if s.key == "" || s.secret == "" {
		log.Fatal("LIVEKIT_API_KEY and LIVEKIT_API_SECRET are required")
	}
	log.Printf("token endpoint on http://%s/token, admitting through %s", *addr, *agentURL)
	srv := &http.Server{Addr: *addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" {
			http.NotFound(w, r)
			return
		}
		s.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
