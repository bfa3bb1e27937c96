// package stream is the aggregator's agent stream server: it accepts the
// agents' wire streams (stream.go), checks what they send, proposes their
// messages to the Raft log grouped into entries (propose.go), answers each
// with its result, pushes the tenants' state back as it changes, and on the
// leader expires agents that fell silent (liveness.go).
//
// Contract:
//   - It owns the wire listener's connections and the order of each agent's
//     messages (dedup is the state machine's, by agent, epoch and seq). It
//     reads the state only through fsm.Reader and changes it only through
//     the log.
//   - It may import wire, plans, internal/loop and the state machine
//     (aggregator/fsm) of this module; never the HTTP API or the server
//     that wires it (aggregator/deps_test.go keeps it so).
//   - Concurrency: Run owns its goroutines (the accept loop, one reader and
//     one writer per stream, the proposer, liveness) and returns once they
//     have stopped. TenantsChanged, Agents, Unacked and Traffic are safe to
//     call from any goroutine and do not block; Clock.Stamp likewise.
package stream
