package cluster

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// BenchmarkStartupCheck: what the checks at start (the digest, then the
// structural read of raft.db) cost on a log of 20,000 entries of 4 KiB
// (80 MB), about the most a server keeps (snapshot threshold plus trailing
// logs, 26,624 entries).
func BenchmarkStartupCheck(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "raft", "raft.db")
	st, err := openStores(dir, DefaultLockTimeout, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 4096)
	for i := uint64(1); i <= 20000; i += 500 {
		batch := make([]*raft.Log, 500)
		for j := range batch {
			batch[j] = &raft.Log{Index: i + uint64(j), Term: 1, Type: raft.LogCommand, Data: data}
		}
		if err := st.db.StoreLogs(batch); err != nil {
			b.Fatal(err)
		}
	}
	st.close(nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := checkDigest(path); err != nil {
			b.Fatal(err)
		}
		if _, last, err := checkBoltStore(path, DefaultLockTimeout); err != nil || last != 20000 {
			b.Fatal(last, err)
		}
	}
}
