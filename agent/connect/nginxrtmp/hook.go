// Package nginxrtmp is the agent's connector for nginx-rtmp
// (libnginx-mod-rtmp): it serves the module's on_publish, on_play,
// on_update and on_done notifications at one URL, admitting and closing
// sessions, and reads the module's /stat page to class sessions by their
// real resolution and to close those whose client is gone.
//
// What nginx-rtmp sends (observed with nginx 1.22.1 and the module 1.2.2):
// a POST of application/x-www-form-urlencoded fields call (publish, play,
// update_publish, update_play, publish_done, play_done, done), app, name,
// addr, clientid, tcurl, flashver, swfurl, pageurl, type (publish), start,
// duration, reset (play), time, timestamp (update), and every query argument
// of the stream URL (rtmp://host/live/key?tenant=acme adds tenant=acme). Any
// non-2xx answer to on_publish or on_play drops the client; a non-2xx answer
// to on_update ends a running session. on_publish_done / on_play_done and
// on_done both arrive when a client leaves.
package nginxrtmp

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/headroom-rtc/headroom/agent/connect"
)

// The calls nginx-rtmp makes.
const (
	CallPublish       = "publish"
	CallPlay          = "play"
	CallUpdatePublish = "update_publish"
	CallUpdatePlay    = "update_play"
	CallPublishDone   = "publish_done"
	CallPlayDone      = "play_done"
	CallDone          = "done"
)

// MaxHookBody is the largest hook body read; nginx-rtmp's are a few hundred
// bytes plus the stream URL's arguments.
const MaxHookBody = 64 << 10

// maxArgs bounds the query arguments kept from one hook.
const maxArgs = 64

// ErrBadHook: a hook body that is not one of nginx-rtmp's.
var ErrBadHook = errors.New("bad nginx-rtmp hook")

// Hook is one decoded notification.
type Hook struct {
	Call     string
	App      string
	Name     string
	Addr     string
	ClientID uint64
	// Args are the fields nginx-rtmp copies from the stream URL's query
	// (every field that is not one of its own); the first value of each.
	Args map[string]string
}

// own are the fields nginx-rtmp sets itself; the rest are URL arguments.
var own = map[string]bool{
	"call": true, "app": true, "name": true, "addr": true, "clientid": true, "tcurl": true,
	"flashver": true, "swfurl": true, "pageurl": true, "type": true, "start": true,
	"duration": true, "reset": true, "time": true, "timestamp": true,
}

// ParseHook decodes a hook body. It fails, wrapping ErrBadHook, on a body
// that is not a form, lacks call or clientid, names an unknown call, or
// carries more than 64 arguments; nothing it returns aliases body.
func ParseHook(body []byte) (Hook, error) {
	if len(body) > MaxHookBody {
		return Hook{}, fmt.Errorf("%w: body of %d bytes (at most %d)", ErrBadHook, len(body), MaxHookBody)
	}
	vs, err := url.ParseQuery(string(body))
	if err != nil {
		return Hook{}, fmt.Errorf("%w: %v", ErrBadHook, err)
	}
	first := func(k string) string {
		if v := vs[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	h := Hook{Call: first("call"), App: first("app"), Name: first("name"), Addr: first("addr")}
	switch h.Call {
	case CallPublish, CallPlay, CallUpdatePublish, CallUpdatePlay, CallPublishDone, CallPlayDone, CallDone:
	case "":
		return Hook{}, fmt.Errorf("%w: no call field (point only nginx-rtmp's on_* directives here)", ErrBadHook)
	default:
		return Hook{}, fmt.Errorf("%w: unknown call %q", ErrBadHook, connect.Truncate(h.Call))
	}
	id := first("clientid")
	if id == "" {
		return Hook{}, fmt.Errorf("%w: no clientid", ErrBadHook)
	}
	if h.ClientID, err = strconv.ParseUint(id, 10, 64); err != nil {
		return Hook{}, fmt.Errorf("%w: clientid %q: not a number", ErrBadHook, connect.Truncate(id))
	}
	for k, v := range vs {
		if own[k] || len(v) == 0 {
			continue
		}
		if len(h.Args) == maxArgs {
			return Hook{}, fmt.Errorf("%w: more than %d arguments", ErrBadHook, maxArgs)
		}
		if h.Args == nil {
			h.Args = map[string]string{}
		}
		h.Args[k] = v[0]
	}
	return h, nil
}

// Kind is "pub" for a publisher's calls, "play" for a player's, "" for done
// (which says neither).
func (h Hook) Kind() string {
	switch h.Call {
	case CallPublish, CallUpdatePublish, CallPublishDone:
		return kindPub
	case CallPlay, CallUpdatePlay, CallPlayDone:
		return kindPlay
	}
	return ""
}

const (
	kindPub  = "pub"
	kindPlay = "play"
)

// sessionID names the session of one client: its kind, nginx's clientid
// and the time (unix milliseconds, base 36) the agent first saw it. The
// clientid restarts from 1 when nginx restarts; the time keeps ids unique
// across restarts, and lets the stat reconcile tell a client of an earlier
// nginx from a new one with the same clientid.
func sessionID(kind string, clientID uint64, firstSeenMs int64) string {
	return "rtmp-" + kind + "-" + strconv.FormatUint(clientID, 10) + "-" + strconv.FormatInt(firstSeenMs, 36)
}

// parseSessionID reverses sessionID.
func parseSessionID(id string) (kind string, clientID uint64, firstSeenMs int64, ok bool) {
	rest, found := strings.CutPrefix(id, "rtmp-")
	if !found {
		return "", 0, 0, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 || parts[0] != kindPub && parts[0] != kindPlay {
		return "", 0, 0, false
	}
	cid, err1 := strconv.ParseUint(parts[1], 10, 64)
	ms, err2 := strconv.ParseInt(parts[2], 36, 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return parts[0], cid, ms, true
}
