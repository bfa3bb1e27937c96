package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// The stores of a data directory: DataDir/raft/raft.db (raft-boltdb: the
// log in its "logs" bucket, the stable store — current term and vote — in
// its "conf" bucket) and DataDir/raft/snapshots (raft's file snapshots, each
// with a CRC-64 of its state in meta.json).
//
// Bolt checksums only its two meta pages: a damaged page elsewhere makes it
// panic when the page is first read ("invalid page type", "invalid freelist
// page"), possibly much later, inside one of Raft's goroutines. So before
// Raft sees the stores, openStores reads all of raft.db once (every page
// reachable from the root, every log entry decoded and in sequence, bolt's
// own consistency check) with panics turned into a CorruptError, and checks
// that the snapshot Raft will restore passes its checksum and that the log
// continues from it. A flipped byte inside an entry's contents that still
// decodes is beyond what bolt can notice.

// DefaultLockTimeout is how long opening raft.db waits for the file lock
// held by another process before it says the directory is in use.
const DefaultLockTimeout = 2 * time.Second

// The way out of a corrupt store, the end of every CorruptError.
const corruptWayOut = "restore a backup (headroom snapshot restore), recover from this or another server " +
	"(headroom raft recover), or remove the data directory and let the server rejoin the cluster"

// CorruptError is a file of the data directory that cannot be trusted.
type CorruptError struct {
	Path    string // the file (or snapshot directory)
	Problem string // what was found
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s is corrupt (%s): %s", e.Path, e.Problem, corruptWayOut)
}

// InUseError is a data directory whose Raft store another process holds
// open: a running server.
type InUseError struct{ Path string }

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s is in use by a running server (its lock is held): stop that server first", e.Path)
}

// stores are the opened stores of a data directory.
type stores struct {
	db    *raftboltdb.BoltStore // log and stable store
	snaps *raft.FileSnapshotStore
	path  string // of raft.db
	// What the check found: the log's first and last index (0, 0: empty)
	// and the snapshot Raft will restore (nil: none).
	first, last uint64
	snap        *raft.SnapshotMeta
}

// openStores checks and opens the stores under dataDir (creating them when
// absent). lockWait bounds the wait for raft.db's lock.
func openStores(dataDir string, lockWait time.Duration, log hclog.Logger) (*stores, error) {
	raftDir := filepath.Join(dataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	st := &stores{path: filepath.Join(raftDir, "raft.db")}
	// The digest a clean close left: the file must be as it was left. It
	// is removed once no other process holds the file, before anything
	// writes to it.
	if err := checkDigest(st.path); err != nil {
		return nil, err
	}
	first, last, err := checkBoltStore(st.path, lockWait)
	if err != nil {
		return nil, err
	}
	if err := removeDigest(st.path); err != nil {
		return nil, err
	}
	if st.db, err = openBolt(st.path, lockWait); err != nil {
		return nil, err
	}
	st.snaps, err = raft.NewFileSnapshotStoreWithLogger(raftDir, snapshotsRetained, log.Named("snapshots"))
	if err != nil {
		st.db.Close()
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	st.first, st.last = first, last
	if st.snap, err = checkSnapshots(st.snaps, filepath.Join(raftDir, "snapshots"), first, last, log); err != nil {
		st.db.Close()
		return nil, err
	}
	return st, nil
}

// snapshotsRetained is how many of its snapshots Raft keeps on disk.
const snapshotsRetained = 2

// close closes the stores and records the digest of raft.db as it leaves
// it (see checkDigest).
func (st *stores) close(log hclog.Logger) error {
	if err := st.db.Close(); err != nil {
		return err
	}
	if err := writeDigest(st.path); err != nil && log != nil {
		log.Warn("could not record the Raft store's digest; the next start checks its structure only", "file", st.path, "error", err)
	}
	return nil
}

// A clean close records raft.db's CRC-32C and size in raft.db.digest;
// the next open compares them before it opens the file, then removes the
// digest before anything writes. So damage done while the server was
// stopped is noticed even where the structural check cannot see it (pages
// bolt holds free), and after a crash, without a digest, the structural
// check stands alone.
const digestSuffix = ".digest"

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	n, err := io.Copy(h, f)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("crc32c %08x size %d", h.Sum32(), n), nil
}

func writeDigest(path string) error {
	d, err := fileDigest(path)
	if err != nil {
		return err
	}
	return writeFileAtomic(path+digestSuffix, []byte(d+"\n"))
}

// checkDigest compares raft.db with the digest its last clean close left,
// if any.
func checkDigest(path string) error {
	want, err := os.ReadFile(path + digestSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	got, err := fileDigest(path)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if w := strings.TrimSpace(string(want)); got != w {
		return &CorruptError{Path: path, Problem: fmt.Sprintf("it changed while the server was stopped: %s, its clean shutdown left %s "+
			"(if another program changed it on purpose, remove %s)", got, w, path+digestSuffix)}
	}
	return nil
}

// removeDigest removes the digest durably, so that a crash after the file
// is written again leaves none that is stale.
func removeDigest(path string) error {
	if err := os.Remove(path + digestSuffix); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("cluster: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openBolt opens raft-boltdb, turning a lock held elsewhere into an
// InUseError and a panic into a CorruptError.
func openBolt(path string, lockWait time.Duration) (db *raftboltdb.BoltStore, err error) {
	defer catchCorrupt(path, &err)
	db, err = raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: lockWait}})
	if err != nil {
		return nil, boltOpenErr(path, err)
	}
	return db, nil
}

func boltOpenErr(path string, err error) error {
	switch {
	case errors.Is(err, bbolt.ErrTimeout):
		return &InUseError{Path: path}
	case errors.Is(err, bbolt.ErrInvalid), errors.Is(err, bbolt.ErrChecksum), errors.Is(err, bbolt.ErrVersionMismatch):
		return &CorruptError{Path: path, Problem: err.Error()}
	}
	return fmt.Errorf("cluster: open raft log %s: %w", path, err)
}

// catchCorrupt turns a panic of bolt reading a damaged page (or a fault
// reading past the end of a truncated file) into a CorruptError. It must be
// deferred by the function that reads; faults are made panics for the
// calling goroutine until it returns.
func catchCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = &CorruptError{Path: path, Problem: fmt.Sprintf("a page does not read: %v", r)}
	}
}

// checkBoltStore reads every page of raft.db that holds data and returns the
// first and last log index (0, 0: none). An absent file is fine: a new
// server.
func checkBoltStore(path string, lockWait time.Duration) (first, last uint64, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: %w", err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer catchCorrupt(path, &err)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockWait})
	if err != nil {
		return 0, 0, boltOpenErr(path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		if need := tx.Size(); need > fi.Size() {
			return fmt.Errorf("truncated: %d bytes, its pages reach to %d", fi.Size(), need)
		}
		var err error
		if first, last, err = checkLogs(tx.Bucket([]byte("logs"))); err != nil {
			return err
		}
		if err := checkStable(tx.Bucket([]byte("conf"))); err != nil {
			return err
		}
		// Every other bucket's pages are read too, then bolt's own check
		// (reachable or free, no page twice).
		if err := tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error { return nil })
		}); err != nil {
			return err
		}
		var first error
		for err := range tx.Check() { // drained: the check runs until it closes the channel
			if first == nil {
				first = err
			}
		}
		return first
	})
	if err != nil {
		return 0, 0, &CorruptError{Path: path, Problem: err.Error()}
	}
	return first, last, nil
}

// checkLogs decodes every log entry: each must be a raft.Log whose index is
// its key, the keys consecutive.
func checkLogs(b *bbolt.Bucket) (first, last uint64, err error) {
	if b == nil {
		return 0, 0, nil
	}
	h := &codec.MsgpackHandle{}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return 0, 0, fmt.Errorf("log key of %d bytes", len(k))
		}
		idx := binary.BigEndian.Uint64(k)
		if last != 0 && idx != last+1 {
			return 0, 0, fmt.Errorf("log entry %d follows %d", idx, last)
		}
		var e raft.Log
		// Decoded from the bytes themselves: a damaged length cannot make
		// the decoder allocate more than the value holds.
		if err := codec.NewDecoderBytes(v, h).Decode(&e); err != nil {
			return 0, 0, fmt.Errorf("log entry %d: %v", idx, err)
		}
		if e.Index != idx {
			return 0, 0, fmt.Errorf("log entry under key %d says index %d", idx, e.Index)
		}
		if e.Type > raft.LogConfiguration {
			return 0, 0, fmt.Errorf("log entry %d of unknown type %d", idx, e.Type)
		}
		if first == 0 {
			first = idx
		}
		last = idx
	}
	return first, last, nil
}

// checkStable checks the stable store's keys: the terms are 8 bytes.
func checkStable(b *bbolt.Bucket) error {
	if b == nil {
		return nil
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		if v := b.Get([]byte(k)); v != nil && len(v) != 8 {
			return fmt.Errorf("stable store: %s of %d bytes", k, len(v))
		}
	}
	return nil
}

// checkSnapshots finds the snapshot Raft will restore, as Raft does (the
// newest whose metadata reads and whose state passes its CRC), says so for
// each one it skips, and checks that the log [first, last] continues from it.
func checkSnapshots(snaps *raft.FileSnapshotStore, dir string, first, last uint64, log hclog.Logger) (*raft.SnapshotMeta, error) {
	listed, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("cluster: list snapshots: %w", err)
	}
	known := map[string]bool{}
	for _, m := range listed {
		known[m.ID] = true
	}
	entries, _ := os.ReadDir(dir)
	var unreadable []string
	for _, e := range entries {
		if e.IsDir() && !known[e.Name()] && filepath.Ext(e.Name()) != ".tmp" {
			unreadable = append(unreadable, e.Name())
			log.Warn("snapshot is corrupt (its meta.json does not read); Raft skips it", "snapshot", filepath.Join(dir, e.Name()))
		}
	}
	var use *raft.SnapshotMeta
	var bad []string
	for _, m := range listed {
		_, rc, err := snaps.Open(m.ID) // verifies the CRC
		if err != nil {
			bad = append(bad, m.ID)
			log.Warn("snapshot is corrupt; Raft skips it for an older one", "snapshot", filepath.Join(dir, m.ID), "index", m.Index, "error", err)
			continue
		}
		rc.Close()
		use = m
		break
	}
	problem := func(format string, args ...any) error {
		p := dir
		if len(bad) > 0 {
			p = filepath.Join(dir, bad[0])
		} else if len(unreadable) > 0 {
			p = filepath.Join(dir, unreadable[0])
		}
		return &CorruptError{Path: p, Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case use == nil && (len(bad) > 0 || len(unreadable) > 0):
		return nil, problem("no snapshot passes its checksum")
	case use == nil && first > 1:
		return nil, &CorruptError{Path: dir, Problem: fmt.Sprintf("the log starts at index %d and no snapshot holds the entries before it", first)}
	case use != nil && first > use.Index+1:
		return nil, problem("the snapshot Raft can use ends at index %d and the log starts at %d: the entries between are gone", use.Index, first)
	case use != nil && len(bad) > 0:
		log.Warn("restoring an older snapshot; the log holds every entry after it", "snapshot", use.ID, "index", use.Index, "log_first", first, "log_last", last)
	}
	return use, nil
}
