package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// soloData makes the data directory of a single server that applied
// entries, 150 of them before each of snaps snapshots and 20 after, then
// stopped; trailing is Raft's TrailingLogs (0: the default).
func soloData(t *testing.T, h *harness, snaps int, trailing uint64) string {
	t.Helper()
	dir := t.TempDir()
	s := h.start("solo", dir, "", "", func(c *Config) {
		c.GossipAddr, c.Gossip, c.Bootstrap = "", nil, true
		c.Tuning = func(rc *raft.Config) {
			if trailing > 0 {
				rc.TrailingLogs = trailing
			}
		}
	})
	waitFor(t, 10*time.Second, "leader", func() (bool, string) { return s.node.Raft.State() == raft.Leader, s.node.Raft.State().String() })
	k := 0
	applyN := func(n int) {
		for i := 0; i < n; i++ {
			if err := s.node.Raft.Apply([]byte(fmt.Sprintf("entry-%05d-%s", k, strings.Repeat("x", 200))), 5*time.Second).Error(); err != nil {
				t.Fatal(err)
			}
			k++
		}
	}
	for i := 0; i < snaps; i++ {
		applyN(150)
		if err := s.node.Raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	applyN(20)
	s.stop()
	return dir
}

// openSolo opens the single server of dir again.
func openSolo(h *harness, dir string) (*Node, *countFSM, error) {
	fsm := &countFSM{}
	n, err := Open(Config{DataDir: dir, BindAddr: "127.0.0.1:0", ServerID: "solo", Bootstrap: true, LockWait: 200 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "solo", Level: hclog.Debug, Output: h.logs})}, fsm)
	return n, fsm, err
}

// snapshotDirs lists dir's snapshots, newest first.
func snapshotDirs(t *testing.T, dir string) []string {
	t.Helper()
	root := filepath.Join(dir, "raft", "snapshots")
	es, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, filepath.Join(root, e.Name()))
	}
	// Names are term-index-time: the newest sorts last within a term.
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	if len(out) == 0 {
		t.Fatal("no snapshots")
	}
	return out
}

// flipFile flips the byte at off.
func flipFile(t *testing.T, file string, off int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0xff
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// damagePages flips every byte of the first 64 of each 4 KiB page of file
// that holds pattern: every copy, live or freed, of the data it names.
func damagePages(t *testing.T, file string, pattern []byte) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pages := map[int]bool{}
	for off := 0; ; {
		i := bytes.Index(b[off:], pattern)
		if i < 0 {
			break
		}
		pages[(off+i)/4096] = true
		off += i + 1
	}
	if len(pages) == 0 {
		t.Fatalf("%q not found in %s", pattern, file)
	}
	for p := range pages {
		for i := p * 4096; i < p*4096+64 && i < len(b); i++ {
			b[i] ^= 0x5a
		}
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantCorrupt(t *testing.T, err error, file string) {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("want a CorruptError naming %s, got %v", file, err)
	}
	msg := err.Error()
	for _, want := range []string{file, "corrupt", "headroom raft recover", "headroom snapshot restore", "rejoin"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("the error does not say %q: %s", want, msg)
		}
	}
}

// TestOpenRefusesDamagedStores: damage of raft.db (log pages, the stable
// store's page, meta pages, truncation) and of the snapshots stops Open
// with a CorruptError naming the file, never a panic, with the digest of a
// clean shutdown and without it; a byte changed inside an entry is seen by
// the digest only.
func TestOpenRefusesDamagedStores(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	good := soloData(t, h, 2, 10) // the log does not reach back to the older snapshot
	db := func(dir string) string { return filepath.Join(dir, "raft", "raft.db") }
	cases := map[string]func(dir string) string{
		"log pages": func(dir string) string {
			damagePages(t, db(dir), []byte("entry-00310-"))
			return db(dir)
		},
		"stable store page": func(dir string) string {
			damagePages(t, db(dir), []byte("CurrentTerm"))
			return db(dir)
		},
		"truncated": func(dir string) string {
			fi, _ := os.Stat(db(dir))
			os.Truncate(db(dir), fi.Size()/2)
			return db(dir)
		},
		"meta pages": func(dir string) string {
			b, _ := os.ReadFile(db(dir))
			for i := 16; i < 80; i++ {
				b[i] ^= 0xff
				b[4096+i] ^= 0xff
			}
			os.WriteFile(db(dir), b, 0o600)
			return db(dir)
		},
		"newest snapshot, the log not reaching the older": func(dir string) string {
			s := snapshotDirs(t, dir)[0]
			flipFile(t, filepath.Join(s, "state.bin"), 3)
			return s
		},
		"newest snapshot's meta.json": func(dir string) string {
			s := snapshotDirs(t, dir)[0]
			flipFile(t, filepath.Join(s, "meta.json"), 0)
			return s
		},
		"every snapshot": func(dir string) string {
			snaps := snapshotDirs(t, dir)
			for _, s := range snaps {
				flipFile(t, filepath.Join(s, "state.bin"), 3)
			}
			return snaps[0]
		},
	}
	for name, damage := range cases {
		// With the digest of the clean shutdown, and without it (as after
		// a crash), when the structural check alone must find the damage.
		for _, digest := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/digest=%v", name, digest), func(t *testing.T) {
				dir := t.TempDir()
				copyDir(t, good, dir)
				if _, err := os.Stat(db(dir) + digestSuffix); err != nil {
					t.Fatalf("no digest after a clean shutdown: %v", err)
				}
				if !digest {
					os.Remove(db(dir) + digestSuffix)
				}
				file := damage(dir)
				n, _, err := openSolo(h, dir)
				if err == nil {
					n.Shutdown()
					t.Fatalf("opened a server on a damaged store (%s)", name)
				}
				wantCorrupt(t, err, file)
			})
		}
	}
	// A byte inside an entry's contents: only the digest can tell.
	t.Run("entry contents", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, good, dir)
		b, _ := os.ReadFile(db(dir))
		i := bytes.LastIndex(b, []byte("entry-00312-xxxx"))
		if i < 0 {
			t.Fatal("entry not found")
		}
		b[i+len("entry-00312-")] = 'y'
		os.WriteFile(db(dir), b, 0o600)
		_, _, err := openSolo(h, dir)
		wantCorrupt(t, err, db(dir))
		if !strings.Contains(err.Error(), "changed while the server was stopped") {
			t.Fatalf("not the digest: %v", err)
		}
		os.Remove(db(dir) + digestSuffix)
		n, _, err := openSolo(h, dir)
		if err != nil {
			t.Fatalf("without the digest, a changed byte inside an entry (beyond what bolt can see): %v", err)
		}
		n.Shutdown()
	})
}

// TestOpenSkipsDamagedSnapshot: a newest snapshot that fails its checksum
// is skipped for the older one, said so in the log, when the log holds every
// entry after the older one; nothing is lost.
func TestOpenSkipsDamagedSnapshot(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dir := soloData(t, h, 2, 1000)
	n, fsm, err := openSolo(h, dir)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the state machine applies every entry", func() (bool, string) {
		return fsm.n.Load() >= 320, fmt.Sprint(fsm.n.Load(), " applied")
	})
	want := fsm.n.Load()
	n.Shutdown()
	flipFile(t, filepath.Join(snapshotDirs(t, dir)[0], "state.bin"), 3)
	n, fsm, err = openSolo(h, dir)
	if err != nil {
		t.Fatalf("a damaged newest snapshot with an older one and the log behind it: %v", err)
	}
	defer n.Shutdown()
	waitFor(t, 10*time.Second, "the state machine back where it was", func() (bool, string) {
		return fsm.n.Load() >= want, fmt.Sprint(fsm.n.Load(), " applied, want ", want)
	})
	if !strings.Contains(h.logs.tail(1<<20), "snapshot is corrupt; Raft skips it for an older one") {
		t.Fatal("the log does not say the damaged snapshot was skipped")
	}
}

// TestOpenRefusesStoreInUse: a second Open of a data directory a server
// holds fails at once with an InUseError.
func TestOpenRefusesStoreInUse(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dir := soloData(t, h, 0, 0)
	n, _, err := openSolo(h, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	_, _, err = openSolo(h, dir)
	var iu *InUseError
	if !errors.As(err, &iu) || !strings.Contains(err.Error(), "in use by a running server") {
		t.Fatalf("second open: %v", err)
	}
}
