package aggregator

import (
	"io"
	"strings"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

func jsonBody(s string) io.Reader { return strings.NewReader(s) }

// t0 is the time the state machine's own tests start at.
var t0 = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

// cutAt stamps an agent batch with the time it was cut at.
func cutAt(b *wire.DeltaBatch, at time.Time) *wire.DeltaBatch {
	b.AgentTime = at.UnixMilli()
	return b
}
