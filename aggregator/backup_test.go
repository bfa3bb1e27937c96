package aggregator

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/internal/atomicfile"
)

func planOf(t *testing.T, s *Server, tenant string) string {
	t.Helper()
	var tj fsm.TenantJSON
	if code := get(t, s, "/v1/tenants/"+tenant, &tj); code != http.StatusOK {
		t.Fatalf("GET tenant %s: %d", tenant, code)
	}
	return tj.Plan
}

func setPlan(t *testing.T, s *Server, tenant, plan string) {
	t.Helper()
	if rec := do(t, s, "PUT", "/v1/tenants/"+tenant+"/plan", "", `{"plan":"`+plan+`","at":"now"}`); rec.Code != http.StatusOK {
		t.Fatalf("set-plan %s %s: %d %s", tenant, plan, rec.Code, rec.Body)
	}
}

// TestSnapshotFile: GET /v1/snapshot writes a file inspect reads (index,
// term, configuration, tenants, plans); a flipped byte anywhere, a truncated
// file, are corrupt; a legacy file (the state alone) still reads; restore
// refuses a damaged file and changes nothing, and takes a good one.
func TestSnapshotFile(t *testing.T) {
	s := newTestServer(t, nil)
	setPlan(t, s, "acme", "starter")
	rec := do(t, s, "GET", "/v1/snapshot", "", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /v1/snapshot: %d %s", rec.Code, rec.Body)
	}
	good := rec.Body.Bytes()
	if cl := rec.Header().Get("Content-Length"); cl != "" && cl != itoa(len(good)) {
		t.Fatalf("Content-Length %s, body %d bytes", cl, len(good))
	}
	info, err := fsm.InspectSnapshot(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if info.Index == 0 || info.Term == 0 || info.Checksum != "ok" || len(info.Configuration) != 1 || info.Counts.Tenants != 1 ||
		len(info.Tenants) != 1 || info.Tenants[0].Tenant != "acme" || info.Tenants[0].Plan != "starter" || info.Counts.Plans != len(info.Plans) {
		t.Fatalf("inspect: %+v", info)
	}
	if hdr := rec.Header().Get("X-Headroom-Index"); hdr != itoa(int(info.Index)) {
		t.Fatalf("X-Headroom-Index %s, the file says %d", hdr, info.Index)
	}

	damaged := map[string][]byte{"truncated": good[:len(good)-40], "empty": nil}
	for _, at := range []int{5, len(fsm.SnapshotMagic) + 10, len(good) / 2, len(good) - 10} {
		b := bytes.Clone(good)
		b[at] ^= 0x01
		damaged["byte "+itoa(at)] = b
	}
	for name, b := range damaged {
		info, err := fsm.InspectSnapshot(bytes.NewReader(b))
		if !errors.Is(err, fsm.ErrSnapshotCorrupt) {
			t.Fatalf("%s: inspect says %v (%+v)", name, err, info)
		}
	}
	if _, err := fsm.InspectSnapshot(bytes.NewReader(damaged["byte "+itoa(len(good)/2)])); !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("a flipped byte in the state: %v", err)
	}

	// A legacy file: the state machine's snapshot alone.
	snap, err := s.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink fsm.MemSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	legacy := sink.Bytes()
	if info, err := fsm.InspectSnapshot(bytes.NewReader(legacy)); err != nil || info.Checksum != "none" || info.Counts.Tenants != 1 {
		t.Fatalf("legacy file: %+v %v", info, err)
	}

	// Restore: a damaged file is refused, nothing changed.
	setPlan(t, s, "acme", "growth")
	for name, b := range damaged {
		if rec := do(t, s, "PUT", "/v1/snapshot", "", string(b)); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "nothing changed") {
			t.Fatalf("restore of a %s file: %d %s", name, rec.Code, rec.Body)
		}
		if p := planOf(t, s, "acme"); p != "growth" {
			t.Fatalf("a refused restore (%s) changed acme's plan to %s", name, p)
		}
	}
	if rec := do(t, s, "PUT", "/v1/snapshot", "", string(good)); rec.Code != http.StatusOK {
		t.Fatalf("restore of the good file: %d %s", rec.Code, rec.Body)
	}
	if p := planOf(t, s, "acme"); p != "starter" {
		t.Fatalf("after restoring the file acme is on %s, want starter", p)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestBackupsRetention: each backup is a snapshot file named by time and
// index that passes inspect; the directory keeps the newest retain, and
// files not named as backups are left alone.
func TestBackupsRetention(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	dir := filepath.Join(t.TempDir(), "backups")
	s := newTestServer(t, clock, func(c *Config) { c.BackupInterval, c.BackupDir, c.BackupRetain = time.Hour, dir, 3 })
	os.WriteFile(filepath.Join(dir, "operator-notes.txt"), []byte("keep me"), 0o600)
	var written []string
	for i := 0; i < 5; i++ {
		setPlan(t, s, "t"+itoa(i), "payg")
		clock.Set(clock.Now().Add(time.Minute))
		p, err := s.backup.once()
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, p)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		info, err := fsm.InspectSnapshot(f)
		f.Close()
		if err != nil || info.Counts.Tenants != i+1 {
			t.Fatalf("backup %s: %+v %v", p, info, err)
		}
		want := "headroom-" + clock.Now().UTC().Format(backupTime) + "-" + itoa(int(info.Index)) + ".snap"
		if filepath.Base(p) != want {
			t.Fatalf("backup named %s, want %s", filepath.Base(p), want)
		}
	}
	fs, err := backupFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(fs, ",") != strings.Join(written[2:], ",") {
		t.Fatalf("backups kept %v, want the newest three %v", fs, written[2:])
	}
	if _, err := os.Stat(filepath.Join(dir, "operator-notes.txt")); err != nil {
		t.Fatal("retention removed a file that is not a backup")
	}
	if left := len(atomicfile.Leftovers(dir)); left != 0 {
		t.Fatalf("%d temporary files left", left)
	}
}

// TestSnapshotAfterConfigurationChange: a snapshot asked for when the last
// entry is a configuration change (a server joined, nothing written since)
// is taken all the same.
func TestSnapshotAfterConfigurationChange(t *testing.T) {
	s := newTestServer(t, nil)
	setPlan(t, s, "acme", "starter")
	if err := s.node.Raft.AddNonvoter("joiner", raft.ServerAddress(freePort(t)), 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if rec := do(t, s, "GET", "/v1/snapshot", "", ""); rec.Code != http.StatusOK {
		t.Fatalf("GET /v1/snapshot after a configuration change: %d %s", rec.Code, rec.Body)
	}
}
