package agent

import "time"

// The wall clock. The agent measures every duration (usage, leases, TTLs,
// keepalives) on the monotonic clock, from its creation; the wall clock only
// gives the base that persisted and shown times are derived from (Config.
// WallClock). A wall clock that jumps while the agent runs (an NTP step, a
// VM resumed on another host) therefore changes no duration; the agent
// notices the jump at its next flush and logs it once per jump.

// wallJumpLogged is the smallest difference between the wall clock and the
// agent's derived wall time that is logged as a jump.
const wallJumpLogged = 2 * time.Second

// checkWall compares the wall clock with the agent's own wall time and logs
// a jump when they drifted apart by more than wallJumpLogged since the last
// one logged. Called from the flush loop only.
func (a *Agent) checkWall() {
	if a.cfg.WallClock == nil {
		return
	}
	skew := a.cfg.WallClock().UnixNano() - (a.startUnix + a.now())
	if d := time.Duration(skew - a.wallSkew); d > wallJumpLogged || d < -wallJumpLogged {
		a.log.Warn("the wall clock jumped; durations keep to the monotonic clock, times shown and persisted keep to the agent's start",
			"jump", d.Round(time.Millisecond).String(), "skew", time.Duration(skew).Round(time.Millisecond).String())
		a.wallSkew = skew
	}
}
