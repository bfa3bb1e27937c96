package fsm

import (
	"iter"

	"github.com/headroom-rtc/headroom/plans"
)

// View is what a reader (the HTTP API, the stream server, the server's
// leader duties) sees of the state, through Reader.Read. What a read may
// rely on:
//   - one consistent state for the whole call of Read's function: no
//     command is applied meanwhile, so every figure it reads belongs to
//     the same Raft index (Index);
//   - nothing it is handed may be changed, nor kept after Read's function
//     returns (the records it points to are the state machine's own; copy
//     what must outlive the call);
//   - the order of the iterators is unspecified (sort what a client sees).
//
// The state's maps are not reachable through a View: a reader looks a
// record up or ranges over them by these methods only.
type View struct{ s *State }

// ViewOf returns the view of s, for code that holds the state itself (its
// tests, a snapshot read offline).
func ViewOf(s *State) View { return View{s} }

// Index is the Raft index of the last command applied.
func (v View) Index() uint64 { return v.s.Index }

// Time is the time of the last command applied (unix ns, the leader's
// clock when it proposed it).
func (v View) Time() int64 { return v.s.Time }

// Tenant is the tenant name, nil when unknown.
func (v View) Tenant(name string) *Tenant { return v.s.Tenants[name] }

// Tenants ranges over the tenants by name.
func (v View) Tenants() iter.Seq2[string, *Tenant] { return rangeMap(v.s.Tenants) }

// NumTenants is the number of tenants.
func (v View) NumTenants() int { return len(v.s.Tenants) }

// Plan is the plan name of the catalogue.
func (v View) Plan(name string) (plans.Plan, bool) {
	p, ok := v.s.Plans[name]
	return p, ok
}

// Plans ranges over the catalogue by name.
func (v View) Plans() iter.Seq2[string, plans.Plan] { return rangeMap(v.s.Plans) }

// NumPlans is the number of plans in the catalogue.
func (v View) NumPlans() int { return len(v.s.Plans) }

// Agent is the record of agent id, nil when unknown.
func (v View) Agent(id string) *AgentRec { return v.s.Agents[id] }

// Agents ranges over the agents' records by id.
func (v View) Agents() iter.Seq2[string, *AgentRec] { return rangeMap(v.s.Agents) }

// NumAgents is the number of agents on record.
func (v View) NumAgents() int { return len(v.s.Agents) }

// Scheduled is the plan change scheduled for tenant, nil when none.
func (v View) Scheduled(tenant string) *Scheduled { return v.s.Scheduled[tenant] }

// ScheduledAll ranges over the scheduled plan changes by tenant.
func (v View) ScheduledAll() iter.Seq2[string, *Scheduled] { return rangeMap(v.s.Scheduled) }

// Audit is the plan changes' audit log, oldest first.
func (v View) Audit() []AuditEntry { return v.s.Audit }

// Tokens ranges over the API tokens by id.
func (v View) Tokens() iter.Seq2[string, *Token] { return rangeMap(v.s.Tokens) }

// Token is the API token id, nil when unknown.
func (v View) Token(id string) *Token { return v.s.Tokens[id] }

// NumTokens is the number of API tokens.
func (v View) NumTokens() int { return len(v.s.Tokens) }

// TokenBySecret is the token whose secret is secret, nil when none.
func (v View) TokenBySecret(secret string) *Token { return v.s.TokenBySecret(secret) }

// ACLBootstrapped reports whether the first management token was made.
func (v View) ACLBootstrapped() bool { return v.s.ACLBootstrapped }

// UsageGrace is the grace for late batches the leader set (0: the
// default); Grace is the one in effect.
func (v View) UsageGrace() int64 { return v.s.UsageGrace }

// Grace is the grace for late batches in effect, ns.
func (v View) Grace() int64 { return v.s.Grace() }

// PeriodClosed reports whether period p is closed.
func (v View) PeriodClosed(p string) bool { return v.s.PeriodClosed(p) }

// Export is the usage export's state, nil while none is configured.
func (v View) Export() *ExportState { return v.s.Export }

// ExportPending and ExportDirty: see State.ExportPending, State.ExportDirty.
func (v View) ExportPending() []ExportRecord { return v.s.ExportPending() }
func (v View) ExportDirty() bool             { return v.s.ExportDirty() }

func rangeMap[V any](m map[string]V) iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for k, x := range m {
			if !yield(k, x) {
				return
			}
		}
	}
}
