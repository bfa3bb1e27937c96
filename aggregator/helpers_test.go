package aggregator

import (
	"io"
	"strings"

	"github.com/headroom-rtc/headroom/wire"
)

func jsonBody(s string) io.Reader { return strings.NewReader(s) }

// itemsCmd groups agent messages into one log command, as the proposer does.
func itemsCmd(at int64, defaultPlan string, msgs ...wire.Message) *agentItemsCmd {
	cmd := &agentItemsCmd{Time: at, DefaultPlan: defaultPlan}
	for _, m := range msgs {
		kind := itemDelta
		switch m.(type) {
		case *wire.FullState:
			kind = itemFull
		case *wire.GrantAsk:
			kind = itemGrant
		}
		cmd.Items = append(cmd.Items, agentItem{Kind: kind, Region: "eu", Body: wire.Append(nil, m)})
	}
	return cmd
}
