package cluster

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// RecoverReport is what Recover found in a data directory and what it
// wrote there.
type RecoverReport struct {
	// Found: the log's first and last index (0, 0: empty), the snapshot the
	// state was rebuilt from (index 0: none), the last index and term of
	// everything the server held, its current term, and the latest Raft
	// configuration it knew, with the index it came from.
	LogFirst, LogLast           uint64
	SnapshotIndex, SnapshotTerm uint64
	LastIndex, LastTerm         uint64
	CurrentTerm                 uint64
	OldConfiguration            raft.Configuration
	OldConfigurationIndex       uint64
	NewConfiguration            raft.Configuration
	WrittenIndex, WrittenTerm   uint64 // of the snapshot Recover wrote
	WrittenSnapshot, StorePath  string
}

// Recover rewrites the Raft configuration of the stopped server whose data
// directory is dataDir to voters, with raft.RecoverCluster: the state
// machine (fsm, fresh, as the server builds it) is rebuilt from the newest
// good snapshot and every entry of the log — committed or not, since no
// other server can say — and saved as a new snapshot carrying the new
// configuration; the log is then compacted. The server started afterwards
// with its usual flags leads a cluster of voters once a majority of them
// runs. localID is this server's id; it must be among the voters.
//
// Recover refuses a directory another process holds (InUseError), a
// damaged one (CorruptError) and one without Raft state, and then changes
// nothing.
func Recover(dataDir, localID string, voters []raft.Server, fsm raft.FSM, log hclog.Logger) (rep *RecoverReport, err error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := checkVoters(localID, voters); err != nil {
		return nil, err
	}
	st, err := openStores(dataDir, DefaultLockTimeout, log)
	if err != nil {
		return nil, err
	}
	defer st.close(log)
	has, err := raft.HasExistingState(st.db, st.db, st.snaps)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if !has {
		return nil, fmt.Errorf("%s holds no Raft state: nothing to recover (a new server joins with --join, or forms a cluster with --bootstrap)", dataDir)
	}
	rep = &RecoverReport{LogFirst: st.first, LogLast: st.last, StorePath: st.path,
		NewConfiguration: raft.Configuration{Servers: voters}}
	if t, err := st.db.GetUint64([]byte("CurrentTerm")); err == nil {
		rep.CurrentTerm = t
	}
	if st.snap != nil {
		rep.SnapshotIndex, rep.SnapshotTerm = st.snap.Index, st.snap.Term
		rep.LastIndex, rep.LastTerm = st.snap.Index, st.snap.Term
		rep.OldConfiguration, rep.OldConfigurationIndex = st.snap.Configuration, st.snap.ConfigurationIndex
	}
	for i := max(st.first, rep.SnapshotIndex+1); st.last > 0 && i <= st.last; i++ {
		var e raft.Log
		if err := st.db.GetLog(i, &e); err != nil {
			return nil, &CorruptError{Path: st.path, Problem: fmt.Sprintf("log entry %d: %v", i, err)}
		}
		rep.LastIndex, rep.LastTerm = e.Index, e.Term
		if e.Type == raft.LogConfiguration {
			rep.OldConfiguration, rep.OldConfigurationIndex = raft.DecodeConfiguration(e.Data), e.Index
		}
	}
	conf := Tuned(localID)
	conf.Logger = log.Named("raft")
	_, trans := raft.NewInmemTransport(raft.ServerAddress(addrOf(voters, localID)))
	defer func() {
		// The state machine panics on an entry it cannot apply (one written
		// by a newer version): say so rather than crash half way.
		if r := recover(); r != nil {
			rep, err = nil, fmt.Errorf("cluster: recover stopped: %v", r)
		}
	}()
	if err := raft.RecoverCluster(conf, fsm, st.db, st.db, st.snaps, trans, rep.NewConfiguration); err != nil {
		return nil, fmt.Errorf("cluster: recover: %w", err)
	}
	if ms, err := st.snaps.List(); err == nil && len(ms) > 0 {
		rep.WrittenIndex, rep.WrittenTerm = ms[0].Index, ms[0].Term
		rep.WrittenSnapshot = filepath.Join(dataDir, "raft", "snapshots", ms[0].ID)
	}
	log.Warn("Raft configuration recovered", "data_dir", dataDir, "voters", voterList(voters), "index", rep.WrittenIndex, "term", rep.WrittenTerm)
	return rep, nil
}

// checkVoters refuses an empty list, a duplicate id or address, an address
// that is not host:port, and a list without localID.
func checkVoters(localID string, voters []raft.Server) error {
	if len(voters) == 0 {
		return errors.New("at least one voter is needed")
	}
	ids, addrs := map[raft.ServerID]bool{}, map[raft.ServerAddress]bool{}
	for _, v := range voters {
		if v.ID == "" {
			return fmt.Errorf("voter %q: empty id", v.Address)
		}
		host, port, err := net.SplitHostPort(string(v.Address))
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return fmt.Errorf("voter %s: address %q is not host:port", v.ID, v.Address)
		}
		if ids[v.ID] {
			return fmt.Errorf("voter %s named twice", v.ID)
		}
		if addrs[v.Address] {
			return fmt.Errorf("address %s given to two voters", v.Address)
		}
		if v.Suffrage != raft.Voter {
			return fmt.Errorf("voter %s: not a voter", v.ID)
		}
		ids[v.ID], addrs[v.Address] = true, true
	}
	if !ids[raft.ServerID(localID)] {
		return fmt.Errorf("this server (%s) is not among the voters: it could not take part in the cluster it recovers", localID)
	}
	return nil
}

func addrOf(voters []raft.Server, id string) string {
	for _, v := range voters {
		if string(v.ID) == id {
			return string(v.Address)
		}
	}
	return ""
}

func voterList(vs []raft.Server) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v.ID) + "=" + string(v.Address)
	}
	return out
}
