package aggregator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headroom-rtc/headroom/internal/atomicfile"
	"github.com/headroom-rtc/headroom/internal/loop"
)

// Backups: with Config.BackupInterval set, the leader writes a snapshot file
// (fsm/snapfile.go) to Config.BackupDir every interval, named by its time and
// index (headroom-20261130T120000Z-4711.snap), written atomically and
// durably (atomicfile), and keeps the newest Config.BackupRetain of the files
// so named. A failure is logged as an error and counted in
// headroom_backup_failures_total; headroom_backup_last_success_timestamp_seconds
// says when the last one was written, for an alert on stale backups.

// DefaultBackupRetain is how many backups are kept unless
// Config.BackupRetain says otherwise.
const DefaultBackupRetain = 24

// MinBackupInterval bounds Config.BackupInterval from below.
const MinBackupInterval = time.Second

const (
	backupPrefix = "headroom-"
	backupSuffix = ".snap"
	backupTime   = "20060102T150405Z"
)

// checkBackups validates the backup settings of cfg and sets the default
// retention.
func checkBackups(cfg *Config) error {
	switch {
	case cfg.BackupInterval < 0:
		return errors.New("backup interval must not be negative")
	case cfg.BackupInterval == 0:
		return nil
	case cfg.BackupInterval < MinBackupInterval:
		return fmt.Errorf("backup interval %s: at least %s", cfg.BackupInterval, MinBackupInterval)
	case cfg.BackupDir == "":
		return errors.New("a backup interval needs a backup directory")
	case cfg.BackupRetain < 0:
		return errors.New("backup retain must not be negative")
	case cfg.BackupRetain == 0:
		cfg.BackupRetain = DefaultBackupRetain
	}
	if err := os.MkdirAll(cfg.BackupDir, 0o700); err != nil {
		return fmt.Errorf("backup directory: %w", err)
	}
	return nil
}

// backups writes the leader's backups.
type backups struct {
	dir    string
	every  time.Duration
	retain int
	log    hclog.Logger
	leader func() bool
	open   func() (*fsm.SnapshotHeader, io.ReadCloser, error)

	lastOK, lastIndex prometheus.Gauge
	failures          prometheus.Counter
}

func (s *Server) newBackups() *backups {
	b := &backups{
		dir: s.cfg.BackupDir, every: s.cfg.BackupInterval, retain: s.cfg.BackupRetain,
		log:    s.log.Named("backup"),
		leader: func() bool { ok, _ := s.Ready(); return ok && s.node.Raft.State() == raft.Leader },
		open:   s.api.OpenSnapshot,
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "headroom_backup_last_success_timestamp_seconds",
			Help: "When this server last wrote a backup to --backup-dir (unix seconds; 0: never since it started)."}),
		lastIndex: prometheus.NewGauge(prometheus.GaugeOpts{Name: "headroom_backup_last_index",
			Help: "The Raft index of the last backup this server wrote."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "headroom_backup_failures_total",
			Help: "Backups this server failed to write while leader."}),
	}
	s.api.Register(b.lastOK, b.lastIndex, b.failures)
	return b
}

// run writes a backup every interval while this server leads, until ctx
// ends. Temporary files a crash left behind are removed first.
func (b *backups) run(ctx context.Context) {
	for _, f := range atomicfile.Leftovers(b.dir) {
		if strings.HasPrefix(filepath.Base(f), atomicfile.TempPrefix+backupPrefix) {
			os.Remove(f)
		}
	}
	b.log.Info("backups on", "dir", b.dir, "interval", b.every, "retain", b.retain)
	loop.Every(ctx, b.every, func() {
		if !b.leader() {
			return
		}
		if _, err := b.once(); err != nil {
			b.failures.Inc()
			b.log.Error("backup failed", "dir", b.dir, "error", err)
		}
	})
}

// once writes one backup and prunes the oldest beyond retain; it returns
// the file's path.
func (b *backups) once() (string, error) {
	hdr, rc, err := b.open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	path := filepath.Join(b.dir, backupPrefix+hdr.Time.Format(backupTime)+"-"+strconv.FormatUint(hdr.Index, 10)+backupSuffix)
	var sum string
	err = atomicfile.Write(path, 0o600, func(w io.Writer) error {
		var err error
		sum, err = fsm.WriteSnapshotFile(w, hdr, rc)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	b.lastOK.Set(float64(hdr.Time.Unix()))
	b.lastIndex.Set(float64(hdr.Index))
	b.log.Info("backup written", "file", path, "index", hdr.Index, "term", hdr.Term, "state_bytes", hdr.Size, "sha256", sum)
	if err := b.prune(); err != nil {
		b.log.Warn("removing old backups", "dir", b.dir, "error", err)
	}
	return path, nil
}

// backupFiles lists the backups in dir, oldest first: the files named as
// once names them, nothing else.
func backupFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type file struct {
		name  string
		at    time.Time
		index uint64
	}
	var fs []file
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasPrefix(n, backupPrefix) || !strings.HasSuffix(n, backupSuffix) {
			continue
		}
		ts, idx, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(n, backupPrefix), backupSuffix), "-")
		at, err := time.Parse(backupTime, ts)
		i, ierr := strconv.ParseUint(idx, 10, 64)
		if !ok || err != nil || ierr != nil {
			continue
		}
		fs = append(fs, file{n, at, i})
	}
	sort.Slice(fs, func(i, j int) bool {
		if !fs[i].at.Equal(fs[j].at) {
			return fs[i].at.Before(fs[j].at)
		}
		return fs[i].index < fs[j].index
	})
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = filepath.Join(dir, f.name)
	}
	return out, nil
}

// prune removes the oldest backups beyond retain.
func (b *backups) prune() error {
	fs, err := backupFiles(b.dir)
	if err != nil || len(fs) <= b.retain {
		return err
	}
	for _, f := range fs[:len(fs)-b.retain] {
		if err := os.Remove(f); err != nil {
			return err
		}
		b.log.Debug("old backup removed", "file", f)
	}
	return atomicfile.SyncDir(b.dir)
}
