// package fsm is the aggregator's replicated state machine: the commands of
// the Raft log (command.go), Apply, snapshots and restore (fsm.go), the
// state they build (state.go: tenants, agents, plans, usage, grants, users,
// tokens, the export cursor) and the reads of it the servers answer with
// (views.go, the tenant index).
//
// Contract:
//   - Apply is deterministic: every replica that applies the same entries
//     holds the same state. All time comes from the entry (the leader's
//     stamp); the package reads no clock, starts no goroutine, opens no
//     socket or file and logs nothing (what it refuses it hands to
//     FSM.OnRefused).
//   - It imports only wire and plans of this module (aggregator/deps_test.go
//     keeps it so); the stream server, the HTTP API and the server that wires
//     them import it, never the other way round.
//   - Concurrency: Raft calls Apply, Snapshot and Restore one at a time;
//     they take the write lock (Snapshot the read lock). Readers go through
//     FSM.Read, which runs a function on a View of a consistent state
//     under the read lock (lookups and iterators, not the maps): the
//     function must not change what it reads, nor keep references into it
//     after it returns. The hooks (OnChange, OnAudit, OnRefused,
//     TimeApply) are set before the FSM is handed to Raft and are called
//     with no lock held; they must not block.
//   - The encoding of the state (snapshots) and of the commands (the log)
//     is a format other servers read: add fields with omitempty and command
//     kinds at the end; never renumber.
package fsm
