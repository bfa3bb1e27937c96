package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWrite: a write that succeeds replaces the file whole with the mode
// asked; one that fails leaves the old file as it was and no temporary file.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := Write(path, 0o640, func(w io.Writer) error { _, err := io.WriteString(w, "one"); return err }); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if err != nil || string(b) != "one" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after a write: %q %v mode %v", b, err, fi.Mode())
	}
	boom := errors.New("boom")
	err = Write(path, 0o600, func(w io.Writer) error {
		io.WriteString(w, "half of two")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("a failed write returned %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" {
		t.Fatalf("a failed write changed the file to %q", b)
	}
	if left := Leftovers(dir); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	os.WriteFile(filepath.Join(dir, TempPrefix+"f.123"), nil, 0o600) // as a crash leaves one
	if left := Leftovers(dir); len(left) != 1 {
		t.Fatalf("leftovers %v, want the one a crash left", left)
	}
}
