package cluster

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// dirDigest hashes every file under dir (names and contents).
func dirDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestRecoverLostQuorum: of three servers two are lost for good; the
// survivor cannot commit. Recover, refused while the directory is in use
// and then changing nothing, rewrites its configuration to itself alone;
// restarted with its usual configuration it leads, with every entry it had.
func TestRecoverLostQuorum(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	opts := func(join ...string) func(*Config) {
		return func(c *Config) {
			c.BootstrapExpect = 3
			c.Join = join
		}
	}
	s1 := h.start("s1", "", "", "", opts())
	s2 := h.start("s2", "", "", "", opts(s1.node.GossipAddr()))
	s3 := h.start("s3", "", "", "", opts(s2.node.GossipAddr()))
	all := []*server{s1, s2, s3}
	waitVoters(t, all, 30*time.Second, "s1", "s2", "s3")
	var idx uint64
	for i := 0; i < 25; i++ {
		idx = apply(t, all)
	}
	waitApplied(t, s1, idx)
	raft1, gossip1 := s1.node.Addr(), s1.node.GossipAddr()
	join := []string{s2.node.GossipAddr(), s3.node.GossipAddr()}
	s2.stop()
	s3.stop()
	want := s1.fsm.n.Load()
	attempts := uint64(0)
	waitFor(t, 10*time.Second, "writes fail with two of three servers gone", func() (bool, string) {
		attempts++
		err := s1.node.Raft.Apply([]byte("x"), 300*time.Millisecond).Error()
		return err != nil, "an entry was committed"
	})
	voters := []raft.Server{{Suffrage: raft.Voter, ID: "s1", Address: raft.ServerAddress(raft1)}}
	log := hclog.New(&hclog.LoggerOptions{Name: "recover", Level: hclog.Debug, Output: h.logs})

	// While the server runs: refused.
	_, err := Recover(s1.dir, "s1", voters, &countFSM{}, log)
	var iu *InUseError
	if !errors.As(err, &iu) {
		t.Fatalf("recover of a running server's directory: %v", err)
	}
	s1.stop()
	// Held by another process (a lock on raft.db): refused, nothing changed.
	before := dirDigest(t, s1.dir)
	db, err := bbolt.Open(filepath.Join(s1.dir, "raft", "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Recover(s1.dir, "s1", voters, &countFSM{}, log); !errors.As(err, &iu) || !strings.Contains(err.Error(), "in use by a running server") {
		t.Fatalf("recover of a directory in use: %v", err)
	}
	db.Close()
	if dirDigest(t, s1.dir) != before {
		t.Fatal("a refused recover changed the data directory")
	}
	// Bad voter lists: refused.
	for _, bad := range [][]raft.Server{
		nil,
		{{Suffrage: raft.Voter, ID: "s2", Address: "127.0.0.1:1"}},
		{voters[0], {Suffrage: raft.Voter, ID: "s1", Address: "127.0.0.1:2"}},
		{{Suffrage: raft.Voter, ID: "s1", Address: "no-port"}},
	} {
		if _, err := Recover(s1.dir, "s1", bad, &countFSM{}, log); err == nil {
			t.Fatalf("recover with voters %v: no error", bad)
		}
	}
	if dirDigest(t, s1.dir) != before {
		t.Fatal("a refused recover changed the data directory")
	}

	rep, err := Recover(s1.dir, "s1", voters, &countFSM{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.OldConfiguration.Servers) != 3 || rep.LastIndex < idx || rep.WrittenIndex != rep.LastIndex || rep.WrittenSnapshot == "" {
		t.Fatalf("report %+v", rep)
	}
	// The usual configuration (bootstrap-expect, joins to the dead) again.
	s1 = h.start("s1", s1.dir, raft1, gossip1, opts(join...))
	waitVoters(t, []*server{s1}, 30*time.Second, "s1")
	// Every entry the survivor had is kept: those applied, and those of the
	// failed writes it appended (no server can tell whether they were
	// committed, so recovery applies them).
	if got := s1.fsm.n.Load(); got < want || got > want+attempts {
		t.Fatalf("after recovery the state machine holds %d entries, the survivor had applied %d and appended at most %d more", got, want, attempts)
	}
	apply(t, []*server{s1})
}
