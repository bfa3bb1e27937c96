// Package cluster runs an aggregator server's share of the cluster: the Raft
// node that replicates the state machine (raft-boltdb log and stable store,
// raft's file snapshots, TCP transport), gossip membership
// (hashicorp/memberlist), and on the leader the membership reconcile loop
// and hashicorp/raft-autopilot. It knows nothing of what the state machine
// holds.
//
// # Membership
//
// Every server has a node id, its Raft server id and its memberlist name.
// Its gossip metadata carries its advertised wire, Raft and HTTP addresses
// (Meta). Servers find each other through Config.Join, retried in the
// background with exponential backoff, and through the members recorded in
// the data directory (members.json), so a restarted server rejoins without
// Join. Config.BootstrapExpect forms a new cluster once that many servers
// with the same setting see each other alive: the one with the lowest id
// among them bootstraps Raft with all of them as voters, after checking
// over HTTP that none is in a cluster already, and the others wait for the
// leader. Config.Bootstrap still forms a single-server one.
//
// Raft membership is the leader's job: it adds each alive gossip member
// missing from the Raft configuration as a non-voter, autopilot promotes it
// to voter once it has kept up for ServerStabilizationTime, and autopilot
// removes servers that left, and servers that stayed failed for
// Config.DeadServerReap, never shrinking the voters below BootstrapExpect
// (MinQuorum). Leave removes a server at once; Shutdown (SIGTERM) keeps it
// a voter so a rolling restart changes no configuration.
//
// Servers talk to each other over their HTTP APIs for three things, so the
// aggregator must mount StatsHandler at StatsPath and RemovePeerHandler at
// RemovePeerPath: the leader's autopilot reads every server's Raft stats
// (a server it cannot read is never promoted), a server about to bootstrap
// checks its peers hold no Raft state, and Leave asks the leader to remove
// the leaving server.
//
// # TLS
//
// With Config.TLS, Raft runs over a TLS stream layer (tls_transport.go) and
// this server calls the others' HTTP APIs over HTTPS. Clients verify that
// a server's certificate names TLS.Client.ServerName, whatever address
// they dialled. Under mutual TLS (the server configuration requires client
// certificates) the Raft listener, StatsHandler, RemovePeerHandler and
// KeyringLocalHandler further require the peer's certificate to name that
// server name: an agent's or operator's certificate from the same CA can
// neither replicate nor steer membership.
//
// # Gossip encryption
//
// Gossip is encrypted when a server starts with Config.GossipKey or finds a
// keyring in its data directory (KeyringFile, mode 0600: the keys in
// base64, the primary first). Memberlist decrypts with any key of the
// keyring and encrypts with the primary. The file is written on first
// start from GossipKey and after every change, and read at every start, so
// it wins over GossipKey from then on (a GossipKey it lacks is only warned
// about).
//
// Memberlist keeps the keyring in each process's memory only, so a change
// is carried to every server over HTTP: KeyringHandler (mounted at
// KeyringPath, for the operator) lists or changes the keyring of every
// server this node knows — alive in gossip, or in the Raft configuration
// even when gossip sees it failed (a server whose keys fell behind is
// reached that way) — by calling each one's KeyringLocalHandler
// (KeyringLocalPath; servers only under mutual TLS). A rotation without
// downtime is install (every server can decrypt the new key), use (every
// server encrypts with it), remove (the old key goes). Use is refused,
// changing nothing, unless every server answers and holds the key; remove
// is refused while any server uses the key as its primary. A server that
// was down during a rotation is brought up to date by running the same
// commands again once it is back (install and use are idempotent).
//
// # Tuning for a LAN
//
// Raft (Tuned): the servers of one cluster sit on one LAN, with round trips
// well under a millisecond, so raft's defaults, sized for WANs, are cut:
//
//   - HeartbeatTimeout and ElectionTimeout 300 ms (default 1 s), and
//     LeaderLeaseTimeout 250 ms: a dead leader is replaced in well under a
//     second and a leader cut off from the quorum steps down within 250 ms,
//     which bounds how long agents and writes wait on a failover; 300 ms
//     still rides out a GC pause or a slow fsync. Pre-vote keeps a server
//     that was away from disrupting a healthy leader.
//   - CommitTimeout 5 ms (default 50 ms): an idle leader tells followers the
//     commit index quickly, so reads served by any server lag the leader by
//     milliseconds.
//   - MaxAppendEntries 512 (default 64) and BatchApplyCh: agents ship a batch
//     every 100 ms each, so entries arrive in bursts; the leader takes up to
//     512 queued applies at once, writes them with one fsync and replicates
//     them in one RPC (entries are a few KB, so an RPC stays at a few MB).
//   - SnapshotInterval 30 s with SnapshotThreshold 16,384: the state (plans,
//     tenants, per-agent contributions, usage) is small, so snapshots are
//     cheap and frequent, keeping a restart's log replay short.
//   - TrailingLogs 10,240 entries kept behind a snapshot: a follower away for
//     a restart (ten seconds or so at a thousand entries a second) catches up
//     from the log; one that fell further behind is sent the (small)
//     snapshot.
//
// Autopilot: ServerStabilizationTime 2 s (Consul's default of 10 s is for
// busier, wider clusters), LastContactThreshold 1 s (about thirty missed
// heartbeats), MaxTrailingLogs 500 (a non-voter must be within 500 entries of
// the leader, a fraction of a second of traffic, before it may vote, so that
// promoting it does not stall commits), state updates every second and
// promotions or removals every 2 s. DeadServerReap defaults to 5 minutes:
// longer than a reboot or a rolling upgrade, so those never change the
// configuration, but a server that is gone is reaped the same shift.
//
// Memberlist uses its LAN defaults: a probe a second with a 500 ms timeout,
// gossip every 200 ms to three nodes, a suspected server declared failed
// after 4 s once the others confirm the suspicion (24 s at worst), full
// state sync every 30 s, and dead nodes forgotten after 30 s (which is why
// the package keeps its own record of every Raft server).
// Gossip only decides membership; Raft's own, faster, heartbeats decide
// leadership. Config.Gossip adjusts these, e.g. to shorten them in tests.
package cluster
