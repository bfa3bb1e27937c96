// package aggregator is the server side of headroom: the Server that cmd/
// constructs, wiring the rooms below it.
//
//	fsm/     the replicated state machine: commands, Apply, snapshots, the
//	         state and its reads; deterministic, no I/O (imports wire, plans)
//	stream/  the agent stream server: connections, proposals, liveness
//	api/     the HTTP API: handlers, ACL gate, OpenAPI, events, alerts,
//	         metrics, history, the usage export
//	web/     the dashboard's embedded page and files
//
// Contract:
//   - This package owns the process's resources: the listeners, the Raft
//     node (cluster), the goroutines of the parts and their order at start
//     and stop (New, Close), and the leader's own duties (the barrier of a
//     new term, seeding --plans, the usage grace, backups).
//   - It may import every room above, cluster, wire and plans. No room
//     imports this package; stream and api import fsm, api imports web,
//     fsm imports nothing of ours but wire and plans; nothing under
//     aggregator/ imports agent/ or cmd/ (deps_test.go keeps it so).
//   - Concurrency: New starts everything and returns a running Server;
//     its methods are safe for concurrent use; Close stops the listeners,
//     then the parts, then Raft.
package aggregator
