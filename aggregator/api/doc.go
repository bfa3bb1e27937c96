// package api is the aggregator's HTTP API: the handlers (http*.go, ops.go),
// the tenant list, the ACL gate (acl.go), the OpenAPI document, the event
// streams (events.go), alert delivery (alerts.go), /metrics, the dashboard's
// history and the usage export to a CloudEvents receiver (export_send.go).
//
// Contract:
//   - It reads the state only through fsm.Reader and its fsm.View (one
//     consistent state per call, never changed, nothing kept after it
//     returns) and the
//     read API of aggregator/fsm; it changes the state only by committing
//     commands through Raft, stamped by the entry clock it is given.
//   - It may import wire, plans, cluster, internal packages, the state
//     machine and the dashboard (aggregator/web); never the stream server
//     (it sees it through the small streamsView interface) nor the server
//     that wires it (aggregator/deps_test.go keeps it so).
//   - Concurrency: New builds it before Raft opens (its metrics and events
//     are on the state machine's hooks from the first entry), Attach once
//     Raft is open; Run owns the goroutines of alerts, event pacing and the
//     export. Handlers and the hook callbacks (TenantsChanged) are safe for
//     concurrent use; the hooks do not block.
package api
