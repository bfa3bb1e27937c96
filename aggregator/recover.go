package aggregator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/plans"
)

// Recover rewrites the Raft configuration of the stopped server whose data
// directory is dataDir to voters (`headroom raft recover`), replaying what
// it holds through this build's state machine, as the server itself would
// at start (see cluster.Recover). The server's own id, kept in dataDir, must
// be among the voters.
func Recover(dataDir string, voters []raft.Server, log hclog.Logger) (*cluster.RecoverReport, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	path := filepath.Join(dataDir, "node-id")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s has no node-id: not the data directory of a headroom aggregator", dataDir)
	}
	if err != nil {
		return nil, err
	}
	return cluster.Recover(dataDir, strings.TrimSpace(string(b)), voters, loggedFSM(plans.Defaults(), log.Named("fsm")), log)
}
