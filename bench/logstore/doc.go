// Package logstore measures Raft log stores on this machine: raft-boltdb
// (what cluster/ uses) against hashicorp/raft-wal, for BENCHMARKS.md. It is a
// module of its own so that the store not adopted stays out of headroom's
// dependencies; run it with `make bench-logstore`.
//
//   - BenchmarkAppend: durable appends (StoreLogs, one fsync per call or
//     more) of 1, 16 and 512 entries of 512 bytes, reporting entries/s and
//     the latency of each call at p50 and p99.
//   - TestTornWrite: the last append torn as a power cut tears it (any
//     subset of its 512-byte sectors reached the disk, one of them garbled),
//     then the store reopened: every acknowledged entry must be there and the
//     torn batch wholly there or wholly gone.
//   - TestLatentDamage: bytes of acknowledged entries flipped on disk (the
//     acceptance check's damage), then reopened: is it noticed?
package logstore
